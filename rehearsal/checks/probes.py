"""The lab's probe positions for the reachability matrix (issue #16), beyond the harness namespace
and the boxes' own namespaces (``reachability.lab_probe_sites``).

- **internet**: a namespace of its own on the ``public`` network at :data:`INTERNET_PROBE`. Not
  the harness namespace: the harness daemon masquerades everything the namespace itself sends
  into a bridge to the bridge's gateway ``.1``, which is where the overlay maps ``admin_cidrs``
  (that is how the first matrix saw SSH answer "the internet").
- **containers:H**: a running container on H's bridge, entered by its process in the box
  (``/proc/<box pid>/root/proc/<pid>/ns/net``: the box's own ``/proc`` seen through its root), with
  this machine's ``nc``. The container is an app one if H runs any, else data, edge, and one of
  the others last; never an address exempt from the egress lock (those are the proxy and
  Alertmanager, which are mgmt), so it meets the same DOCKER-USER rules as every app container.
- **neighbour**: per host H, a namespace of its own (``neighbour@H``) plugged into every lab
  network H is on, at :func:`neighbour_address`, with a route to each of H's container subnets
  via H's private address (its public one when it has none): the attack of issue #16.
- **Egress targets**: :data:`INTERNET_WEB` on 443 stands for the web (an address on the
  ``internet`` network held by the harness namespace, nothing the stack names), and each direct
  route's first address (as the overlay translates it) on its port. A listener in the harness
  namespace accepts there.
- **The provider's firewall**: a droplet sits behind its DigitalOcean Firewall, which the lab does
  not have; :func:`droplet_firewall_rules` renders the captured ``Firewall``'s inbound rules
  (addresses through the overlay) as the box's ``mangle PREROUTING`` filter on its lab
  interfaces, before Docker's DNAT, as the cloud firewall filters before the droplet sees a
  packet. Outbound rules are not rendered (the stack's allow every destination).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from rehearsal.checks.tiermodel import main_network

INTERNET_PROBE = "10.200.0.254"
"""The internet probe's source: on the lab's ``public`` network (rehearsal.overlay.PUBLIC), outside
every admin CIDR the overlay maps (those go to the gateway, ``.1``) and every box (from ``.10``)."""
INTERNET_WEB = "10.203.0.248"
"""The web as app and data containers would reach it: on the ``internet`` network, named by nothing
in the stack (the overlay gives stack addresses from ``.2``, the lab services take ``.249`` up,
rehearsal.services.ADDRESSES)."""
NEIGHBOUR_BASE = 200
"""Host part of the first neighbour address (neighbour ``i`` is ``.200+i`` on each network)."""
TIER_PREFERENCE = ("app", "data", "edge", "none", "mgmt")
FIREWALL_CHAIN = "LAB-CLOUD-FIREWALL"
_FIREWALL = "digitalocean:index/firewall:Firewall"

LISTENER = r"""
import socket, sys, threading
def serve(address, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, int(port))); s.listen(64)
    while True:
        c, _ = s.accept(); c.close()
for spec in sys.argv[1:]:
    a, p = spec.rsplit(":", 1)
    threading.Thread(target=serve, args=(a, p), daemon=True).start()
threading.Event().wait()
"""
"""A TCP listener that accepts and closes, on every ``address:port`` argument."""


@dataclass(frozen=True)
class BoxContainer:
    """A running container in a box: ``addresses`` network name -> (IPv4, prefix length)."""

    name: str
    service: str
    tier: str
    pid: int
    addresses: Mapping[str, tuple[str, int]]
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: Mapping[str, str] = field(default_factory=dict)
    """container path -> host path of its binds."""

    @property
    def subnets(self) -> list[str]:
        return sorted({str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
                       for ip, prefix in self.addresses.values() if ip})


def parse_inspect(document: str) -> list[BoxContainer]:
    """``docker inspect`` output (a JSON list) to the running containers that have an address."""
    out = []
    for c in json.loads(document or "[]"):
        state = c.get("State") or {}
        if not state.get("Running") or not state.get("Pid"):
            continue
        labels = (c.get("Config") or {}).get("Labels") or {}
        networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
        addresses = {n: (v.get("IPAddress") or "", int(v.get("IPPrefixLen") or 0)) for n, v in networks.items()
                     if v.get("IPAddress")}
        env = dict(e.split("=", 1) for e in (c.get("Config") or {}).get("Env") or [] if "=" in e)
        mounts = {m["Destination"]: m["Source"] for m in c.get("Mounts") or [] if m.get("Source")}
        if addresses:
            out.append(BoxContainer(c["Name"].lstrip("/"), labels.get("platform.service", ""),
                                    labels.get("platform.tier", "none"), int(state["Pid"]), addresses,
                                    env, mounts))
    return out


def probe_container(containers: Sequence[BoxContainer]) -> Optional[BoxContainer]:
    """The container that stands for ``containers:H``: of those on the host's main network
    (``tiermodel.main_network``, as the expected side reads it from the capture), the first by
    :data:`TIER_PREFERENCE`, then by name (None when nothing runs)."""
    main = main_network({c.name: c.addresses for c in containers})
    candidates = [c for c in containers if main is None or main in c.addresses]
    rank = {t: i for i, t in enumerate(TIER_PREFERENCE)}
    return min(candidates, key=lambda c: (rank.get(c.tier, len(rank)), c.name), default=None)


def neighbour_address(cidr: str, index: int) -> str:
    return str(ipaddress.ip_network(cidr).network_address + NEIGHBOUR_BASE + index)


def droplet_firewall_rules(inbound: Iterable[Mapping], translate: Callable[[str], str] = str) -> str:
    """``iptables-restore --noflush`` input (table ``mangle``) for a DigitalOcean Firewall's
    ``inboundRules`` (the provider's argument names: ``protocol``, ``portRange`` "22", "80-90" or
    "all", ``sourceAddresses``): what arrives on a lab interface (``eth+``) and is not a reply, nor admitted
    by a rule, is dropped. IPv6 sources are left out (the lab is IPv4). ``translate``: the
    overlay's address rewrite."""
    out = ["*mangle", f":{FIREWALL_CHAIN} - [0:0]", f"-F {FIREWALL_CHAIN}",
           f"-A {FIREWALL_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"]
    for rule in inbound:
        protocol = str(rule.get("protocol") or "tcp")
        ports = str(rule.get("portRange") or "all")
        match = f"-p {protocol}"
        if protocol in ("tcp", "udp") and ports not in ("all", "0", "1-65535"):
            match += f" --dport {ports.replace('-', ':')}"
        for source in rule.get("sourceAddresses") or []:
            source = translate(str(source))
            if ":" in source:
                continue
            out.append(f"-A {FIREWALL_CHAIN} {match} -s {source} -j RETURN")
    out += [f"-A {FIREWALL_CHAIN} -j DROP", f"-I PREROUTING -i eth+ -j {FIREWALL_CHAIN}", "COMMIT"]
    return "\n".join(out) + "\n"


APPLY_FIREWALL = (f"while iptables -t mangle -D PREROUTING -i eth+ -j {FIREWALL_CHAIN} 2>/dev/null; do :; done; "
                  "iptables-restore --noflush")
"""Run in the box with the rules on stdin: the jump goes in once, however often it is applied."""


def _run(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()[-400:]}")
    return result


def _add_address(netns: str, address: str, device: str) -> None:
    """``address``/32 on ``device`` in the lab's namespace (already there: kept; it goes with the
    namespace)."""
    added = subprocess.run(["ip", "-n", netns, "addr", "add", f"{address}/32", "dev", device],
                           capture_output=True, text=True, timeout=60)
    if added.returncode != 0 and "File exists" not in added.stderr and "already assigned" not in added.stderr:
        raise RuntimeError(f"adding {address} to {device}: {added.stderr.strip()}")


@dataclass
class LabProbes:
    """What the lab adds for the probes (a context manager; ``close`` removes the neighbours'
    namespaces, everything else goes with the lab's namespace and boxes).

    ``hosts``: host name -> (product, sides) for every topology host that has a box;
    ``direct``: (lab address, port) of each direct route; ``firewalls``: box -> the provider
    firewall's rules text (``droplet_firewall_rules``)."""

    lab: object
    hosts: Mapping[str, tuple[str, tuple[str, ...]]]
    direct: Sequence[tuple[str, int]] = ()
    firewalls: Mapping[str, str] = field(default_factory=dict)
    defer_firewalls: bool = False
    """True: ``start`` leaves the provider firewalls to ``apply_firewalls`` (the fail2ban probe
    needs a source that reaches sshd first)."""
    containers: dict[str, list[BoxContainer]] = field(default_factory=dict)
    box_pids: dict[str, int] = field(default_factory=dict)
    neighbours: dict[str, str] = field(default_factory=dict)
    """host -> the neighbour namespace's name."""
    internet: Optional[str] = None
    """The internet probe's namespace."""
    namespaces: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """What could not be set up, by position or target (its cells stay not proven)."""
    _tag: str = field(default_factory=lambda: secrets.token_hex(2))

    def __enter__(self) -> "LabProbes":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _docker(self, *args: str) -> list[str]:
        from rehearsal.netns import docker_cli

        return [docker_cli(), "-H", self.lab.harness_docker_host, *args]

    def bridge(self, network: str) -> str:
        """The harness daemon's bridge device of lab network ``network``."""
        network_id = _run(self._docker("network", "inspect", "-f", "{{.Id}}", f"lab-{network}")).stdout.strip()
        return f"br-{network_id[:12]}"

    def start(self) -> None:
        lab = self.lab
        ns = lab.netns
        if "public" in lab.networks:
            self.internet = f"{ns}-inet"
            self._plug(self.internet, {"public": INTERNET_PROBE}, "i")
        listen = [(INTERNET_WEB, 443), *self.direct]
        if "internet" in lab.networks:
            device = self.bridge("internet")
            for address in sorted({a for a, _ in listen}):
                _add_address(ns, address, device)
            if "probe-listeners" not in getattr(lab, "_services", {}):
                lab.spawn_service("probe-listeners", [sys.executable, "-c", LISTENER,
                                                      *(f"{a}:{p}" for a, p in listen)])
        if not self.defer_firewalls:
            self.apply_firewalls()
        for host in self.hosts:
            if host not in lab.boxes:
                continue
            pid = _run(self._docker("inspect", "-f", "{{.State.Pid}}", host)).stdout.strip()
            if pid.isdigit() and pid != "0":
                self.box_pids[host] = int(pid)
            listed = lab.exec(host, ["sh", "-c", "ids=$(docker ps -q); [ -z \"$ids\" ] && echo '[]' "
                                                 "|| docker inspect $ids"], timeout=120)
            if listed.returncode == 0:
                self.containers[host] = parse_inspect(listed.stdout.decode())
            else:
                self.errors[f"containers:{host}"] = listed.stderr.decode(errors="replace")[-300:]
        for index, host in enumerate(sorted(self.hosts)):
            try:
                self._neighbour(index, host)
            except RuntimeError as exc:
                self.errors[f"neighbour@{host}"] = str(exc)

    def apply_firewalls(self) -> None:
        for box, rules in self.firewalls.items():
            if box not in self.lab.boxes:
                continue
            result = self.lab.exec(box, ["sh", "-c", APPLY_FIREWALL], input=rules.encode(), timeout=60)
            if result.returncode != 0:
                self.errors[f"firewall:{box}"] = result.stderr.decode(errors="replace")[-300:]

    def _plug(self, name: str, addresses: Mapping[str, str], tag: str) -> None:
        """A namespace ``name`` with a veth into the harness bridge of each lab network in
        ``addresses`` (network -> its address there). Its packets cross the bridge from a port of
        their own, so the harness daemon's masquerade of what the harness namespace itself sends
        into a bridge (``--src-type LOCAL``, which turned every probe from the harness into the
        gateway ``.1``, the admin address) never touches them."""
        lab = self.lab
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        for number, (network, address) in enumerate(sorted(addresses.items())):
            outer, inner = f"p{self._tag}{tag}o{number}", f"p{self._tag}{tag}i{number}"
            _run(["ip", "-n", lab.netns, "link", "add", outer, "type", "veth", "peer", "name", inner,
                  "netns", name])
            _run(["ip", "-n", lab.netns, "link", "set", outer, "master", self.bridge(network), "up"])
            prefix = ipaddress.ip_network(str(lab.networks[network])).prefixlen
            _run(["ip", "-n", name, "addr", "add", f"{address}/{prefix}", "dev", inner])
            _run(["ip", "-n", name, "link", "set", inner, "up"])
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _neighbour(self, index: int, host: str) -> None:
        box = self.lab.boxes.get(host)
        if box is None:
            return
        name = f"{self.lab.netns}-nb{index}"
        self._plug(name, {network: neighbour_address(str(self.lab.networks[network]), index)
                          for network in box.addresses}, f"n{index}")
        self.neighbours[host] = name
        via = box.addresses.get(next((n for n in sorted(box.addresses) if n != "public"), "public"))
        for subnet in sorted({s for c in self.containers.get(host, []) for s in c.subnets}):
            _run(["ip", "-n", name, "route", "add", subnet, "via", via])

    @property
    def internet_site(self) -> Optional[tuple[str, ...]]:
        """The argv prefix that runs a client as the internet probe (None: no public network)."""
        return ("nsenter", f"--net=/run/netns/{self.internet}") if self.internet else None

    def container_site(self, host: str, container: Optional[BoxContainer] = None) -> Optional[tuple[str, ...]]:
        """``nsenter`` into ``container`` (default: ``probe_container`` of the host)."""
        chosen = container or probe_container(self.containers.get(host, []))
        if chosen is None or host not in self.box_pids:
            return None
        return ("nsenter", f"--net=/proc/{self.box_pids[host]}/root/proc/{chosen.pid}/ns/net")

    def container_address(self, host: str, service: str) -> Optional[str]:
        """The address of ``host``'s container whose resource name is ``service`` (``<host>-<name>``):
        of a container on several networks (KRO's nginx joins its backend's), the one on a network
        the probe container (``containers:H``) is on, since the tier model's "its own bridge" is
        that network; addresses by name otherwise."""
        probe = probe_container(self.containers.get(host, []))
        shared = set(probe.addresses) if probe else set()
        for c in self.containers.get(host, []):
            if f"{host}-{c.service}" == service:
                ordered = sorted(c.addresses.items(), key=lambda kv: (kv[0] not in shared, kv[1][0]))
                return next((ip for _, (ip, _) in ordered), None)
        return None

    def close(self) -> None:
        """Deletes the probe namespaces (their veths go with them)."""
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=60)
        self.namespaces.clear()
        self.neighbours.clear()
        self.internet = None
