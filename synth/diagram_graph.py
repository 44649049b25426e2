"""One product's diagram as a graph, drawn from the capture (not from config), so that it shows
what will be deployed (``synth/diagram.py`` draws it as Graphviz and Mermaid).

``product_graph``: hosts are groups holding their containers, with a ``host`` node for what
reaches the host itself (SSH, UFW rules without a container behind them); links carry ports;
waivers are links named after the waiver. No self-loops, no link without both ends in the graph.
``drawn_edges`` merges the links from one source into another host's group into one edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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


def anchor(host: str) -> str:
    """The node of ``host`` itself (sshd, UFW) inside its group."""
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
        graph.nodes[anchor(host["name"])] = ("host (sshd, UFW)", host["name"], "box3d")
    published: dict[tuple[str, str], str] = {}
    aliases: dict[tuple[str, str], str] = {}
    for container in (r for r in mine if r["type"] == CONTAINER):
        host = _group_of(state, container)
        if host is None:
            continue
        short = container["name"][len(host) + 1:] if container["name"].startswith(host + "-") else container["name"]
        tier = container_labels(container).get("platform.tier", "app")
        ports = sorted({str(p.get("external")) for p in container["inputs"].get("ports") or []}, key=port_key)
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
                graph.links.add(Link(origin, published.get((host, port), anchor(host)), port))
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
                    anchor(addresses[source]) if source in addresses else ADMINS)
                if origin == anchor(host):
                    continue  # the host's own address: not a flow between nodes
                target = published.get((host, port.split(":")[0]), anchor(host))
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
                clients.append(anchor(host_of_droplet[item["name"]]))
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
            graph.links.add(Link(anchor(runner), R2_NODE, "443 backup"))
    graph.ranks.update({INTERNET: 0, ADMINS: 0, R2_NODE: 4})
    graph.links = {l for l in graph.links if l.source != l.target
                   and l.source in graph.nodes and l.target in graph.nodes}
    return graph


def port_key(label: str) -> tuple:
    """Sort key of a port label: by its leading number, labels without one last."""
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
        labels = ", ".join(sorted({l.label for l in links}, key=port_key))
        targets = {l.target for l in links}
        if into in graph.groups and len(targets) > 1:
            members = sorted(n for n, (_, g, _) in graph.nodes.items() if g == into)
            target = anchor(into) if anchor(into) in graph.nodes else members[0]
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

