"""The reachability matrix (issue #16): what probes observe, next to what the tier model allows.

The expected side (positions, targets, the tier model's verdicts) is
``rehearsal.checks.tiermodel``, re-exported here. **Observed side** (``probe_matrix``): the same
cells tried with real clients (``nc -z``) from probe positions given as network namespaces, and
``rows``: observed next to expected, for the rehearsal report; ``lab_probe_sites`` and
``lab_address_of`` place the positions and targets in a started ``rehearsal.lab.Lab``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

from rehearsal.checks.tiermodel import (  # noqa: F401 -- re-exported: the matrix's one front
    HTTPS_PORT, REACHABILITY_POLICY, SSH_PORT, Expectation, Host, Listener, Position, Target,
    Topology, Waiver, cells, expect, expected_matrix, positions, targets, topology)


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
    tried = cells(topo)
    if hosts is not None:
        # A rehearsal of some products: the cells between their hosts (the others have no box).
        kept = set(hosts)
        tried = [c for c in tried if c.target.host in kept
                 and (":" not in c.position or c.position.split(":", 1)[1] in kept)]
    if probes is None:
        with lab_probes(lab, state, stack_config, policy_config, translate=translate) as own:
            return rehearse_matrix(lab, state, stack_config, policy_config, translate=translate, probes=own,
                                   hosts=hosts, timeout_s=timeout_s, workers=workers)
    observations = probe_matrix(tried, lab_probe_sites(lab, topo, probes=probes),
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
