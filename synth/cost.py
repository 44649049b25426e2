"""Monthly cost estimate of a desired state, from the dated price table in pricing/prices.json.

Line items per product: the resource, what is priced (its size), the unit price, the count and
the monthly amount, with the source page and date of the price row. On-prem hosts are owned:
listed, never priced. A size missing from the table is listed as unpriced, never priced 0.

A managed database cluster (``nodeCount`` nodes) is one primary node plus ``nodeCount - 1``
standby nodes, each priced from its own row: the primary from ``database-node``, each standby
from ``database-standby-node``. What DigitalOcean's documentation says about standby nodes, read
on 2026-11-30 and recorded in each standby row's ``checked``:

- https://docs.digitalocean.com/glossary/standby/ : standby nodes are only supported for plans
  with 2 GB of RAM or more; a cluster has at most two (Caching: one,
  https://docs.digitalocean.com/products/databases/redis/how-to/add-standby-nodes); "adding
  standby nodes is optional to cluster configuration and can affect the monthly cost".
- https://docs.digitalocean.com/products/databases/ : clusters may have zero, one or two standby
  nodes; the smallest single-node plan takes none.
- https://docs.digitalocean.com/products/databases/postgresql/how-to/add-standby-nodes : how to
  add them; no amount.

None of them gives a standby node's price. So the amount is the per-node price transcribed from
https://www.digitalocean.com/pricing/managed-databases on the row's ``as_of`` (the pricing page
lists a plan's price by node count), a 1 GB plan has no standby row (a standby on it is
listed as unpriced), and every standby line, in the cost report and in the diff's cost delta,
says that the docs did not confirm the amount (``price_confirmed: false``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.state import product_of

PRICES = Path(__file__).resolve().parent.parent / "pricing" / "prices.json"
ONPREM = "platform:components:OnPremVps"


@dataclass(frozen=True)
class Line:
    """One line item. ``unit`` is None for what is owned (on-prem hosts): no price."""

    product: str
    resource: str
    item: str
    size: str
    unit: float | None
    count: float
    source: str = ""
    as_of: str = ""
    # When the provider's documentation was checked and did not confirm the amount (the row's
    # ``checked``: date and finding), the date of that check: the comment says so.
    unconfirmed_on: str = ""

    @property
    def monthly(self) -> float:
        return round((self.unit or 0.0) * self.count, 4)


class PriceTable:
    def __init__(self, document: dict[str, Any]):
        self.currency = document.get("currency", "USD")
        self.rows = {(r["kind"], r["sku"]): r for r in document["rows"]}

    @classmethod
    def load(cls, path: Path = PRICES) -> "PriceTable":
        return cls(json.loads(path.read_text()))

    def get(self, kind: str, sku: str) -> dict[str, Any] | None:
        return self.rows.get((kind, sku))


def estimate(state: dict[str, Any], prices: PriceTable) -> tuple[list[Line], list[str]]:
    """Line items, and the resources whose size is missing from the table (never priced 0)."""
    by_urn = {r["urn"]: r for r in state.get("resources", [])}
    lines: list[Line] = []
    unpriced: list[str] = []
    spaces_counted = False

    def price(resource, kind, sku, count=1.0, item=None, unit_key="monthly", base=None):
        row = prices.get(kind, sku)
        if row is None:
            unpriced.append(f"{resource['name']}: no {kind} price for {sku}")
            return
        unit = row[unit_key] if base is None else round(base * row[unit_key], 4)
        checked = row.get("checked") or {}
        lines.append(Line(product_of(resource, by_urn), resource["name"], item or kind, str(sku),
                          unit, float(count), row.get("source", ""), row.get("as_of", ""),
                          "" if checked.get("price_confirmed", True) else checked.get("date", "?")))

    for r in state.get("resources", []):
        inputs, type_ = r.get("inputs", {}), r["type"]
        if type_ == "digitalocean:index/droplet:Droplet":
            size = inputs.get("size")
            price(r, "droplet", size, item="droplet")
            if inputs.get("backups"):
                plan = (inputs.get("backupPolicy") or {}).get("plan", "weekly")
                base = prices.get("droplet", size)
                if base and prices.get("droplet-backups", plan):
                    price(r, "droplet-backups", plan, item=f"{plan} backups of {size}",
                          unit_key="monthly_fraction", base=base["monthly"])
        elif type_ == "digitalocean:index/databaseCluster:DatabaseCluster":
            size, nodes = inputs.get("size"), int(inputs.get("nodeCount") or 1)
            engine = inputs.get("engine", "database")
            price(r, "database-node", size, item=f"{engine} primary node")
            if nodes > 1:
                price(r, "database-standby-node", size, nodes - 1, item=f"{engine} standby node")
        elif type_ == "digitalocean:index/app:App":
            spec = inputs.get("spec") if isinstance(inputs.get("spec"), dict) else {}
            for kind in ("services", "workers"):
                for component in spec.get(kind) or []:
                    count = (component.get("instanceCount")
                             or (component.get("autoscaling") or {}).get("minInstanceCount") or 1)
                    price(r, "app-instance", component.get("instanceSizeSlug", "apps-s-1vcpu-0.5gb"),
                          count, item=f"{component['name']} instance")
            sites = len(spec.get("staticSites") or [])
            row = prices.get("app-static-site", "beyond-free")
            if sites and row:
                lines.append(Line(product_of(r, by_urn), r["name"],
                                  f"static sites beyond {row['free_per_app']} free", "static site",
                                  row["monthly"], float(max(0, sites - row["free_per_app"])),
                                  row.get("source", ""), row.get("as_of", "")))
        elif type_ == "digitalocean:index/spacesBucket:SpacesBucket" and not spaces_counted:
            spaces_counted = True
            price(r, "spaces", "subscription", item="Spaces subscription (one per account)")
        elif type_ == "digitalocean:index/reservedIp:ReservedIp":
            price(r, "reserved-ip", "assigned", item="reserved IP")
        elif type_ == "digitalocean:index/loadBalancer:LoadBalancer":
            price(r, "load-balancer", "node", float(inputs.get("sizeUnit", 1)), item="load balancer node")
        elif type_ == "cloudflare:index/r2Bucket:R2Bucket":
            row = prices.get("r2-storage", "gb-month")
            if row:
                lines.append(Line(product_of(r, by_urn), r["name"], "R2 storage (GB assumed per bucket)",
                                  "GB-month", row["monthly"], float(row["assumed_gb_per_bucket"]),
                                  row.get("source", ""), row.get("as_of", "")))
        elif type_ == ONPREM:
            lines.append(Line(product_of(r, by_urn), r["name"], "on-prem host (owned)",
                              f"{inputs.get('tier', '?')} tier", None, 1.0))
    return lines, unpriced


def totals(lines: list[Line]) -> dict[str, float]:
    per_product: dict[str, float] = defaultdict(float)
    for line in lines:
        per_product[line.product] += line.monthly
    return {k: round(v, 2) for k, v in sorted(per_product.items())}


def _money(value: float | None) -> str:
    if value is None:
        return "owned"
    return f"{value:,.2f}" if value == 0 or abs(value) >= 0.1 else f"{value:g}"


def cost_markdown(state: dict[str, Any], prices: PriceTable) -> list[str]:
    lines, unpriced = estimate(state, prices)
    per_product = totals(lines)
    out = [f"## Monthly cost estimate ({prices.currency})", "",
           "List prices from `pricing/prices.json`; each row names its source and the date it was "
           "transcribed. Verify before budgeting.", ""]
    for product in per_product:
        out += [f"### {product}: {per_product[product]:,.2f} per month", "",
                "| resource | item | size | unit price | count | per month | price source |",
                "|---|---|---|---:|---:|---:|---|"]
        for line in (l for l in lines if l.product == product):
            source = f"[{line.as_of}]({line.source})" if line.source else "not priced"
            if line.unconfirmed_on:
                source += f" (amount not confirmed by the provider's docs on {line.unconfirmed_on})"
            out.append(f"| `{line.resource}` | {line.item} | `{line.size}` | {_money(line.unit)} | "
                       f"{line.count:g} | {_money(None if line.unit is None else line.monthly)} | {source} |")
        out.append("")
    out.append(f"**Stack total: {sum(per_product.values()):,.2f} {prices.currency} per month**"
               " (owned on-prem hosts not included).")
    out += [f"- unpriced: {u}" for u in unpriced]
    return out


def delta_markdown(base: dict[str, Any], head: dict[str, Any], prices: PriceTable) -> list[str]:
    before, after = totals(estimate(base, prices)[0]), totals(estimate(head, prices)[0])
    rows = ["**Monthly cost** (list prices):", "", "| product | base | head | delta |", "|---|---:|---:|---:|"]
    for product in sorted(set(before) | set(after)):
        a, b = before.get(product, 0.0), after.get(product, 0.0)
        rows.append(f"| {product} | {a:,.2f} | {b:,.2f} | {b - a:+,.2f} |")
    a, b = sum(before.values()), sum(after.values())
    rows.append(f"| **total** | **{a:,.2f}** | **{b:,.2f}** | **{b - a:+,.2f}** |")
    return rows + unconfirmed_notes(estimate(base, prices)[0] + estimate(head, prices)[0])


def unconfirmed_notes(lines: list[Line]) -> list[str]:
    """One note per priced item whose amount the provider's docs did not confirm (standby
    nodes): what is assumed, and when the docs were checked."""
    seen: dict[tuple[str, str], set[str]] = {}
    for line in lines:
        if line.unconfirmed_on:
            seen.setdefault((line.item, line.unconfirmed_on), set()).add(line.size)
    return ["", *(f"- {item} (`{'`, `'.join(sorted(sizes))}`): priced at the plan's per-node list price; "
                  f"DigitalOcean's documentation says standby nodes \"can affect the monthly cost\" but gives "
                  f"no amount (checked {date}: https://docs.digitalocean.com/glossary/standby/)"
                  for (item, date), sizes in sorted(seen.items()))] if seen else []
