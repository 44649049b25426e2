"""Human-readable views of a capture: the per-product table on stdout and the Markdown report.

The report shows, per product: each host with its size and image, each service with its image
and hostnames, each datastore with engine, version, size and RPO, the cost line items, the tier
diagram, and the stack's outputs that are not secret.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

from synth.cost import PriceTable, cost_markdown, estimate, totals
from synth.diagram import mermaid, mermaid_observed
from synth.diagram_graph import products
from synth.diagram_observed import observed_graph
from synth.state import State, product_of

DROPLET = "digitalocean:index/droplet:Droplet"
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/remoteImage:RemoteImage"
APP = "digitalocean:index/app:App"
ONPREM = "platform:components:OnPremVps"
HOSTS = ("platform:components:DropletStack", ONPREM)
BACKUP = "platform:components:R2Backup"
# RandomizedDelaySec of the backup timers (components/backupscripts/units.py): the worst-case delay.
BACKUP_JITTER = "10 min"


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
    monthly = totals(estimate(state, PriceTable.load())[0])
    if monthly:
        lines.append("  monthly estimate (list prices): " + ", ".join(
            f"{p} {v:,.2f}" for p, v in monthly.items()) + f"; total {sum(monthly.values()):,.2f} USD")
    if state.get("secret_placeholders"):
        lines.append("  secrets not in the stack file, filled with placeholders: "
                     + ", ".join(dict.fromkeys(state["secret_placeholders"])))
    return "\n".join(lines)


# --- what runs where --------------------------------------------------------------------------

def _host_of(resource: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> str | None:
    current = by_urn.get(resource.get("parent") or "")
    while current is not None:
        if current["type"] in HOSTS:
            return current["name"]
        current = by_urn.get(current.get("parent") or "")
    return None


def hosts(state: dict[str, Any]) -> list[dict[str, str]]:
    """``[{product, host, size, image, where}]``: droplets and on-prem hosts."""
    by_urn = {r["urn"]: r for r in state["resources"]}
    rows = []
    for r in state["resources"]:
        inputs = r.get("inputs", {})
        if r["type"] == DROPLET:
            rows.append({"product": product_of(r, by_urn), "host": r["name"], "size": str(inputs.get("size")),
                         "image": str(inputs.get("image")), "where": f"DigitalOcean {inputs.get('region')}"})
        elif r["type"] == ONPREM:
            rows.append({"product": product_of(r, by_urn), "host": r["name"], "size": "owned",
                         "image": "existing OS (set up over SSH)",
                         "where": f"on-prem {inputs.get('address')}, {inputs.get('tier')} tier"})
    return rows


def _routes(state: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """(host component, upstream alias) -> public hostnames, from the nginx configs."""
    by_urn = {r["urn"]: r for r in state["resources"]}
    routes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in state["resources"]:
        if r["type"] != "command:remote:Command" or not r["name"].endswith("-ingress-config"):
            continue
        host = _host_of(r, by_urn) or ""
        for block in str(r["inputs"].get("stdin") or "").split("server {")[1:]:
            names = re.findall(r"server_name ([^;]+);", block)
            upstream = re.search(r"set \$upstream_\w+ ([a-z0-9-]+):\d+;", block)
            if names and upstream:
                routes[(host, upstream.group(1))] += [n for n in names[0].split() if n != "_"]
    return routes


def services(state: dict[str, Any]) -> list[dict[str, str]]:
    """``[{product, service, host, image, hostnames}]``: containers and App Platform components."""
    by_urn = {r["urn"]: r for r in state["resources"]}
    images = {r["name"]: r["inputs"].get("name") for r in state["resources"] if r["type"] == IMAGE}
    routes = _routes(state)
    rows = []
    for r in state["resources"]:
        if r["type"] == CONTAINER:
            host = _host_of(r, by_urn) or "?"
            aliases = [a for n in r["inputs"].get("networksAdvanced") or [] for a in n.get("aliases") or []]
            names = sorted({h for a in aliases for h in routes.get((host, a), [])})
            rows.append({"product": product_of(r, by_urn), "service": r["name"], "host": host,
                         "image": str(images.get(f"{r['name']}-image") or r["inputs"].get("image")),
                         "hostnames": ", ".join(names)})
        elif r["type"] == APP and isinstance(r["inputs"].get("spec"), dict):
            spec = r["inputs"]["spec"]
            hostnames: dict[str, list[str]] = defaultdict(list)
            for rule in (spec.get("ingress") or {}).get("rules") or []:
                authority = ((rule.get("match") or {}).get("authority") or {}).get("exact")
                component = (rule.get("component") or {}).get("name")
                if authority and component:
                    hostnames[component].append(authority)
            for kind in ("services", "staticSites", "workers", "jobs"):
                for component in spec.get(kind) or []:
                    github = component.get("github") or {}
                    image = component.get("image") or {}
                    source = (f"github {github.get('repo')}@{github.get('branch')}" if github
                              else f"{image.get('registry', '')}/{image.get('repository', '')}:{image.get('tag', '')}")
                    rows.append({"product": product_of(r, by_urn), "service": component.get("name", "?"),
                                 "host": f"App Platform {r['name']}", "image": source,
                                 "hostnames": ", ".join(sorted(set(hostnames.get(component.get("name"), []))))})
    return rows


def rpo(schedule: str | None) -> str:
    """Worst-case data loss of an off-site backup schedule (systemd OnCalendar): the interval
    plus the timer's random delay. Daily and weekly calendars are read; others shown as is."""
    if not schedule:
        return "no off-site backup"
    if re.fullmatch(r"\*-\*-\* \d\d:\d\d(:\d\d)?( UTC)?", schedule):
        return f"24 h {BACKUP_JITTER} (daily off-site backup)"
    if re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \*-\*-\* \d\d:\d\d(:\d\d)?( UTC)?", schedule):
        return f"7 d {BACKUP_JITTER} (weekly off-site backup)"
    return f"set by the schedule `{schedule}`"


def datastores(state: dict[str, Any]) -> list[dict[str, str]]:
    """``[{product, datastore, engine, version, size, rpo}]``: managed clusters and the
    containers an R2Backup backs up."""
    by_urn = {r["urn"]: r for r in state["resources"]}
    backups: dict[str, str] = {}
    for b in state["resources"]:
        if b["type"] == BACKUP:
            backups.setdefault(str(b["inputs"].get("source")), b["inputs"].get("schedule"))
    by_name = {r["name"]: r for r in state["resources"]}
    images = {r["name"]: str(r["inputs"].get("name")) for r in state["resources"] if r["type"] == IMAGE}
    rows = []
    for r in state["resources"]:
        inputs = r.get("inputs", {})
        if r["type"] == CLUSTER:
            managed = "; DigitalOcean daily backups and point-in-time recovery within their window"
            rows.append({"product": product_of(r, by_urn), "datastore": r["name"],
                         "engine": f"managed {inputs.get('engine')}", "version": str(inputs.get("version")),
                         "size": f"{inputs.get('size')} x{inputs.get('nodeCount', 1)}",
                         "rpo": rpo(backups.get(r["name"])) + (managed if inputs.get("engine") in ("pg", "mysql", "mongodb") else "")})
    for source, schedule in sorted(backups.items()):
        container = by_name.get(source)
        if container is None or container["type"] != CONTAINER:
            continue
        image = images.get(f"{source}-image", "?")
        engine, _, version = image.rpartition("/")[2].partition(":")
        memory = container["inputs"].get("memory")
        rows.append({"product": product_of(container, by_urn), "datastore": source,
                     "engine": f"self-hosted {engine}", "version": version,
                     "size": f"{memory} MB limit" if memory else "no limit", "rpo": rpo(schedule)})
    return rows


def public_outputs(state: dict[str, Any]) -> dict[str, Any]:
    secret = set(state.get("secret_outputs") or [])
    return {k: v for k, v in sorted((state.get("outputs") or {}).items()) if k not in secret}


def _table(rows: list[dict[str, str]], columns: list[str]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(f"`{row[c]}`" if row[c] and c in ("host", "service", "datastore", "image")
                                     else row[c] or "" for c in columns) + " |")
    return out


def markdown(state: dict[str, Any], observed: list[dict] | None = None) -> str:
    """The summary; ``observed``: a rehearsal's reachability cells (``synth.diagram.reachability_cells``),
    drawn per product beside the planned diagram."""

    out = [f"# Desired state of stack `{state['stack']}`", "", f"{len(state['resources'])} resources.", ""]
    host_rows, service_rows, store_rows = hosts(state), services(state), datastores(state)
    table = counts_by_product(state)
    for product in sorted(table):
        out += [f"## {product}", ""]
        mine = [h for h in host_rows if h["product"] == product]
        if mine:
            out += ["**Hosts**", ""] + _table(mine, ["host", "size", "image", "where"]) + [""]
        mine = [s for s in service_rows if s["product"] == product]
        if mine:
            out += ["**Services**", ""] + _table(mine, ["service", "host", "image", "hostnames"]) + [""]
        mine = [d for d in store_rows if d["product"] == product]
        if mine:
            out += ["**Datastores**", ""] + _table(mine, ["datastore", "engine", "version", "size", "rpo"]) + [""]
        out += ["<details><summary>Resources by type</summary>", "", "| type | count |", "|---|---:|"]
        out += [f"| `{t}` | {n} |" for t, n in sorted(table[product].items())]
        out += ["", "</details>", ""]
    out += cost_markdown(state, PriceTable.load()) + [""]
    view = State(state)
    out += ["## Diagrams", "", "Per product: hosts as groups with their containers, edges with ports, "
            "waivers dashed and named (`--diagram-svg` draws the same with Graphviz).", ""]
    for product in products(view):
        out += [f"### {product}", "", "```mermaid", mermaid(view, product).rstrip(), "```", ""]
        if observed is not None:
            graph, _, counts = observed_graph(view, product, observed)
            if sum(counts.values()):
                out += [f"#### {product}: observed by the rehearsal", "",
                        f"The reachability matrix of the rehearsal report: {counts['pass']} of "
                        f"{sum(counts.values())} cells as planned, {counts['fail']} not, "
                        f"{counts['not proven']} not proven. Green: open as planned; red: open although "
                        "the tier model refuses it; orange, dashed: refused although it allows it.", "",
                        "```mermaid", mermaid_observed(view, product, observed).rstrip(), "```", ""]
    outputs = public_outputs(state)
    out += ["## Outputs", "", "Secret outputs (`pulumi stack output --show-secrets`): "
            + (", ".join(f"`{k}`" for k in sorted(state.get("secret_outputs") or [])) or "none") + ".", "",
            "```json", json.dumps(outputs, indent=2, sort_keys=True), "```", ""]
    if state.get("violations") is not None:
        out += ["## Policy", ""]
        if not state["violations"]:
            out.append("No violations.")
        for v in state["violations"]:
            out.append(f"- **{v['level']}** `{v['policy']}` on `{v['urn']}`: {v['message']}")
        out.append("")
    return "\n".join(out)
