"""The reachability matrix (issue #16): what the tier model allows, and what probes observe.

**Expected side** (``expected_matrix``, pure). From each probe position, every port something
listens on, allowed or refused. The verdicts come from the tier model as the policy pack
writes it (``policy.rules.stack``: ``ALLOWED``, ``MGMT_PORTS``, ``allowed_flow``), never from
``components/tiers.py`` or the rendered firewall rules, so a bug in the renderers shows as a
difference. The capture supplies only *what listens where* (hosts, their tiers, the containers'
tier labels and published ports); the named waivers come from the policy config and the
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
or sshd), ``container`` (a container's own address and port), ``internet`` (egress to the web,
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

**Observed side** (``probe_matrix``): the same cells tried with real clients (``nc -z``) from
probe positions given as network namespaces, and ``compare``: observed next to expected.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from policy.rules.base import WEB_PORTS
from policy.rules.stack import MGMT_CONTAINERS, MGMT_PORTS, allowed_flow

SSH_PORT = 22
HTTPS_PORT = 443
REACHABILITY_POLICY = "platform-stack-configure-tier-reachability"
_HOST_TYPES = ("platform:components:OnPremVps", "platform:components:DropletStack")
_CONTAINER = "docker:index/container:Container"


@dataclass(frozen=True)
class Listener:
    """A published port of a container: ``bind`` is ``all``, ``private`` or ``loopback``."""

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
            if ctier == "mgmt":
                if not published:
                    clients.add(MGMT_CONTAINERS)
            else:
                clients.add(ctier)
        hosts[name] = Host(name, name.split("-", 1)[0], tier, sides, tuple(listeners), frozenset(clients),
                           frozenset(bridge), frozenset(services))
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
                      if l.container.endswith("-postgres") and l.bind != "loopback"]
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
                     "loopback": ()}[listener.bind]
            out += [Target(host.name, side, listener.port, listener.protocol, listener.container, listener.tier)
                    for side in sides]
            # A loopback publish is no target on the host's sides, but its container's own address
            # is: a neighbour routing the bridge subnet meets it there (issue #16's example).
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
    topo = topology(state, stack_config, policy_config)
    return [expect(p, t, topo) for p in positions(topo) for t in targets(topo) if _sees(p, t, topo)]


# --- the observed side ------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeSite:
    """Where a probe runs: ``argv_prefix`` enters the position (``["nsenter", "--net=/run/netns/x"]``
    or ``["docker", "-H", host, "exec", "probe"]``); ``source`` binds the client to an address."""

    position: str
    argv_prefix: tuple[str, ...]
    source: Optional[str] = None


@dataclass(frozen=True)
class Observation:
    position: str
    target: Target
    address: str
    expected: bool
    observed: Optional[bool]
    """None: the cell could not be tried (no address for the target in the lab)."""
    reason: str
    detail: str = ""

    @property
    def status(self) -> str:
        if self.observed is None:
            return "not proven"
        return "pass" if self.observed == self.expected else "fail"


def nc_argv(address: str, port: int, protocol: str = "tcp", source: Optional[str] = None,
            timeout_s: int = 2) -> list[str]:
    """netcat-openbsd's port test: exit 0 when a TCP connection completes (for UDP, when no ICMP
    port-unreachable comes back within the timeout, which is all UDP can tell)."""
    argv = ["nc", "-z", "-n", "-w", str(timeout_s)]
    if protocol == "udp":
        argv.append("-u")
    if source:
        argv += ["-s", source]
    return [*argv, address, str(port)]


def probe_matrix(expectations: Sequence[Expectation], sites: Mapping[str, ProbeSite],
                 address_of: Callable[[Target], Optional[str]], *,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                 timeout_s: int = 2, workers: int = 1) -> list[Observation]:
    """Tries every cell whose position has a site and whose target has an address, with ``nc``
    (the site ``"<position>@<target host>"`` when there is one, else ``"<position>"``)
    (``workers`` probes at a time; a filtered port costs ``timeout_s`` seconds). A cell without
    a site or an address is ``not proven`` (never a pass). Observations keep the cells' order."""
    if shutil.which("nc") is None and run is subprocess.run:
        raise RuntimeError("nc is not installed (Debian package netcat-openbsd; scripts/bootstrap.sh installs it)")

    def one(cell: Expectation) -> Observation:
        site = sites.get(f"{cell.position}@{cell.target.host}") or sites.get(cell.position)
        address = address_of(cell.target)
        if site is None or address is None:
            why = "no probe site for this position" if site is None else "no lab address for this target"
            return Observation(cell.position, cell.target, address or "", cell.allowed, None, cell.reason, why)
        argv = [*site.argv_prefix, *nc_argv(address, cell.target.port, cell.target.protocol, site.source, timeout_s)]
        result = run(argv, capture_output=True, text=True, timeout=timeout_s + 30)
        return Observation(cell.position, cell.target, address, cell.allowed, result.returncode == 0,
                           cell.reason, (result.stderr or "").strip()[-200:])

    if workers <= 1:
        return [one(cell) for cell in expectations]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, expectations))


def rehearse_matrix(lab, state: Mapping, stack_config: Mapping, policy_config: Mapping, *,
                    translate: Callable[[str], str] = str, probes=None, hosts: Optional[Iterable[str]] = None,
                    timeout_s: int = 2, workers: int = 8) -> list[dict]:
    """The matrix of a rehearsal, as ``Report.reachability`` rows: expected from the capture
    (``state``), observed from ``lab``'s probe sites (``lab_probe_sites``, ``lab_address_of``,
    with the positions ``rehearsal.checks.probes.LabProbes`` adds: ``probes`` when the caller
    holds one, else one of its own for the call). ``translate``: the overlay's rewrite of a stack
    address to its lab address (``rehearsal.overlay.Overlay.text``); ``hosts``: only the cells
    between these hosts (a rehearsal of some products)."""
    topo = topology(state, stack_config, policy_config)
    cells = [expect(p, t, topo) for p in positions(topo) for t in targets(topo) if _sees(p, t, topo)]
    if hosts is not None:
        # A rehearsal of some products: the cells between their hosts (the others have no box).
        kept = set(hosts)
        cells = [c for c in cells if c.target.host in kept
                 and (":" not in c.position or c.position.split(":", 1)[1] in kept)]
    if probes is None:
        with lab_probes(lab, state, stack_config, policy_config, translate=translate) as own:
            return rehearse_matrix(lab, state, stack_config, policy_config, translate=translate, probes=own,
                                   hosts=hosts, timeout_s=timeout_s, workers=workers)
    observations = probe_matrix(cells, lab_probe_sites(lab, topo, probes=probes),
                                lab_address_of(lab, topo, probes=probes, stack_config=stack_config,
                                               translate=translate),
                                timeout_s=timeout_s, workers=workers)
    return rows([_unset_up(o, probes.errors) for o in observations])


def lab_probes(lab, state: Mapping, stack_config: Mapping, policy_config: Mapping, *,
               translate: Callable[[str], str] = str, defer_firewalls: bool = False):
    """An unstarted ``LabProbes`` for the capture's topology (a context manager)."""
    from rehearsal.checks.probes import LabProbes

    topo = topology(state, stack_config, policy_config)
    products = {h.product for n, h in topo.hosts.items() if n in lab.boxes}
    mine = {k: v for k, v in stack_config.items() if k.removeprefix("platform:") in products}
    return LabProbes(lab, {n: (h.product, h.sides) for n, h in topo.hosts.items()},
                     direct=lab_direct_routes(mine, translate),
                     firewalls=lab_firewalls(state, translate), defer_firewalls=defer_firewalls)


def _unset_up(observation: Observation, errors: Mapping[str, str]) -> Observation:
    """A not-proven cell names what the lab could not set up for it."""
    if observation.observed is not None:
        return observation
    host = observation.target.host
    for key in (f"{observation.position}@{host}", observation.position, f"containers:{host}"):
        if key in errors:
            from dataclasses import replace

            return replace(observation, detail=f"{observation.detail}: {errors[key]}")
    return observation


def lab_direct_routes(stack_config: Mapping, translate: Callable[[str], str] = str) -> list[tuple[str, int]]:
    """(lab address, port) of every direct egress route: its first CIDR's first address."""
    import ipaddress

    out = []
    for key, product_config in stack_config.items():
        if key.startswith("platform:") and isinstance(product_config, Mapping):
            for route in (product_config.get("egress") or {}).get("direct") or []:
                cidrs = route.get("cidrs") or []
                if cidrs:
                    address = translate(str(ipaddress.ip_network(str(cidrs[0]), strict=False).network_address))
                    out.append((address, int(route["port"])))
    return out


def lab_firewalls(state: Mapping, translate: Callable[[str], str] = str) -> dict[str, str]:
    """Box name -> the rules of the DigitalOcean Firewall the capture gives it (``<host>-firewall``)."""
    from rehearsal.checks.probes import droplet_firewall_rules

    return {r["name"].removesuffix("-firewall"): droplet_firewall_rules(r["inputs"].get("inboundRules") or [], translate)
            for r in state["resources"] if r["type"] == "digitalocean:index/firewall:Firewall"}


def summary(observations: Sequence[Observation]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "not proven": 0}
    for o in observations:
        counts[o.status] += 1
    return counts


def rows(observations: Sequence[Observation]) -> list[dict]:
    """JSON rows for the rehearsal report, observed next to expected."""
    return [{"position": o.position, "host": o.target.host, "side": o.target.side, "port": o.target.port,
             "protocol": o.target.protocol, "service": o.target.service, "address": o.address,
             "expected": "allowed" if o.expected else "refused",
             "observed": None if o.observed is None else ("open" if o.observed else "closed"),
             "status": o.status, "reason": o.reason, "detail": o.detail}
            for o in observations]


def mermaid(observations: Sequence[Observation], product: str) -> str:
    """A Mermaid flowchart of one product's matrix: an edge per (position, host, side) with the
    ports allowed as planned, and the ports observed where they differ (red, dashed)."""
    edges: dict[tuple[str, str], dict[str, set]] = {}
    for o in observations:
        if not o.target.host.startswith(product + "-") and o.target.host != product:
            continue
        key = (o.position, f"{o.target.host}/{o.target.side}")
        cell = edges.setdefault(key, {"planned": set(), "observed": set(), "unexpected": set(), "missing": set()})
        if o.expected:
            cell["planned"].add(o.target.port)
        if o.observed:
            cell["observed"].add(o.target.port)
        if o.status == "fail":
            cell["unexpected" if o.observed else "missing"].add(o.target.port)
    ids: dict[str, str] = {}

    def node(name: str) -> str:
        return ids.setdefault(name, f"n{len(ids)}")

    lines = ["flowchart LR"]
    links = []
    for (source, target), cell in sorted(edges.items()):
        if not (cell["planned"] or cell["observed"]):
            continue
        planned = ",".join(map(str, sorted(cell["planned"]))) or "-"
        label = f"planned {planned}"
        if cell["unexpected"] or cell["missing"]:
            label += f" / observed {','.join(map(str, sorted(cell['observed']))) or '-'}"
        arrow = "-.->" if cell["unexpected"] or cell["missing"] else "-->"
        links.append((f"  {node(source)} {arrow}|{label}| {node(target)}", bool(cell["unexpected"] or cell["missing"])))
    lines += [f'  {i}["{name}"]' for name, i in ids.items()]
    for index, (text, bad) in enumerate(links):
        lines.append(text)
        if bad:
            lines.append(f"  linkStyle {index} stroke:#d00,stroke-width:2px")
    return "\n".join(lines) + "\n"


# --- the lab's probe sites (rehearsal/lab.py) ---------------------------------------------------

def lab_probe_sites(lab, topo: Topology, *, probes=None,
                    run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict[str, ProbeSite]:
    """Probe sites in a started ``rehearsal.lab.Lab``: ``admin`` is the harness namespace from the
    public network's gateway (where the overlay puts ``admin_cidrs``), ``host:H`` box H's own
    network namespace (entered by the pid the harness daemon reports, with this machine's
    ``nc``). With ``probes`` (a started ``rehearsal.checks.probes.LabProbes``): ``internet`` in
    its own namespace on the public network (``probes.INTERNET_PROBE``), ``containers:H`` inside a container of H's
    bridge, and ``neighbour@H`` for the neighbour's cells towards H. Without it (or where it
    could not set one up) those positions have no site and their cells are "not proven"."""
    import ipaddress

    netns = ("nsenter", f"--net=/run/netns/{lab.netns}")

    def gateway(network: str) -> str:
        return str(next(ipaddress.ip_network(str(lab.networks[network])).hosts()))

    sites: dict[str, ProbeSite] = {}
    if "public" in lab.networks:
        sites["admin"] = ProbeSite("admin", netns, gateway("public"))
    if probes is not None:
        if probes.internet_site:
            sites["internet"] = ProbeSite("internet", probes.internet_site)
        for host, name in probes.neighbours.items():
            sites[f"neighbour@{host}"] = ProbeSite("neighbour", ("nsenter", f"--net=/run/netns/{name}"))
        for host in topo.hosts:
            prefix = probes.container_site(host)
            if prefix:
                sites[f"containers:{host}"] = ProbeSite(f"containers:{host}", prefix)
    docker = shutil.which("docker") or "docker"
    for name in topo.hosts:
        if name not in lab.boxes:
            continue
        result = run([docker, "-H", lab.harness_docker_host, "inspect", "-f", "{{.State.Pid}}", name],
                     capture_output=True, text=True, timeout=60)
        pid = result.stdout.strip()
        if result.returncode == 0 and pid.isdigit() and pid != "0":
            sites[f"host:{name}"] = ProbeSite(f"host:{name}", ("nsenter", f"--net=/proc/{pid}/ns/net"))
    return sites


def lab_address_of(lab, topo: Topology, *, probes=None, stack_config: Mapping = {},
                   translate: Callable[[str], str] = str) -> Callable[[Target], Optional[str]]:
    """A target's address in the lab: its box's address on the ``public`` network or on its
    product's ``<product>-private`` network (the overlay's names). With ``probes``: a container's
    own address in its box, ``probes.INTERNET_WEB`` for the web, and a direct route's first
    address through ``translate``. ``None`` (not proven) where the lab has none."""
    from rehearsal.checks.probes import INTERNET_WEB

    direct = {}
    for key, product_config in stack_config.items():
        if key.startswith("platform:") and isinstance(product_config, Mapping):
            for route, (address, _) in zip((product_config.get("egress") or {}).get("direct") or [],
                                           lab_direct_routes({key: product_config}, translate)):
                direct[str(route["name"])] = address

    def address_of(target: Target) -> Optional[str]:
        box = lab.boxes.get(target.host)
        if box is None:
            return None
        if target.side in ("public", "private"):
            network = "public" if target.side == "public" else f"{topo.hosts[target.host].product}-private"
            return box.addresses.get(network)
        if probes is None:
            return None
        if target.side == "container":
            return probes.container_address(target.host, target.service)
        if target.side == "internet":
            return INTERNET_WEB
        if target.side.startswith("direct:"):
            return direct.get(target.side.removeprefix("direct:"))
        return None

    return address_of
