"""One product's diagram as a rehearsal observed it (issue #16): the planned diagram's groups and
nodes with the flows of the reachability matrix (``python -m synth rehearse --json``) instead of
the planned ones: per probe position and target, the ports observed open as planned
(``open``), open although the tier model refuses them (``unexpected``), and refused although it
allows them (``missing``). ``synth/diagram.py`` draws it beside the planned diagram.
"""

from __future__ import annotations

from synth.diagram_graph import Drawn, Graph, Link, anchor, port_key, product_graph
from synth.flows import ADMINS, INTERNET
from synth.state import State

NEIGHBOUR = "neighbour"
OBSERVED_KINDS = ("open", "unexpected", "missing")
OBSERVED_TITLE = {"open": "open", "unexpected": "open, not planned", "missing": "planned, closed"}


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
        return anchor(host)
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
    target = service if service in graph.nodes and graph.nodes[service][1] == host else anchor(host)
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
        labels = sorted({l for ls in by_target.values() for l in ls}, key=port_key)
        text = f"{OBSERVED_TITLE[kind]}: {', '.join(labels)}"
        if into in graph.groups and len(by_target) > 1:
            edges.append(Drawn(source, anchor(into), text, "", into, kind))
        else:
            edges.append(Drawn(source, next(iter(by_target)), text, "", "", kind))
    return graph, edges, counts


def observed_title(product: str, stack: str, counts: dict[str, int]) -> str:
    """The observed diagram's title: how many of the product's cells were as planned."""
    total = sum(counts.values())
    return (f"{product} ({stack}) observed by the rehearsal: {counts['pass']} of {total} cells as planned, "
            f"{counts['fail']} not, {counts['not proven']} not proven")


