"""The reachability matrix's expected side (issue #16): what the tier model allows.

**Expected side** (``expected_matrix``, pure). From each probe position, every port something
listens on, allowed or refused. The verdicts come from the tier model as the policy pack
writes it (``policy.rules.stack``: ``ALLOWED``, ``MGMT_PORTS``, ``allowed_flow``), never from
``components/tiers.py`` or the rendered firewall rules, so a bug in the renderers shows as a
difference. The capture supplies only *what listens where* (hosts, their tiers, the containers'
tier labels, published ports and the ports they listen on unpublished); the named waivers come from the policy config and the
stack's ``read_waivers``.

Positions (``Position.name``):

- ``internet``: any address outside; reaches the public side of the hosts.
- ``admin``: the admin CIDR; the internet's rights, plus SSH on public sides, plus the mgmt tier.
- ``neighbour``: a machine on the hosts' segments (public and private) that routes the
  container subnets via the hosts; the internet's rights and no more.
- ``host:H``: host H's own address on its private side (its processes, and its containers as
  Docker masquerades them); the tiers of H's client containers (a mgmt-tier container that
  publishes a port is an exporter, scraped and never scraping).
- ``containers:H``: a container on H's bridge (not an exempt address): as ``host:H``, plus its
  own bridge, and egress only to the allow-lists.

Targets (``Target.side``): ``public`` / ``private`` (a published port on that side of the host,
or sshd), ``container`` (a container's own address and port: every port it listens on, published
or not, as ``rehearsal.checks.listeners`` reads them from the capture), ``internet`` (egress to the web,
443) and ``direct:<route>`` (an egress route to fixed addresses, e.g. Oracle ECRS on 1521).
A loopback publish is no target on the host's sides (no position but the host reaches it by
construction), its container's own address is (the neighbour's way in). Every
listener in the stacks is TCP today (``Target.protocol`` carries UDP when a service publishes
it).

Rules beyond the policy's tier table, each from DESIGN.md: SSH answers the admin CIDR on public
sides and the bastion (the product's edge node) on private sides, nothing else; no new
connection enters a container bridge but through a published port (a container's own address
answers only its bridge and its host); egress from app and data containers goes only to their
allow-lists (the proxy, the direct routes); a product that declares an egress proxy
(``egress.proxy`` in its stack config) sends its edge containers' web traffic through it too.

The observed side is ``rehearsal.checks.reachability``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from policy.rules.stack import MGMT_CONTAINERS, MGMT_PORTS, allowed_flow
from rehearsal.checks.listeners import host_files, unpublished

SSH_PORT = 22
HTTPS_PORT = 443
REACHABILITY_POLICY = "platform-stack-configure-tier-reachability"
_HOST_TYPES = ("platform:components:OnPremVps", "platform:components:DropletStack")
_CONTAINER = "docker:index/container:Container"


@dataclass(frozen=True)
class Listener:
    """A port of a container: published (``bind`` ``all``, ``private`` or ``loopback``; ``port``
    the host's) or not (``bind`` ``container``: only its own address, ``port`` the container's;
    ``rehearsal.checks.listeners``)."""

    container: str
    tier: str
    port: int
    container_port: int
    bind: str
    protocol: str = "tcp"


@dataclass(frozen=True)
class Host:
    name: str
    product: str
    tier: str
    sides: tuple[str, ...]
    """``public`` and/or ``private``: where the host has an address."""
    listeners: tuple[Listener, ...]
    client_tiers: frozenset[str]
    """Tiers its containers open connections as (``allowed_flow`` sources)."""
    bridge_tiers: frozenset[str]
    """Tiers of every container on its bridge."""
    services: frozenset[str] = frozenset()
    bastion: Optional[str] = None
    apart: frozenset[str] = frozenset()
    """Containers (resource names) that are not on the host's main network (:func:`main_network`):
    a network of their own, like KRO's backend. The probe container of ``containers:H`` is on the
    main network, so their own addresses are not on its bridge."""


def main_network(networks_by_container: Mapping[str, Iterable[str]]) -> Optional[str]:
    """The network most of a host's containers are on (ties: the first by name); ``None`` when
    they are on none. ``rehearsal.checks.probes.probe_container`` places ``containers:H`` there."""
    counts: dict[str, int] = {}
    for networks in networks_by_container.values():
        for network in set(networks):
            counts[network] = counts.get(network, 0) + 1
    return min(counts, key=lambda n: (-counts[n], n), default=None)


@dataclass(frozen=True)
class Position:
    name: str
    kind: str
    """``internet``, ``admin``, ``neighbour``, ``host`` or ``containers``."""
    host: Optional[str] = None


@dataclass(frozen=True)
class Target:
    host: str
    side: str
    port: int
    protocol: str = "tcp"
    service: str = ""
    tier: str = ""

    @property
    def label(self) -> str:
        return f"{self.host}/{self.side}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Expectation:
    position: str
    target: Target
    allowed: bool
    reason: str


@dataclass(frozen=True)
class Waiver:
    """A named flow the tier model does not allow: ``source`` and ``target`` are host-name globs."""

    name: str
    source: str
    target: str
    ports: tuple[int, int]

    def covers(self, source: str, target: str, port: int) -> bool:
        return (fnmatch.fnmatchcase(source, self.source) and fnmatch.fnmatchcase(target, self.target)
                and self.ports[0] <= port <= self.ports[1])


@dataclass(frozen=True)
class Topology:
    hosts: dict[str, Host]
    waivers: tuple[Waiver, ...]
    direct_routes: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)
    """route name -> (port, client service names)."""
    proxied: frozenset[str] = frozenset()
    """Products whose stack config declares an egress proxy (``egress.proxy``): their containers
    reach the web only through it (the allow-list), whatever their tier."""


# --- the topology, from the capture -----------------------------------------------------------

def _labels(inputs: Mapping) -> dict[str, str]:
    return {str(l.get("label")): str(l.get("value")) for l in inputs.get("labels") or []}


def topology(state: Mapping, stack_config: Mapping, policy_config: Mapping) -> Topology:
    """Hosts, listeners and waivers of a synth capture (``state``: the ``--json`` document),
    its stack file's ``config`` mapping and its policy config (``policy/config.<stack>.json``).
    Raises ``ValueError`` for a declared read waiver whose service or database host is not in
    the capture."""
    resources = state["resources"]
    components = {r["urn"]: r for r in resources if r["type"] in _HOST_TYPES}
    droplets = {r["parent"]: r for r in resources if r["type"] == "digitalocean:index/droplet:Droplet"}
    files = host_files(resources, set(components))
    hosts: dict[str, Host] = {}
    for urn, component in sorted(components.items(), key=lambda kv: kv[1]["name"]):
        name = component["name"]
        containers = [r for r in resources if r["type"] == _CONTAINER and r.get("parent") == urn]
        if not containers:
            continue
        inputs = component.get("inputs") or {}
        if component["type"].endswith("OnPremVps"):
            tier = str(inputs.get("tier"))
            two = inputs.get("address") != inputs.get("privateAddress")
            sides = ("public", "private") if two else (("public",) if tier == "edge" else ("private",))
        else:
            tags = (droplets.get(urn) or {}).get("inputs", {}).get("tags") or []
            tier = next((t.removeprefix("tier-") for t in tags if t == "tier-edge"), "edge")
            sides = ("public",)
        listeners, clients, bridge = [], set(), set()
        services = set()
        networks = {c["name"]: [str(n.get("name")) for n in c["inputs"].get("networksAdvanced") or []]
                    for c in containers}
        main = main_network(networks)
        apart = frozenset(name for name, nets in networks.items() if main is not None and main not in nets)
        for c in containers:
            label = _labels(c["inputs"])
            ctier = label.get("platform.tier", "none")
            services.add(label.get("platform.service", c["name"].removeprefix(name + "-")))
            bridge.add(ctier)
            ports = c["inputs"].get("ports") or []
            published = [p for p in ports if not str(p.get("ip", "0.0.0.0")).startswith("127.")]
            for p in ports:
                ip = str(p.get("ip") or "0.0.0.0")
                bind = "loopback" if ip.startswith("127.") else "all" if ip in ("0.0.0.0", "::") else "private"
                listeners.append(Listener(c["name"], ctier, int(p["external"]), int(p["internal"]), bind,
                                          str(p.get("protocol") or "tcp")))
            listeners += [Listener(c["name"], ctier, port, port, "container")
                          for port in unpublished(c["inputs"], files[urn])]
            if ctier == "mgmt":
                if not published:
                    clients.add(MGMT_CONTAINERS)
            else:
                clients.add(ctier)
        hosts[name] = Host(name, name.split("-", 1)[0], tier, sides, tuple(listeners), frozenset(clients),
                           frozenset(bridge), frozenset(services), apart=apart)
    for product in {h.product for h in hosts.values()}:
        mine = [h for h in hosts.values() if h.product == product]
        edges = [h for h in mine if h.sides == ("public", "private")]
        if len(edges) == 1:
            for h in mine:
                if h.sides == ("private",):
                    hosts[h.name] = _replace(h, bastion=edges[0].name)
    return Topology(hosts, tuple(_waivers(hosts, stack_config, policy_config)), _direct_routes(stack_config),
                    _proxied(stack_config))


def _replace(host: Host, **changes) -> Host:
    from dataclasses import replace

    return replace(host, **changes)


def _waivers(hosts: Mapping[str, Host], stack_config: Mapping, policy_config: Mapping) -> Iterable[Waiver]:
    declared = {str(w.get("name")): w for w in (policy_config.get(REACHABILITY_POLICY) or {}).get("waivers") or []
                if w.get("reason") and w.get("expires")}
    for waiver in declared.values():
        for flow in waiver.get("resources") or []:
            source, _, rest = str(flow).partition("->")
            target, _, ports = rest.partition(":")
            low, _, high = ports.partition(":")
            if source and target and low.isdigit():
                yield Waiver(str(waiver["name"]), source, target, (int(low), int(high or low)))
    for key, product_config in stack_config.items():
        if not key.startswith("platform:") or not isinstance(product_config, Mapping):
            continue
        for read in product_config.get("read_waivers") or []:
            if read.get("name") not in declared:
                continue  # an undeclared waiver excuses nothing (the policy pack reports it)
            product = key.removeprefix("platform:")
            runs = [h for h in hosts.values() if h.product == product and read["service"] in h.services]
            stores = [(h, l) for h in hosts.values() if h.product == product for l in h.listeners
                      if l.container.endswith("-postgres") and l.bind in ("all", "private")]
            if len(runs) != 1 or len(stores) != 1:
                raise ValueError(f"read waiver {read.get('name')}: service {read.get('service')} runs on "
                                 f"{[h.name for h in runs]}, Postgres on {[h.name for h, _ in stores]}")
            (store, listener), = stores
            yield Waiver(str(read["name"]), runs[0].name, store.name, (listener.port, listener.port))


def _proxied(stack_config: Mapping) -> frozenset[str]:
    return frozenset(key.removeprefix("platform:") for key, product_config in stack_config.items()
                     if key.startswith("platform:") and isinstance(product_config, Mapping)
                     and isinstance(product_config.get("egress"), Mapping) and product_config["egress"].get("proxy"))


def _direct_routes(stack_config: Mapping) -> dict[str, tuple[int, frozenset[str]]]:
    routes = {}
    for key, product_config in stack_config.items():
        if key.startswith("platform:") and isinstance(product_config, Mapping):
            for route in (product_config.get("egress") or {}).get("direct") or []:
                routes[str(route["name"])] = (int(route["port"]), frozenset(route.get("services") or ()))
    return routes


# --- the expected side ------------------------------------------------------------------------

def positions(topo: Topology) -> list[Position]:
    out = [Position("internet", "internet"), Position("admin", "admin"), Position("neighbour", "neighbour")]
    for name in topo.hosts:
        out += [Position(f"host:{name}", "host", name), Position(f"containers:{name}", "containers", name)]
    return out


def targets(topo: Topology) -> list[Target]:
    out: list[Target] = []
    for host in topo.hosts.values():
        for side in host.sides:
            out.append(Target(host.name, side, SSH_PORT, service="sshd", tier="mgmt"))
        for listener in host.listeners:
            sides = {"all": host.sides, "private": ("private",) if "private" in host.sides else host.sides,
                     "loopback": (), "container": ()}[listener.bind]
            out += [Target(host.name, side, listener.port, listener.protocol, listener.container, listener.tier)
                    for side in sides]
            # A loopback publish, or a port not published at all, is no target on the host's
            # sides, but its container's own address is: a neighbour routing the bridge subnet
            # meets it there (issue #16's example).
            out.append(Target(host.name, "container", listener.container_port, listener.protocol,
                              listener.container, listener.tier))
    for host in topo.hosts.values():
        out.append(Target(host.name, "internet", HTTPS_PORT, service="web", tier="internet"))
        for route, (port, _) in sorted(topo.direct_routes.items()):
            if host.product == "pencom":
                out.append(Target(host.name, f"direct:{route}", port, service=route, tier="external"))
    return sorted(set(out), key=lambda t: (t.host, t.side, t.port, t.protocol, t.service))


def _sees(position: Position, target: Target, topo: Topology) -> bool:
    """Whether the position is on a segment where the target's side is (egress targets belong to
    the position of the same host only)."""
    if target.side == "internet" or target.side.startswith("direct:"):
        return position.kind in ("host", "containers") and position.host == target.host
    if position.kind in ("internet", "admin"):
        return target.side == "public"
    if position.kind == "neighbour":
        return True
    if position.host == target.host:
        return target.side == "container"
    # Hosts probe their product's private segment (the only network they share).
    return (topo.hosts[target.host].product == topo.hosts[position.host].product
            and target.side in ("private", "container"))


def expect(position: Position, target: Target, topo: Topology) -> Expectation:
    """The tier model's verdict for one cell; ``reason`` names the rule or the waiver."""
    def verdict(allowed: bool, reason: str) -> Expectation:
        return Expectation(position.name, target, allowed, reason)

    if target.side == "internet":
        host = topo.hosts[target.host]
        bridge = host.bridge_tiers if position.kind == "containers" else {host.tier}
        if set(bridge) & {"app", "data"}:
            return verdict(False, "egress from app and data goes to the allow-list only")
        if position.kind == "containers" and host.product in topo.proxied:
            # The probe container is never the proxy or another exempt (mgmt) address.
            return verdict(False, f"{host.product}'s containers reach the web through its egress proxy only")
        return verdict(True, "edge and mgmt egress is open")
    if target.side.startswith("direct:"):
        _, clients = topo.direct_routes[target.service]
        ok = position.kind == "containers" and bool(clients & topo.hosts[target.host].services)
        return verdict(ok, f"direct route {target.service} for {', '.join(sorted(clients))}" if ok
                       else f"direct route {target.service} serves only {', '.join(sorted(clients))}")
    if target.side == "container":
        ok = position.kind in ("host", "containers") and position.host == target.host
        if ok and position.kind == "containers" and target.service in topo.hosts[target.host].apart:
            return verdict(False, "a network of its own: containers on the host's main bridge are not on it")
        return verdict(ok, "its own bridge" if ok else "container addresses answer only their bridge; the way in is a published port")
    if target.service == "sshd":
        host = topo.hosts[target.host]
        ok = (position.kind == "admin" and target.side == "public") or \
             (position.kind == "host" and position.host == host.bastion and target.side == "private")
        return verdict(ok, "SSH from the admin CIDR on public sides, from the bastion on private sides")
    port = [(target.port, target.port)]
    if allowed_flow({"internet"}, target.tier, port):
        return verdict(True, "the internet reaches the edge on 80/443")
    if position.kind == "admin" and target.tier == "mgmt" and target.port in MGMT_PORTS:
        return verdict(True, "admin reaches the mgmt tier")
    if position.kind in ("host", "containers"):
        source = topo.hosts[position.host]
        if allowed_flow(set(source.client_tiers), target.tier, port):
            return verdict(True, f"{', '.join(sorted(source.client_tiers))} -> {target.tier}")
        for waiver in topo.waivers:
            if waiver.covers(source.name, target.host, target.port):
                return verdict(True, f"waiver {waiver.name}")
        return verdict(False, f"{', '.join(sorted(source.client_tiers))} -> {target.tier} on {target.port} is not in the tier model")
    return verdict(False, f"{position.kind} -> {target.tier} on {target.port} is not in the tier model")


def expected_matrix(state: Mapping, stack_config: Mapping, policy_config: Mapping) -> list[Expectation]:
    """Every (position, target) cell the positions can try, with the tier model's verdict."""
    return cells(topology(state, stack_config, policy_config))


def cells(topo: Topology) -> list[Expectation]:
    """Every (position, target) cell of ``topo`` whose position is on the target's segment, with
    the tier model's verdict; positions in ``positions`` order, targets in ``targets`` order."""
    return [expect(p, t, topo) for p in positions(topo) for t in targets(topo) if _sees(p, t, topo)]
