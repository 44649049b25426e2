"""Diagrams of a desired state, drawn from the capture (not from config), so they show what will
be deployed.

- the tier view (``nodes``, ``flows``) is ``synth/flows.py``;
- ``product_graph``: one diagram per product. Hosts are groups (Graphviz clusters, Mermaid
  subgraphs) holding their containers, with a ``host`` node for what reaches the host itself
  (SSH, UFW rules without a container behind them); edges carry ports; waivers are dashed red
  edges named after the waiver. No self-loops, no edge without both ends drawn.
- ``observed_graph``: the same groups and nodes with the flows a rehearsal observed (the
  reachability matrix of ``python -m synth rehearse --json``, issue #16) instead of the planned
  ones, drawn next to the planned diagram: per probe position and target, the ports observed
  open as planned, open although the tier model refuses them (red), and refused although it
  allows them (orange, dashed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.flows import (ADMINS, APP, CLUSTER, COMMAND, CONTAINER, DB_FIREWALL, DROPLET, FIREWALL, INTERNET, ONPREM,
                         UFW_ALLOW, container_labels, droplet_of, is_world)
from synth.state import PRODUCT_TYPE_PREFIX, State, product_of

GROUPS = ("platform:components:DropletStack", ONPREM)
R2 = "cloudflare:index/r2Bucket:R2Bucket"
R2_NODE = "r2"
TIER_RANK = {"edge": 1, "app": 2, "mgmt": 2, "data": 3}
ENGINE_PORTS = {"pg": "25060", "mysql": "25060", "valkey": "25061", "redis": "25061", "mongodb": "27017"}


@dataclass(frozen=True, order=True)
class Link:
    source: str
    target: str
    label: str
    waiver: str = ""


@dataclass
class Graph:
    """One product's diagram: ``groups`` id -> label; ``nodes`` id -> (label, group or "",
    shape); ``links`` between node ids."""

    product: str
    groups: dict[str, str]
    nodes: dict[str, tuple[str, str, str]]
    links: set[Link]
    ranks: dict[str, int] = field(default_factory=dict)
    """Left-to-right order of groups and ungrouped nodes: outside, edge, app, data, backups."""

    def rank(self, node: str) -> int:
        group = self.nodes[node][1]
        return self.ranks.get(group or node, 3)


def products(state: State) -> list[str]:
    return sorted(r["name"] for r in state.resources if r["type"].startswith(PRODUCT_TYPE_PREFIX))


def _anchor(host: str) -> str:
    return f"{host}::host"


def product_graph(state: State, product: str) -> Graph:
    mine = [r for r in state.resources if product_of(r, state.by_urn) == product]
    graph = Graph(product, {}, {INTERNET: ("internet", "", "ellipse"), ADMINS: ("admin CIDRs", "", "ellipse")}, set())
    host_of_droplet: dict[str, str] = {}
    addresses: dict[str, str] = {}
    for host in (r for r in mine if r["type"] in GROUPS):
        children = state.children(host)
        droplet = next((c for c in children if c["type"] == DROPLET), None)
        if droplet is not None:
            host_of_droplet[droplet["name"]] = host["name"]
            tiers = [t[5:] for t in droplet["inputs"].get("tags") or [] if t.startswith("tier-")]
            label = f"{host['name']}\ndroplet {droplet['inputs'].get('size')}, {'/'.join(tiers)} tier"
        else:
            label = f"{host['name']}\non-prem {host['inputs'].get('address')}, {host['inputs'].get('tier')} tier"
            for key in ("address", "privateAddress"):
                if host["inputs"].get(key):
                    addresses[f"{host['inputs'][key]}/32"] = host["name"]
        graph.groups[host["name"]] = label
        tier = (tiers[-1] if droplet is not None and tiers else str(host["inputs"].get("tier") or "app"))
        graph.ranks[host["name"]] = min(TIER_RANK.get(t, 2) for t in (tiers if droplet is not None and tiers else [tier]))
        graph.nodes[_anchor(host["name"])] = ("host (sshd, UFW)", host["name"], "box3d")
    published: dict[tuple[str, str], str] = {}
    aliases: dict[tuple[str, str], str] = {}
    for container in (r for r in mine if r["type"] == CONTAINER):
        host = _group_of(state, container)
        if host is None:
            continue
        short = container["name"][len(host) + 1:] if container["name"].startswith(host + "-") else container["name"]
        tier = container_labels(container).get("platform.tier", "app")
        ports = sorted({str(p.get("external")) for p in container["inputs"].get("ports") or []}, key=_port_key)
        graph.nodes[container["name"]] = (f"{short}\n{tier}" + (f" :{', :'.join(ports)}" if ports else ""), host, "box")
        for port in container["inputs"].get("ports") or []:
            published[(host, str(port.get("external")))] = container["name"]
            if (port.get("ip") or "0.0.0.0") in ("0.0.0.0", "::"):
                graph.links.add(Link(INTERNET, container["name"], str(port.get("external"))))
        for network in container["inputs"].get("networksAdvanced") or []:
            for alias in network.get("aliases") or []:
                aliases[(host, alias)] = container["name"]
    apps: dict[str, str] = {}
    for app in (r for r in mine if r["type"] == APP):
        spec = app["inputs"].get("spec") if isinstance(app["inputs"].get("spec"), dict) else {}
        graph.groups[app["name"]] = f"{app['name']}\nApp Platform"
        graph.ranks[app["name"]] = 2
        for kind in ("services", "staticSites", "workers"):
            for component in spec.get(kind) or []:
                node = f"{app['name']}::{component['name']}"
                graph.nodes[node] = (f"{component['name']}\n{kind[:-1]}", app["name"], "box")
                apps.setdefault(app["urn"], node) if kind == "services" else None
        for rule in (spec.get("ingress") or {}).get("rules") or []:
            component = (rule.get("component") or {}).get("name")
            if component and f"{app['name']}::{component}" in graph.nodes:
                graph.links.add(Link(INTERNET, f"{app['name']}::{component}", "443"))
    for cluster in (r for r in mine if r["type"] == CLUSTER):
        engine = cluster["inputs"].get("engine")
        graph.nodes[cluster["name"]] = (f"{cluster['name']}\nmanaged {engine} {cluster['inputs'].get('version')}, "
                                        f"{cluster['inputs'].get('nodeCount', 1)} node(s)", "", "cylinder")
    for bucket in (r for r in mine if r["type"] == "digitalocean:index/spacesBucket:SpacesBucket"):
        graph.nodes[bucket["name"]] = (f"{bucket['name']}\nSpaces bucket", "", "folder")
    r2 = [r for r in mine if r["type"] == R2]
    if r2:
        # One node for the off-site copies: a bucket per datastore would bury the flows.
        graph.nodes[R2_NODE] = (f"Cloudflare R2\n{len(r2)} backup bucket{'s' if len(r2) != 1 else ''}", "", "folder")

    for firewall in (r for r in mine if r["type"] == FIREWALL):
        for urn in firewall["dependencies"]:
            droplet = state.by_urn.get(urn)
            host = host_of_droplet.get(droplet["name"]) if droplet and droplet["type"] == DROPLET else None
            if host is None:
                continue
            for rule in firewall["inputs"].get("inboundRules") or []:
                port = str(rule.get("portRange", "all"))
                origin = INTERNET if any(is_world(a) for a in rule.get("sourceAddresses") or []) else ADMINS
                graph.links.add(Link(origin, published.get((host, port), _anchor(host)), port))
    for command in (r for r in mine if r["type"] == COMMAND):
        host = _group_of(state, command)
        if host is None:
            continue
        text = str(command["inputs"].get("stdin") or "")
        if command["name"].endswith("-setup-ufw"):
            for line in text.splitlines():
                match = UFW_ALLOW.match(line.strip())
                if not match:
                    continue
                source, port, waiver = match.groups()
                origin = INTERNET if source == "any" or is_world(source) else (
                    _anchor(addresses[source]) if source in addresses else ADMINS)
                if origin == _anchor(host):
                    continue  # the host's own address: not a flow between nodes
                target = published.get((host, port.split(":")[0]), _anchor(host))
                graph.links.add(Link(origin, target, port.replace(":", "-"), waiver or ""))
        nginx = aliases.get((host, "nginx"))
        for alias, port in re.findall(r"set \$upstream_\w+ ([a-z0-9-]+):(\d+);", text):
            target = aliases.get((host, alias))
            if nginx and target:
                graph.links.add(Link(nginx, target, port))
    for db_firewall in (r for r in mine if r["type"] == DB_FIREWALL):
        clusters = [state.by_urn[u] for u in db_firewall["dependencies"]
                    if u in state.by_urn and state.by_urn[u]["type"] == CLUSTER]
        clients = []
        for urn in db_firewall["dependencies"]:
            item = state.by_urn.get(urn)
            if item and item["type"] == DROPLET and item["name"] in host_of_droplet:
                clients.append(_anchor(host_of_droplet[item["name"]]))
            elif item and item["type"] == APP and urn in apps:
                clients.append(apps[urn])
        for cluster in clusters:
            port = ENGINE_PORTS.get(str(cluster["inputs"].get("engine")), "db")
            for client in clients:
                graph.links.add(Link(client, cluster["name"], port))
    for app in (r for r in mine if r["type"] == APP and r["urn"] in apps):
        text = str(app["inputs"].get("spec"))
        for bucket in (r for r in mine if r["type"] == "digitalocean:index/spacesBucket:SpacesBucket"):
            if str(bucket["inputs"].get("name")) in text:
                graph.links.add(Link(apps[app["urn"]], bucket["name"], "443 s3"))
    for backup in (r for r in mine if r["type"] == "platform:components:R2Backup"):
        children = state.children(backup)
        install = next((c for c in children if c["type"] == COMMAND and c["name"].endswith("-install")), None)
        runner = _group_of(state, install) if install else None
        if runner and any(c["type"] == R2 for c in children):
            graph.links.add(Link(_anchor(runner), R2_NODE, "443 backup"))
    graph.ranks.update({INTERNET: 0, ADMINS: 0, R2_NODE: 4})
    graph.links = {l for l in graph.links if l.source != l.target
                   and l.source in graph.nodes and l.target in graph.nodes}
    return graph


def _port_key(label: str) -> tuple:
    number = re.match(r"\d+", label)
    return (int(number.group()) if number else 1 << 20, label)


@dataclass(frozen=True)
class Drawn:
    """An edge as drawn: links from one source into another host's group become one edge to the
    group (``group`` set) carrying every port, so a host's services do not each get a line."""

    source: str
    target: str
    label: str
    waiver: str
    group: str
    kind: str = ""
    """Observed edges only (``observed_edges``): ``open``, ``unexpected`` or ``missing``."""


def drawn_edges(graph: Graph) -> list[Drawn]:
    """Links from one source into another group reaching several of its nodes become one edge
    to the group; a single target keeps its own edge. Labels of merged links are joined."""
    buckets: dict[tuple[str, str, str], list[Link]] = {}
    for link in graph.links:
        source_group, target_group = graph.nodes[link.source][1], graph.nodes[link.target][1]
        into = target_group if target_group and target_group != source_group and not link.waiver else ""
        buckets.setdefault((link.source, into or link.target, link.waiver), []).append(link)
    edges = []
    for (source, into, waiver), links in buckets.items():
        labels = ", ".join(sorted({l.label for l in links}, key=_port_key))
        targets = {l.target for l in links}
        if into in graph.groups and len(targets) > 1:
            members = sorted(n for n, (_, g, _) in graph.nodes.items() if g == into)
            target = _anchor(into) if _anchor(into) in graph.nodes else members[0]
            edges.append(Drawn(source, target, labels, waiver, into))
        else:
            edges.append(Drawn(source, targets.pop(), labels, waiver, ""))
    return sorted(edges, key=lambda e: (e.source, e.group, e.target, e.waiver))


def _group_of(state: State, resource: dict[str, Any]) -> str | None:
    """The host component a resource runs on: its parent chain, or the host its commands reach."""
    current = state.by_urn.get(resource.get("parent") or "")
    while current is not None:
        if current["type"] in GROUPS:
            return current["name"]
        current = state.by_urn.get(current.get("parent") or "")
    droplet = droplet_of(state, resource)
    if droplet is None:
        return None
    item = next((r for r in state.resources if r["name"] == droplet), None)
    parent = state.by_urn.get((item or {}).get("parent") or "")
    return parent["name"] if parent and parent["type"] in GROUPS else droplet


def _id(name: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def _quote(text: str) -> str:
    """A dot string body: quotes escaped, line breaks as dot's centred ``\\n``."""
    return text.replace('"', '\\"').replace("\n", "\\n")


def _html(text: str) -> str:
    """A Mermaid label body: quotes as entities, line breaks as <br>."""
    return text.replace('"', "#quot;").replace("\n", "<br>")


def dot(state: State, product: str) -> str:
    """Graphviz source of one product's diagram."""
    graph = product_graph(state, product)
    return _dot(graph, f'{product} ({state.document.get("stack", "")})', drawn_edges(graph))


def _dot(graph: Graph, title: str, edges: list[Drawn]) -> str:
    lines = [f'digraph "{_quote(graph.product)}" {{', "  rankdir=LR; compound=true; newrank=true; nodesep=0.25; ranksep=1.1;",
             f'  label="{_quote(title)}"; labelloc=t; fontname="Helvetica"; fontsize=18;',
             '  node [shape=box, style="rounded,filled", fillcolor="#f7f7f7", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=10, color="#555555"];']
    for group, label in sorted(graph.groups.items()):
        lines.append(f'  subgraph "cluster_{_id(group)}" {{ label="{_quote(label)}"; style="rounded"; color="#8899aa"; bgcolor="#eef3f8"; labelloc=b;')
        for node, (text, owner, shape) in sorted(graph.nodes.items()):
            if owner == group:
                lines.append(f'    {_id(node)} [label="{_quote(text)}", shape={shape}];')
        lines.append("  }")
    for node, (text, owner, shape) in sorted(graph.nodes.items()):
        if not owner:
            fill = "#fff4d6" if shape == "ellipse" else "#e8f4e8"
            lines.append(f'  {_id(node)} [label="{_quote(text)}", shape={shape}, fillcolor="{fill}"];')
    # Columns, left to right: outside, then per host rank (edge, app, data) the host itself and
    # the containers others enter through, then the rest of its containers, then backups.
    entries = {l.source for l in graph.links if graph.nodes[l.source][1]
               and graph.nodes[l.source][1] == graph.nodes[l.target][1]}
    columns: dict[int, list[str]] = {}
    for node, (_, group, _) in sorted(graph.nodes.items()):
        inner = 1 if group and node != _anchor(group) and node not in entries else 0
        columns.setdefault(2 * graph.rank(node) + inner, []).append(node)
    for column in sorted(columns):
        lines.append("  { rank=same; " + " ".join(_id(n) + ";" for n in columns[column]) + " }")
    order = sorted(columns)
    lines += [f"  {_id(columns[a][0])} -> {_id(columns[b][0])} [style=invis];" for a, b in zip(order, order[1:])]
    for edge in edges:
        source, target = _id(edge.source), _id(edge.target)
        attributes = [f'label="{_quote(edge.label)}' + (f'\\nwaiver: {edge.waiver}"' if edge.waiver else '"')]
        if edge.group:
            attributes.append(f'lhead="cluster_{_id(edge.group)}"')
        if graph.rank(edge.source) > graph.rank(edge.target):
            # Drawn forward, arrow reversed: a reply-direction flow (to the proxy) keeps the
            # left-to-right layout and its label next to its line.
            source, target = target, source
            attributes = [a.replace("lhead=", "ltail=") for a in attributes] + ["dir=back"]
        if edge.waiver:
            attributes.append('color="#c0392b", fontcolor="#c0392b", style=dashed, penwidth=1.6')
        if edge.kind in OBSERVED_STYLE:
            # The columns come from the planned layout: an observed flow (a missing one may run
            # backwards, into its own group) must not rank nodes, or dot finds no ranking
            # ("trouble in init_rank", seen on a real rehearsal's matrix).
            attributes += [OBSERVED_STYLE[edge.kind][0], "constraint=false"]
        lines.append(f"  {source} -> {target} [{', '.join(attributes)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid(state: State, product: str) -> str:
    """Mermaid source of one product's diagram (for the Markdown summary)."""
    graph = product_graph(state, product)
    return _mermaid(graph, drawn_edges(graph))


def _mermaid(graph: Graph, edges: list[Drawn]) -> str:
    lines = ["flowchart LR"]
    for group, label in sorted(graph.groups.items()):
        lines.append(f'  subgraph {_id(group)}["{_html(label)}"]')
        lines += [f'    {_id(n)}["{_html(t)}"]' for n, (t, g, _) in sorted(graph.nodes.items()) if g == group]
        lines.append("  end")
    for node, (text, owner, shape) in sorted(graph.nodes.items()):
        if not owner:
            text = _html(text)
            lines.append(f'  {_id(node)}(("{text}"))' if shape == "ellipse" else f'  {_id(node)}[("{text}")]')
    styles = []
    for index, edge in enumerate(edges):
        target = _id(edge.group) if edge.group else _id(edge.target)
        label = _html(edge.label)
        if edge.waiver:
            lines.append(f'  {_id(edge.source)} -.->|"{label} waiver: {edge.waiver}"| {target}')
        elif edge.kind == "missing":
            lines.append(f'  {_id(edge.source)} -.->|"{label}"| {target}')
        else:
            lines.append(f'  {_id(edge.source)} -->|"{label}"| {target}')
        if edge.kind in OBSERVED_STYLE:
            styles.append(f"  linkStyle {index} {OBSERVED_STYLE[edge.kind][1]}")
    return "\n".join(lines + styles) + "\n"


# --- observed: the rehearsal's reachability matrix (issue #16) -----------------------------------

NEIGHBOUR = "neighbour"
OBSERVED_KINDS = ("open", "unexpected", "missing")
OBSERVED_STYLE = {
    "open": ('color="#2e7d32", fontcolor="#2e7d32"', "stroke:#2e7d32"),
    "unexpected": ('color="#c0392b", fontcolor="#c0392b", penwidth=2.2', "stroke:#c0392b,stroke-width:2.5px"),
    "missing": ('color="#e67e22", fontcolor="#e67e22", style=dashed, penwidth=1.6',
                "stroke:#e67e22,stroke-dasharray:4"),
}
"""Edge kind -> (Graphviz attributes, Mermaid ``linkStyle``): observed open as planned (green),
open although refused (red, thick), refused although allowed (orange, dashed)."""
OBSERVED_TITLE = {"open": "open", "unexpected": "open, not planned", "missing": "planned, closed"}
CELL_KEYS = ("position", "host", "side", "port", "expected", "observed", "status")


class ObservedReportError(ValueError):
    """A rehearsal report without a readable reachability matrix (the message says what is wrong)."""


def reachability_cells(report: Any) -> list[dict]:
    """The matrix cells of a rehearsal report (``python -m synth rehearse STACK --json PATH``):
    its ``reachability.cells``, each with at least ``CELL_KEYS``. Raises ObservedReportError
    naming the first thing missing."""
    matrix = report.get("reachability") if isinstance(report, dict) else None
    cells = matrix.get("cells") if isinstance(matrix, dict) else None
    if not isinstance(cells, list):
        raise ObservedReportError("it has no reachability.cells: write one with "
                                  "`python -m synth rehearse STACK --json PATH`")
    for index, cell in enumerate(cells):
        missing = [k for k in CELL_KEYS if not isinstance(cell, dict) or k not in cell]
        if missing:
            raise ObservedReportError(f"reachability.cells[{index}] lacks {', '.join(missing)}")
        if cell["status"] not in ("pass", "fail", "not proven"):
            raise ObservedReportError(f"reachability.cells[{index}].status is {cell['status']!r}, "
                                      "not pass, fail or not proven")
    return cells


def _containers_node(host: str) -> str:
    return f"{host}::containers"


def _position_node(graph: Graph, position: str) -> str | None:
    """The node a probe position stands on: the internet, the admin CIDRs, the neighbour on the
    segment, a host itself, or a container of a host's bridge (added to its group)."""
    if position == "internet":
        return INTERNET
    if position == "admin":
        return ADMINS
    if position == NEIGHBOUR:
        graph.nodes.setdefault(NEIGHBOUR, ("neighbour on the segment\nroutes the container subnets", "", "ellipse"))
        graph.ranks.setdefault(NEIGHBOUR, 0)
        return NEIGHBOUR
    kind, _, host = position.partition(":")
    if host not in graph.groups:
        return None
    if kind == "host":
        return _anchor(host)
    if kind == "containers":
        graph.nodes.setdefault(_containers_node(host), ("a container of its bridge\n(probe)", host, "box"))
        return _containers_node(host)
    return None


def _target_node(graph: Graph, cell: dict) -> tuple[str, str]:
    """(node, port label) of a cell's target: the container behind a published port or its own
    address, the host itself (sshd), the web, or a direct route."""
    host, side, port = str(cell["host"]), str(cell["side"]), str(cell["port"])
    service = str(cell.get("service") or "")
    if side == "internet":
        return INTERNET, f"{port} web"
    if side.startswith("direct:"):
        route = side.removeprefix("direct:")
        node = f"direct::{route}"
        graph.nodes.setdefault(node, (f"{route}\ndirect route", "", "ellipse"))
        graph.ranks.setdefault(node, 4)
        return node, port
    target = service if service in graph.nodes and graph.nodes[service][1] == host else _anchor(host)
    return target, f"{port} own address" if side == "container" else port


def observed_graph(state: State, product: str, cells: list[dict]) -> tuple[Graph, list[Drawn], dict[str, int]]:
    """One product's diagram as the rehearsal observed it: the planned diagram's groups and
    nodes (plus the probe positions it lacks: the neighbour, a container of each bridge, the
    direct routes) with one edge per (position, target, kind) of the matrix ``cells``
    (``reachability_cells``): ``open`` ports observed open as planned, ``unexpected`` ones open
    although the tier model refuses them, ``missing`` ones refused although it allows them.
    Cells whose target is another product's host are left out; a refused cell observed refused
    draws nothing. Returns (graph, edges, counts of the product's cells by status)."""
    planned = product_graph(state, product)
    graph = Graph(product, dict(planned.groups), dict(planned.nodes), set(), dict(planned.ranks))
    counts = {"pass": 0, "fail": 0, "not proven": 0}
    flows: dict[tuple[str, str, str], set[str]] = {}
    for cell in cells:
        if str(cell["host"]) not in planned.groups:
            continue
        source = _position_node(graph, str(cell["position"]))
        if source is None:
            continue
        counts[cell["status"]] += 1
        target, label = _target_node(graph, cell)
        if cell["status"] == "fail":
            kind = "unexpected" if cell["observed"] == "open" else "missing"
        elif cell["status"] == "pass" and cell["observed"] == "open":
            kind = "open"
        else:
            continue
        flows.setdefault((source, target, kind), set()).add(label)
        if graph.nodes[source][1] and graph.nodes[source][1] == graph.nodes[target][1]:
            # A flow inside one host: its source takes the host's entry column, as in the planned
            # layout (in the containers' own column dot finds no ranking: "trouble in init_rank").
            graph.links.add(Link(source, target, label))
    # Into another host's group: one edge per (source, group, kind), as the planned diagram does.
    merged: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    for (source, target, kind), labels in flows.items():
        group = graph.nodes[target][1]
        into = group if group and group != graph.nodes[source][1] else ""
        bucket = merged.setdefault((source, into or target, kind), {})
        bucket.setdefault(target, set()).update(labels)
    edges = []
    for (source, into, kind), by_target in sorted(merged.items()):
        labels = sorted({l for ls in by_target.values() for l in ls}, key=_port_key)
        text = f"{OBSERVED_TITLE[kind]}: {', '.join(labels)}"
        if into in graph.groups and len(by_target) > 1:
            edges.append(Drawn(source, _anchor(into), text, "", into, kind))
        else:
            edges.append(Drawn(source, next(iter(by_target)), text, "", "", kind))
    return graph, edges, counts


def _observed_title(product: str, stack: str, counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return (f"{product} ({stack}) observed by the rehearsal: {counts['pass']} of {total} cells as planned, "
            f"{counts['fail']} not, {counts['not proven']} not proven")


def dot_observed(state: State, product: str, cells: list[dict]) -> str:
    """Graphviz source of one product's observed diagram (``observed_graph``)."""
    graph, edges, counts = observed_graph(state, product, cells)
    return _dot(graph, _observed_title(product, str(state.document.get("stack", "")), counts), edges)


def mermaid_observed(state: State, product: str, cells: list[dict]) -> str:
    """Mermaid source of one product's observed diagram, with its counts as a comment line."""
    graph, edges, counts = observed_graph(state, product, cells)
    title = _observed_title(product, str(state.document.get("stack", "")), counts)
    return _mermaid(graph, edges).replace("flowchart LR\n", f"flowchart LR\n  %% {title}\n", 1)


class GraphvizMissing(RuntimeError):
    """``dot`` is not installed."""


def render(state: State, product: str, fmt: str = "svg", source: str | None = None) -> bytes:
    """One product's diagram rendered by Graphviz ``dot`` (``svg``, ``png``...); ``source``: other
    dot source to render (the observed diagram) instead of the planned one."""
    binary = shutil.which("dot")
    if binary is None:
        raise GraphvizMissing("Graphviz `dot` is not installed (Debian package graphviz; "
                              "`apt-get install graphviz`); omit --diagram-svg to synth without it")
    text = source if source is not None else dot(state, product)
    result = subprocess.run([binary, f"-T{fmt}"], input=text.encode(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"dot failed on the {product} diagram: {result.stderr.decode().strip()}")
    return result.stdout


def write_svg(state: State, path: Path, observed: list[dict] | None = None) -> list[Path]:
    """One SVG per product: ``path`` with ``-<product>`` before its suffix; with ``observed`` (a
    rehearsal's matrix cells, ``reachability_cells``) a second one beside it,
    ``-<product>-observed``, for each product the matrix has cells of. Raises GraphvizMissing."""
    written = []
    for product in products(state):
        target = path.with_name(f"{path.stem}-{product}{path.suffix or '.svg'}")
        target.write_bytes(render(state, product, "svg"))
        written.append(target)
        if observed is not None and any(str(c["host"]) in product_graph(state, product).groups for c in observed):
            beside = path.with_name(f"{path.stem}-{product}-observed{path.suffix or '.svg'}")
            beside.write_bytes(render(state, product, "svg", dot_observed(state, product, observed)))
            written.append(beside)
    return written
