"""Egress allow-lists and the packet filter Docker's published ports need, as pure renderers.

Two things UFW alone cannot do on a Docker host:

- **Filter published ports.** Docker DNATs a published port before UFW's INPUT chain sees the
  packet, so a UFW rule does not restrict who reaches a container. Docker sends that traffic
  through the ``DOCKER-USER`` chain first; ``render_docker_user_rules`` puts the same sources
  the UFW rules allow there, matched on the original (pre-DNAT) address and port.
- **Allow-list egress by name.** SaaS endpoints (SendGrid, Remita, Highlight, PostHog) have no
  stable addresses, so HTTPS egress goes through a forward proxy on the edge node
  (``render_squid_conf``) that allows each service only its own domains: every service gets
  its own proxy port, and the port is what the ACL matches. Non-HTTP egress to fixed addresses
  (Oracle ECRS on 1521) is a direct route; everything else leaving a container is dropped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from components.hostsetup import OutboundRule
from components.tiers import SSH_PORT, InboundRule

PROXY_BASE_PORT = 3128
HOST_ROUTE = "hosts"
"""The proxy port for the nodes' own traffic: apt, image pulls, backups to R2."""

_DOMAIN = re.compile(r"^\.?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,}$")


@dataclass(frozen=True)
class ProxyRoute:
    """HTTPS destinations a set of clients may reach through the proxy."""

    name: str
    domains: tuple[str, ...]
    clients: tuple[str, ...]
    """Service names, or ``hosts`` for the nodes themselves."""


@dataclass(frozen=True)
class DirectRoute:
    """A non-HTTP destination at fixed addresses (the proxy cannot carry it)."""

    name: str
    cidrs: tuple[str, ...]
    port: int
    clients: tuple[str, ...]


@dataclass(frozen=True)
class OwnNetwork:
    """A container alone on a Docker network of its own, so that its ``allowed`` flows match the
    network's subnet rather than one fixed address: its replacement (another dynamic address in
    the same subnet) is admitted while the old one still runs, so it can be replaced
    create-before-delete. ``peers`` are the containers that must reach it (the ingress nginx,
    Prometheus): they join the network too, and it stays their second network (Docker routes a
    multi-homed container's egress through its first network by name, the host's own)."""

    container: str
    bridge: str
    """Interface name of its bridge (2-15 characters), which the packet filter matches."""
    subnet: str
    """A small private subnet (a /28: 13 dynamic addresses) outside the host network's."""
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class EgressLock:
    """Whose traffic may leave a node. Its containers may reach only the internal network, their
    own bridge, the ``direct`` routes, and (for the ``exempt`` containers, at fixed addresses)
    anywhere. With ``proxy_url`` the host is locked too: it reaches the internal network, the
    resolvers and NTP, and the web through the proxy; without it (the edge node, which runs the
    proxy) the host's own egress stays open."""

    bridge: str
    """Interface name of the host's Docker bridge (at most 15 characters)."""
    internal_cidr: str
    proxy_url: str | None = None
    resolvers: tuple[str, ...] = ()
    direct: tuple[DirectRoute, ...] = ()
    subnet: str | None = None
    """Fixed subnet of the bridge; its lower half is for ``exempt`` addresses, Docker assigns
    the upper half."""
    exempt: tuple[tuple[str, str], ...] = ()
    """(container, address) pairs allowed direct egress: the proxy itself, Alertmanager."""
    allowed: tuple[tuple[str, str, int], ...] = ()
    """(container, destination CIDR, TCP port) flows one container may open: a workload's own
    allow-list (``workload_lock``). Each container here has a fixed address in ``exempt`` or
    ``pinned``, or a network of its own in ``own_networks``."""
    pinned: tuple[tuple[str, str], ...] = ()
    """(container, address) pairs with a fixed address for their ``allowed`` flows only."""
    internal_peers: tuple[tuple[str, int | tuple[int, int]], ...] | None = None
    """(address or CIDR, TCP port or (first, last) range) the containers may open on the internal
    network: what the peers' tier-model rules admit from this host's private address (its
    containers leave masqueraded to it). None: the whole internal network, every port."""
    own_networks: tuple[OwnNetwork, ...] = ()
    """Containers on a network of their own, whose ``allowed`` flows match its subnet."""

    def __post_init__(self):
        for bridge in (self.bridge, *(n.bridge for n in self.own_networks)):
            if not re.match(r"^[a-z][a-z0-9-]{1,14}$", bridge):
                raise ValueError(f"bridge {bridge!r}: 2-15 characters, a-z 0-9 -")
        self._check_own_networks()
        if self.proxy_url and not self.resolvers:
            raise ValueError("an egress-locked host needs its DNS resolvers")
        fixed = [*self.exempt, *self.pinned]
        if fixed:
            if not self.subnet:
                raise ValueError("exempt containers need a fixed subnet for their addresses")
            static = self.static_range()
            outside = [f"{c} {a}" for c, a in fixed if ipaddress.ip_address(a) not in static]
            if outside:
                raise ValueError(f"exempt addresses outside {static}: {outside}")
            addresses = [a for _, a in fixed]
            if len(set(addresses)) != len(addresses) or len({c for c, _ in fixed}) != len(fixed):
                raise ValueError(f"each fixed container and address once: {fixed}")
        unpinned = sorted({c for c, _, _ in self.allowed} - {c for c, _ in fixed}
                          - {n.container for n in self.own_networks})
        if unpinned:
            raise ValueError(f"allowed flows of containers without a fixed address or network of their own: {unpinned}")

    def _check_own_networks(self) -> None:
        """Each own network once per container and bridge, private, overlapping no other."""
        own = self.own_networks
        if not own:
            return
        if len({n.container for n in own}) != len(own) or len({n.bridge for n in own} | {self.bridge}) != len(own) + 1:
            raise ValueError(f"each own network once per container and bridge: {own}")
        pinned = {n.container for n in own} & {c for c, _ in [*self.exempt, *self.pinned]}
        if pinned:
            raise ValueError(f"a container on a network of its own has no fixed address: {sorted(pinned)}")
        subnets = [ipaddress.ip_network(n.subnet) for n in own] + (
            [ipaddress.ip_network(self.subnet)] if self.subnet else [])
        for i, a in enumerate(subnets):
            if not a.is_private or any(a.overlaps(b) for b in subnets[i + 1:]):
                raise ValueError(f"own network subnet {a}: private, and overlapping no other of the host")

    @property
    def locks_host(self) -> bool:
        return self.proxy_url is not None

    def static_range(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return next(ipaddress.ip_network(self.subnet).subnets())

    def dynamic_range(self) -> str:
        lower, upper = ipaddress.ip_network(self.subnet).subnets()
        return str(upper)

    def static_addresses(self) -> dict[str, str]:
        return dict([*self.exempt, *self.pinned])

    def allowed_sources(self) -> list[tuple[str, str, int]]:
        """``allowed`` as (source address or subnet, destination CIDR, port), for the DOCKER-USER
        rules: a container on a network of its own is its whole subnet."""
        addresses = {**self.static_addresses(), **{n.container: n.subnet for n in self.own_networks}}
        return [(addresses[c], cidr, port) for c, cidr, port in self.allowed]

    def own_bridges(self) -> list[tuple[str, str]]:
        """(bridge, subnet) of each network of its own, for the DOCKER-USER rules."""
        return [(n.bridge, n.subnet) for n in self.own_networks]

    def outbound(self) -> list[OutboundRule]:
        """The locked host's own allowed flows: the internal network, its own containers' own
        addresses (out on its bridge: without it the host could not open a connection to one of
        its containers, which the tier model allows, a container's address answering its bridge
        and its host; found by the rehearsal's matrix), the resolvers on 53 and NTP. Nothing
        leaves the host through its bridge: the containers' own egress is DOCKER-USER's."""
        rules = [OutboundRule(_check_cidr(self.internal_cidr), reason="internal network"),
                 OutboundRule("any", interface=self.bridge, reason="own containers")]
        for resolver in self.resolvers:
            rules += [OutboundRule(_check_cidr(resolver), 53, proto, "dns") for proto in ("udp", "tcp")]
        rules.append(OutboundRule("any", 123, "udp", "ntp"))
        return rules


def workload_lock(*, bridge: str, subnet: str, internal_cidr: str | None = None,
                  exempt: Sequence[str] = (), allowed: Sequence[tuple[str, str, int]] = (),
                  internal_peers: Sequence[tuple[str, int | tuple[int, int]]] = (),
                  own_networks: Sequence[OwnNetwork] = ()) -> EgressLock:
    """The egress lock of a single-host product (a droplet, one VPS): its containers reach their
    own bridge and nothing else, except ``exempt`` containers (edge and mgmt containers that
    talk to the internet: Alertmanager, the blackbox prober) and each container's own
    ``allowed`` (container, CIDR, port) flows; the containers named get fixed addresses in the
    lower half of ``subnet``, the exempt ones first, in the order given, from its tenth address
    on. With ``internal_cidr`` only ``internal_peers`` are reachable there (by every container).
    A container of ``own_networks`` gets no fixed address: its flows match its network's subnet."""
    base = ipaddress.ip_network(subnet).network_address  # arithmetic: never list a range's hosts
    alone = {n.container for n in own_networks}
    named = list(dict.fromkeys([*exempt, *(c for c, _, _ in allowed if c not in exempt and c not in alone)]))
    addresses = {c: str(base + 10 + i) for i, c in enumerate(named)}
    return EgressLock(bridge=bridge, internal_cidr=internal_cidr or "", subnet=subnet,
                      exempt=tuple((c, addresses[c]) for c in exempt),
                      pinned=tuple((c, addresses[c]) for c in named if c not in exempt),
                      allowed=tuple(allowed), internal_peers=tuple(internal_peers),
                      own_networks=tuple(own_networks))


def check_domains(domains: Iterable[str]) -> None:
    seen: set[str] = set()
    for domain in domains:
        if not _DOMAIN.match(domain):
            raise ValueError(f"{domain!r} is not a domain (a leading dot allows subdomains)")
        bare = domain.lstrip(".")
        if bare in seen:
            raise ValueError(f"{bare} is listed twice (with and without a leading dot?)")
        seen.add(bare)


def proxy_ports(routes: Sequence[ProxyRoute], base: int = PROXY_BASE_PORT) -> dict[str, int]:
    """One proxy port per client, stable under reordering: sorted by name, ``hosts`` first."""
    clients = sorted({c for r in routes for c in r.clients}, key=lambda c: (c != HOST_ROUTE, c))
    return {client: base + i for i, client in enumerate(clients)}


def client_domains(routes: Sequence[ProxyRoute]) -> dict[str, list[str]]:
    by_client: dict[str, list[str]] = {}
    for route in routes:
        for client in route.clients:
            by_client.setdefault(client, [])
            by_client[client] += [d for d in route.domains if d not in by_client[client]]
    for domains in by_client.values():
        check_domains(domains)
    return by_client


def render_squid_conf(routes: Sequence[ProxyRoute], ports: Mapping[str, int], *,
                      allowed_sources: Sequence[str], listen_address: str = "") -> str:
    """A forward proxy that lets each client port reach only its clients' domains, on 80/443,
    and only from ``allowed_sources``; nothing is cached. It listens on every interface of its
    container unless ``listen_address`` is given."""
    if not allowed_sources:
        raise ValueError("the proxy needs the networks allowed to use it")
    domains = client_domains(routes)
    bind = f"{listen_address}:" if listen_address else ""
    listen = [f"http_port {bind}{port} name={_label(client)}"
              for client, port in sorted(ports.items(), key=lambda kv: kv[1])]
    lines = [
        "# Managed by the platform program (components/egress.py): one port per client, each",
        "# allowed only its own destinations. Everything else is denied.",
        *listen,
        f"acl internal src {' '.join(allowed_sources)}",
        "acl web_ports port 80 443",
        "acl tls_ports port 443",
        "acl CONNECT method CONNECT",
        "http_access deny !internal",
        "http_access deny !web_ports",
        "http_access deny CONNECT !tls_ports",
    ]
    for client, port in sorted(ports.items(), key=lambda kv: kv[1]):
        if client not in domains:
            raise ValueError(f"proxy port for {client} that has no route")
        label = _label(client)
        lines += [f"acl via_{label} myportname {label}",
                  f"acl to_{label} dstdomain {' '.join(domains[client])}",
                  f"http_access allow via_{label} to_{label}"]
    lines += [
        "http_access deny all",
        "cache deny all",
        "via off",
        "forwarded_for delete",
        # squid opens its access log after switching to its cache_effective_user (proxy), who
        # cannot open the container's stdout (a pipe owned by root): "FATAL: Cannot open
        # '/dev/stdout' for writing" (seen on the rehearsal). The image's entrypoint follows
        # the files under /var/log/squid to stdout instead.
        "access_log stdio:/var/log/squid/access.log",
        "cache_log /dev/stderr",
        "logfile_rotate 0",
        "shutdown_lifetime 3 seconds",
    ]
    return "\n".join(lines) + "\n"


def _label(client: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", client)


def _check_cidr(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=False))


DOCKER_BRIDGES = ("docker0", "br-+")
"""Interfaces of the bridges Docker creates by itself: the default bridge and every user-defined
network without a fixed name (``br-<network id>``; ``+`` is iptables' interface wildcard)."""
BRIDGE_GUARD_CHAIN = "PLATFORM-BRIDGE-IN"
"""Where ``render_docker_user_rules`` sends every new connection that enters a container bridge."""


def render_docker_user_rules(*, published: Sequence[tuple[str, int]], rules: Sequence[InboundRule],
                             bridge: str | None = None, internal_cidr: str | None = None,
                             direct: Sequence[DirectRoute] = (), exempt_sources: Sequence[str] = (),
                             container_bridges: Sequence[str] = DOCKER_BRIDGES,
                             internal_peers: Sequence[tuple[str, int | tuple[int, int]]] | None = None,
                             allowed: Sequence[tuple[str, str, int]] = (),
                             ssh_ports: Sequence[int] = (SSH_PORT,),
                             own_networks: Sequence[tuple[str, str]] = ()) -> str:
    """``iptables-restore --noflush`` input that rewrites the ``DOCKER-USER`` chain.

    ``published`` are the (address, port) pairs containers publish on; each admits only the
    sources of the inbound rules for that port. Raises ``ValueError`` for a published pair that
    no rule admits anyone to.

    The bridge guard: a new connection may enter a container bridge (``container_bridges``,
    Docker's own by default, plus ``bridge``) only from a container bridge, or when Docker
    DNATed it for a port published on an address other than loopback (the rules above have
    already dropped the sources that address does not admit). Docker's own ``DOCKER`` chain
    accepts any packet addressed to a container's port, so without the guard a neighbour on
    the segment that routes the container subnet via the host reaches ``172.x.y.z:5432``
    directly, whatever the published address admits (Docker 28 added the same protection in
    its ``raw`` table; Debian 12's docker.io 20.10 has none). Connections the host itself opens
    (``OUTPUT``, loopback publishes) never cross ``FORWARD`` and are untouched.

    No container opens SSH anywhere: a new TCP connection from any container bridge to one of
    ``ssh_ports`` (default 22) is dropped first. Its traffic leaves masqueraded to the host's
    address, which the internal nodes admit for SSH when the host is the bastion, so without
    this rule a container on the bastion reached every node's sshd (found by the staging
    rehearsal's reachability matrix).

    With ``bridge``, traffic from the containers may go only to their own bridge, to the
    internal network (``internal_cidr``; only the ``internal_peers`` pairs, when given), to the
    ``direct`` routes, from a source address to its ``allowed`` (source, CIDR, port) flows, and
    from ``exempt_sources`` anywhere but the internal network: everything else they send is
    dropped. Without ``internal_cidr`` (a single host) nothing is internal. ``own_networks``
    ((bridge, subnet) of each container on a network of its own, ``OwnNetwork``) get the same
    lock; an ``allowed`` flow whose source is such a subnet is admitted on its bridge only (a
    peer binding an address of it cannot send it through the host's bridge), and traffic between
    two of the host's bridges is dropped (the peers that reach such a container join its network).

    The chains only filter forwarded traffic: no rule here can cut the host's own SSH.
    """
    if own_networks and not bridge:
        raise ValueError("networks of their own need the host's egress lock (its bridge)")
    own = dict(own_networks)
    locked = [bridge, *own] if bridge else []
    bridges = list(dict.fromkeys([*container_bridges, *locked]))
    if not bridges:
        raise ValueError("the bridge guard needs the container bridges' interface names")
    out = ["*filter", ":DOCKER-USER - [0:0]", f":{BRIDGE_GUARD_CHAIN} - [0:0]",
           "-F DOCKER-USER", f"-F {BRIDGE_GUARD_CHAIN}",
           "-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"]
    out += [f"-A DOCKER-USER -i {b} -p tcp --dport {int(p)} -j DROP"
            for b in bridges for p in dict.fromkeys(ssh_ports)]
    for address, port in published:
        sources = sorted({c for r in rules if _covers(r, port) for c in r.cidrs})
        if not sources:
            raise ValueError(f"{address}:{port} is published but no inbound rule admits anyone to it")
        match = f"-p tcp -m conntrack --ctorigdst {address} --ctorigdstport {port}"
        out += [f"-A DOCKER-USER {match} -s {_check_cidr(s)} -j RETURN"
                for s in sources if s not in ("0.0.0.0/0", "::/0")]
        if not set(sources) & {"0.0.0.0/0", "::/0"}:
            out.append(f"-A DOCKER-USER {match} -j DROP")
    out += [f"-A DOCKER-USER -o {b} -m conntrack --ctstate NEW -j {BRIDGE_GUARD_CHAIN}" for b in bridges]
    out += [f"-A {BRIDGE_GUARD_CHAIN} -i {b} -j RETURN" for b in bridges]
    out += [f"-A {BRIDGE_GUARD_CHAIN} -m conntrack --ctstate DNAT ! --ctorigdst 127.0.0.0/8 -j RETURN",
            f"-A {BRIDGE_GUARD_CHAIN} -j DROP"]
    if bridge and internal_cidr is None:
        raise ValueError("an egress lock needs the internal network (empty: a single host has none)")
    internal = _check_cidr(internal_cidr) if internal_cidr else None
    for b in locked:
        out.append(f"-A DOCKER-USER -i {b} -o {b} -j RETURN")
        if internal and internal_peers is None:
            out.append(f"-A DOCKER-USER -i {b} -d {internal} -j RETURN")
        else:
            out += [f"-A DOCKER-USER -i {b} -p tcp -d {_check_cidr(peer)} --dport {_port_match(port)} -j RETURN"
                    for peer, port in dict.fromkeys(internal_peers or ())]
        for route in direct:
            out += [f"-A DOCKER-USER -i {b} -p tcp -d {_check_cidr(c)} --dport {route.port} -j RETURN"
                    for c in route.cidrs]
        out += [f"-A DOCKER-USER -i {b} -p tcp -s {_check_cidr(source)} -d {_check_cidr(cidr)} "
                f"--dport {_port_match(port)} -j RETURN" for source, cidr, port in allowed
                if (source == own[b] if b in own else source not in own.values())]
        # Before the exemptions: the proxy and Alertmanager reach the internet, not the nodes.
        if internal:
            out.append(f"-A DOCKER-USER -i {b} -d {internal} -j DROP")
        if b == bridge:  # the exempt addresses are on the host's own bridge
            out += [f"-A DOCKER-USER -i {b} -s {_check_cidr(a)} -j RETURN" for a in exempt_sources]
        out.append(f"-A DOCKER-USER -i {b} -j DROP")
    out += ["-A DOCKER-USER -j RETURN", "COMMIT"]
    return "\n".join(out) + "\n"


def _port_match(port: int | tuple[int, int]) -> str:
    if isinstance(port, tuple):
        return f"{int(port[0])}:{int(port[1])}"
    return str(int(port))


def _covers(rule: InboundRule, port: int) -> bool:
    if isinstance(rule.port, tuple):
        return rule.port[0] <= port <= rule.port[1]
    return rule.port == port


# The host scripts' sections live apart (this module's 400-line budget); callers keep egress.*.
from components.egress_host import DOCKER_USER_UNIT, docker_user_section, host_proxy_section  # noqa: E402,F401
