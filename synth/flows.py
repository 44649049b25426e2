"""The tier view of a desired state, read from the capture (not from config): each node's tier,
and the flows the captured rules allow (firewall rules, database trusted sources, UFW rules
of on-prem hosts with their waivers, nginx upstreams, published container ports, App
Platform ingress, backup runners). ``synth/diagram.py`` draws each product's diagram from the
same capture, with the constants and helpers here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from synth.state import State

TIERS = ("edge", "app", "data", "mgmt")
INTERNET, ADMINS = "internet", "admins"
DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
DB_FIREWALL = "digitalocean:index/databaseFirewall:DatabaseFirewall"
APP = "digitalocean:index/app:App"
CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
ONPREM = "platform:components:OnPremVps"
UFW_ALLOW = re.compile(r"^ufw allow proto \w+ from (\S+) to any port (\S+).*?(?:# waiver: ([\w-]+))?$")
BUCKETS = ("digitalocean:index/spacesBucket:SpacesBucket", "cloudflare:index/r2Bucket:R2Bucket",
           "minio:index/s3Bucket:S3Bucket")


@dataclass(frozen=True, order=True)
class Edge:
    source: str
    target: str
    label: str


def is_world(cidr: str) -> bool:
    """Whether a CIDR is the whole IPv4 or IPv6 internet."""
    return cidr in ("0.0.0.0/0", "::/0")


def container_labels(container: dict[str, Any]) -> dict[str, str]:
    """A captured docker Container's labels, label -> value."""
    return {l.get("label"): l.get("value") for l in container["inputs"].get("labels") or []}


def nodes(state: State) -> dict[str, str]:
    """Node name -> tier."""
    tiers: dict[str, str] = {}
    for firewall in state.of_type(FIREWALL):
        tier = str(firewall["inputs"].get("name", "")).rsplit("-", 1)[-1]
        for urn in firewall["dependencies"]:
            droplet = state.by_urn.get(urn)
            if droplet and droplet["type"] == DROPLET and tier in TIERS:
                tiers[droplet["name"]] = tier
    for droplet in state.of_type(DROPLET):
        tags = [t[5:] for t in droplet["inputs"].get("tags") or [] if t.startswith("tier-")]
        tiers.setdefault(droplet["name"], tags[0] if tags else "app")
    for container in state.of_type(CONTAINER):
        tiers[container["name"]] = container_labels(container).get("platform.tier", "app")
    for app in state.of_type(APP):
        tiers[app["name"]] = "app"
    for host in state.of_type(ONPREM):
        tiers[host["name"]] = str(host["inputs"].get("tier") or "app")
    for resource in state.of_type(CLUSTER) + [r for t in BUCKETS for r in state.of_type(t)]:
        tiers[resource["name"]] = "data"
    return tiers


def droplet_of(state: State, resource: dict[str, Any]) -> str | None:
    """The droplet whose component holds a resource, or that a command chain leads to."""
    for urn in [resource["urn"], *sorted(state.all_dependencies(resource))]:
        item = state.by_urn.get(urn)
        if item is None:
            continue
        if item["type"] == DROPLET:
            return item["name"]
        parent = state.by_urn.get(item.get("parent") or "")
        if parent and parent["type"] == ONPREM:
            return parent["name"]
        if parent and parent["type"] == "platform:components:DropletStack":
            droplets = [c for c in state.children(parent) if c["type"] == DROPLET]
            if droplets:
                return droplets[0]["name"]
    return None


def flows(state: State) -> set[Edge]:
    edges: set[Edge] = set()
    for firewall in state.of_type(FIREWALL):
        targets = [state.by_urn[u]["name"] for u in firewall["dependencies"]
                   if u in state.by_urn and state.by_urn[u]["type"] == DROPLET]
        for rule in firewall["inputs"].get("inboundRules") or []:
            sources = rule.get("sourceAddresses") or []
            port = rule.get("portRange", "all")
            for target in targets:
                if any(is_world(s) for s in sources):
                    edges.add(Edge(INTERNET, target, str(port)))
                if any(not is_world(s) for s in sources):
                    edges.add(Edge(ADMINS, target, str(port)))
    for db_firewall in state.of_type(DB_FIREWALL):
        clusters = [state.by_urn[u]["name"] for u in db_firewall["dependencies"]
                    if u in state.by_urn and state.by_urn[u]["type"] == CLUSTER]
        clients = [state.by_urn[u]["name"] for u in db_firewall["dependencies"]
                   if u in state.by_urn and state.by_urn[u]["type"] in (DROPLET, APP)]
        for rule in db_firewall["inputs"].get("rules") or []:
            if rule.get("type") == "ip_addr" and is_world(str(rule.get("value"))):
                clients_for_rule = [INTERNET]
            else:
                clients_for_rule = clients
            for cluster in clusters:
                for client in clients_for_rule:
                    edges.add(Edge(client, cluster, "db"))
    hosts = {f"{h['inputs'].get(key)}/32": h["name"] for h in state.of_type(ONPREM)
             for key in ("address", "privateAddress")}
    for command in state.of_type(COMMAND):
        parent = state.by_urn.get(command.get("parent") or "")
        if not parent or parent["type"] != ONPREM or not command["name"].endswith("-setup-ufw"):
            continue
        for line in str(command["inputs"].get("stdin") or "").splitlines():
            match = UFW_ALLOW.match(line.strip())
            if not match:
                continue
            source, port, waiver = match.groups()
            origin = INTERNET if source == "any" or is_world(source) else hosts.get(source, ADMINS)
            label = port.replace(":", "-") + (f" waiver {waiver}" if waiver else "")
            edges.add(Edge(origin, parent["name"], label))
    by_alias: dict[tuple[str, str], str] = {}
    for container in state.of_type(CONTAINER):
        host = droplet_of(state, container)
        for network in container["inputs"].get("networksAdvanced") or []:
            for alias in network.get("aliases") or []:
                by_alias[(host or "", alias)] = container["name"]
        for port in container["inputs"].get("ports") or []:
            if (port.get("ip") or "0.0.0.0") in ("0.0.0.0", "::"):
                edges.add(Edge(INTERNET, container["name"], str(port.get("external"))))
    for command in state.of_type(COMMAND):
        text = str(command["inputs"].get("stdin") or "")
        host = droplet_of(state, command)
        nginx = by_alias.get((host or "", "nginx"))
        for alias, port in re.findall(r"set \$upstream_\w+ ([a-z0-9-]+):(\d+);", text):
            target = by_alias.get((host or "", alias))
            if nginx and target:
                edges.add(Edge(nginx, target, port))
    for app in state.of_type(APP):
        spec = app["inputs"].get("spec") if isinstance(app["inputs"].get("spec"), dict) else {}
        if (spec.get("ingress") or {}).get("rules"):
            edges.add(Edge(INTERNET, app["name"], "443"))
        text = str(spec)
        for bucket in state.of_type("digitalocean:index/spacesBucket:SpacesBucket"):
            if str(bucket["inputs"].get("name")) in text:
                edges.add(Edge(app["name"], bucket["name"], "s3"))
    for backup in state.of_type("platform:components:R2Backup"):
        children = state.children(backup)
        install = [c for c in children if c["type"] == COMMAND and c["name"].endswith("-install")]
        buckets = [c["name"] for c in children if c["type"] == "cloudflare:index/r2Bucket:R2Bucket"]
        runner = droplet_of(state, install[0]) if install else None
        for bucket in buckets:
            if runner:
                edges.add(Edge(runner, bucket, "backup"))
    return edges
