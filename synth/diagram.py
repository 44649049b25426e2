"""Diagrams of a desired state, drawn from the capture (not from config), so they show what will
be deployed: each product's graph (``synth/diagram_graph.py``) and, beside it, the flows a
rehearsal observed (``synth/diagram_observed.py``), as Graphviz and Mermaid source and as SVG.

- the tier view (``nodes``, ``flows``) is ``synth/flows.py``;
- ``dot``, ``mermaid``: the planned diagram. Hosts are Graphviz clusters (Mermaid subgraphs);
  edges carry ports; waivers are dashed red edges named after the waiver.
- ``dot_observed``, ``mermaid_observed``: the observed diagram, from a rehearsal report's
  matrix cells (``reachability_cells``): edges observed open as planned (green), open although
  the tier model refuses them (red), and refused although it allows them (orange, dashed).
- ``write_svg``: both rendered by Graphviz ``dot``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from synth.diagram_graph import Drawn, Graph, anchor, drawn_edges, product_graph, products
from synth.diagram_observed import observed_graph, observed_title
from synth.state import State

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
        inner = 1 if group and node != anchor(group) and node not in entries else 0
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


OBSERVED_STYLE = {
    "open": ('color="#2e7d32", fontcolor="#2e7d32"', "stroke:#2e7d32"),
    "unexpected": ('color="#c0392b", fontcolor="#c0392b", penwidth=2.2', "stroke:#c0392b,stroke-width:2.5px"),
    "missing": ('color="#e67e22", fontcolor="#e67e22", style=dashed, penwidth=1.6',
                "stroke:#e67e22,stroke-dasharray:4"),
}
"""Edge kind -> (Graphviz attributes, Mermaid ``linkStyle``): observed open as planned (green),
open although refused (red, thick), refused although allowed (orange, dashed)."""

# --- the observed input: a rehearsal report's reachability matrix -----------------------------

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
def dot_observed(state: State, product: str, cells: list[dict]) -> str:
    """Graphviz source of one product's observed diagram (``observed_graph``)."""
    graph, edges, counts = observed_graph(state, product, cells)
    return _dot(graph, observed_title(product, str(state.document.get("stack", "")), counts), edges)


def mermaid_observed(state: State, product: str, cells: list[dict]) -> str:
    """Mermaid source of one product's observed diagram, with its counts as a comment line."""
    graph, edges, counts = observed_graph(state, product, cells)
    title = observed_title(product, str(state.document.get("stack", "")), counts)
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
