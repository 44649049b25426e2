"""Human-readable views of a capture: the per-product table on stdout and the Markdown report."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

PRODUCT_TYPE_PREFIX = "platform:products:"


def product_of(resource: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> str:
    """The product a resource belongs to: the product component at the top of its parent chain."""
    current = resource
    while current is not None:
        if current["type"].startswith(PRODUCT_TYPE_PREFIX):
            return current["name"]
        current = by_urn.get(current.get("parent") or "")
    return "(stack)"


def counts_by_product(state: dict[str, Any]) -> dict[str, Counter]:
    by_urn = {r["urn"]: r for r in state["resources"]}
    table: dict[str, Counter] = defaultdict(Counter)
    for resource in state["resources"]:
        table[product_of(resource, by_urn)][resource["type"]] += 1
    return dict(table)


def text_table(state: dict[str, Any]) -> str:
    table = counts_by_product(state)
    lines = [f"stack {state['stack']}: {len(state['resources'])} resources"]
    for product in sorted(table):
        custom = sum(n for t, n in table[product].items() if not t.startswith("platform:"))
        lines.append(f"  {product:<12} {custom:>4} cloud resources, "
                     f"{sum(table[product].values()) - custom} components")
    from synth.cost import PriceTable, estimate, totals

    monthly = totals(estimate(state, PriceTable.load())[0])
    if monthly:
        lines.append("  monthly estimate (list prices): " + ", ".join(
            f"{p} {v:,.2f}" for p, v in monthly.items()) + f"; total {sum(monthly.values()):,.2f} USD")
    if state.get("secret_placeholders"):
        lines.append("  secrets not in the stack file, filled with placeholders: "
                     + ", ".join(state["secret_placeholders"]))
    return "\n".join(lines)


def markdown(state: dict[str, Any]) -> str:
    table = counts_by_product(state)
    out = [f"# Desired state of stack `{state['stack']}`", "",
           f"{len(state['resources'])} resources.", ""]
    for product in sorted(table):
        out += [f"## {product}", "", "| type | count |", "|---|---:|"]
        for type_, count in sorted(table[product].items()):
            out.append(f"| `{type_}` | {count} |")
        out.append("")
    from synth.cost import PriceTable, cost_markdown
    from synth.diagram import mermaid
    from synth.state import State

    out += cost_markdown(state, PriceTable.load()) + [""]
    out += ["## Tiers", "", "```mermaid", mermaid(State(state)).rstrip(), "```", ""]
    if state.get("violations") is not None:
        out += ["## Policy", ""]
        if not state["violations"]:
            out.append("No violations.")
        for v in state["violations"]:
            out.append(f"- **{v['level']}** `{v['policy']}` on `{v['urn']}`: {v['message']}")
        out.append("")
    return "\n".join(out)
