"""Monthly cost estimate of a desired state, from the dated price table in pricing/prices.json."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.summary import product_of

PRICES = Path(__file__).resolve().parent.parent / "pricing" / "prices.json"


@dataclass(frozen=True)
class Line:
    product: str
    resource: str
    item: str
    monthly: float


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
    """Priced lines, and the resources whose size is missing from the table (never priced 0)."""
    by_urn = {r["urn"]: r for r in state.get("resources", [])}
    lines: list[Line] = []
    unpriced: list[str] = []
    spaces_counted = False

    def price(resource, kind, sku, quantity=1.0, item=None):
        row = prices.get(kind, sku)
        if row is None:
            unpriced.append(f"{resource['name']}: no {kind} price for {sku}")
            return
        lines.append(Line(product_of(resource, by_urn), resource["name"], item or f"{kind} {sku} x{quantity:g}",
                          round(row["monthly"] * quantity, 4)))

    for r in state.get("resources", []):
        inputs, type_ = r.get("inputs", {}), r["type"]
        if type_ == "digitalocean:index/droplet:Droplet":
            price(r, "droplet", inputs.get("size"))
            if inputs.get("backups"):
                plan = (inputs.get("backupPolicy") or {}).get("plan", "weekly")
                base, fraction = prices.get("droplet", inputs.get("size")), prices.get("droplet-backups", plan)
                if base and fraction:
                    lines.append(Line(product_of(r, by_urn), r["name"], f"{plan} backups",
                                      round(base["monthly"] * fraction["monthly_fraction"], 4)))
        elif type_ == "digitalocean:index/databaseCluster:DatabaseCluster":
            price(r, "database-node", inputs.get("size"), float(inputs.get("nodeCount", 1)))
        elif type_ == "digitalocean:index/app:App":
            spec = inputs.get("spec") if isinstance(inputs.get("spec"), dict) else {}
            for kind in ("services", "workers"):
                for component in spec.get(kind) or []:
                    count = component.get("instanceCount") or (component.get("autoscaling") or {}).get("minInstanceCount") or 1
                    price(r, "app-instance", component.get("instanceSizeSlug", "apps-s-1vcpu-0.5gb"), float(count),
                          item=f"{component['name']} {component.get('instanceSizeSlug')} x{count}")
            sites = len(spec.get("staticSites") or [])
            row = prices.get("app-static-site", "beyond-free")
            if sites and row:
                extra = max(0, sites - row["free_per_app"])
                lines.append(Line(product_of(r, by_urn), r["name"], f"{sites} static sites", extra * row["monthly"]))
        elif type_ == "digitalocean:index/spacesBucket:SpacesBucket" and not spaces_counted:
            spaces_counted = True
            price(r, "spaces", "subscription")
        elif type_ == "digitalocean:index/reservedIp:ReservedIp":
            price(r, "reserved-ip", "assigned")
        elif type_ == "digitalocean:index/loadBalancer:LoadBalancer":
            price(r, "load-balancer", "node", float(inputs.get("sizeUnit", 1)))
        elif type_ == "cloudflare:index/r2Bucket:R2Bucket":
            row = prices.get("r2-storage", "gb-month")
            if row:
                gb = row["assumed_gb_per_bucket"]
                lines.append(Line(product_of(r, by_urn), r["name"], f"R2 storage, {gb} GB assumed",
                                  round(gb * row["monthly"], 4)))
    return lines, unpriced


def totals(lines: list[Line]) -> dict[str, float]:
    per_product: dict[str, float] = defaultdict(float)
    for line in lines:
        per_product[line.product] += line.monthly
    return {k: round(v, 2) for k, v in sorted(per_product.items())}


def cost_markdown(state: dict[str, Any], prices: PriceTable) -> list[str]:
    lines, unpriced = estimate(state, prices)
    per_product = totals(lines)
    out = [f"**Monthly cost estimate** ({prices.currency}, list prices from `pricing/prices.json`):", "",
           "| product | per month |", "|---|---:|"]
    out += [f"| {product} | {amount:,.2f} |" for product, amount in per_product.items()]
    out.append(f"| **stack total** | **{sum(per_product.values()):,.2f}** |")
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
    return rows
