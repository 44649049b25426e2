"""Pencom's egress rules: the proxy (its tier, and a host allow-list that admits every registry
the internal nodes pull from), the proxy's domains, the containers' subnets on every node (apart
from each other and from what they must reach) and the direct routes, each finding naming its
key path. Registered after ``rules`` (``stacks.pencom`` imports both)."""

from __future__ import annotations

import ipaddress
from typing import Iterator

from components import egress, tiers
from components.dockerhost import image_registry
from stacks.collisions import DOCKER_DEFAULT_BRIDGE, duplicates
from stacks.pencom.config import PencomConfig
from stacks.pencom.network import EDGE_EXEMPT
from validation.rules import Finding, RuleContext, Skip, each, rule


@rule(PencomConfig)
def _egress(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Domains well formed and once per route; the edge subnet private, apart from the internal
    network, and large enough for the fixed addresses of the containers that leave directly."""
    for i, route in each(cfg.egress.https):
        try:
            egress.check_domains(route.domains)
        except ValueError as exc:
            yield Finding(("egress", "https", i, "domains"), str(exc))
    try:
        egress.check_domains(cfg.egress.host_domains)
    except ValueError as exc:
        yield Finding(("egress", "host_domains"), str(exc))
    yield from duplicates(((("egress", "https", i, "name"), r.name) for i, r in each(cfg.egress.https)),
                          "route name", ctx.where)
    # The edge subnet's size (the exempt containers' fixed addresses) is its field's check
    # (config.EDGE_SUBNET); the room for the other containers is _node_subnets_fit's.


def node_containers(cfg: PencomConfig) -> dict[str, int]:
    """node -> how many containers Docker gives a dynamic address on its network, counted from
    the config the way ``plan.detail`` builds each node (the edge's exempt containers have
    fixed addresses in the lower half instead). tests/test_pencom.py checks it against the plan."""
    from components import monitoring
    from stacks.pencom.mtls import mtls_plan

    exporters = len(monitoring.exporter_specs(cfg.monitoring, publish=False))
    edge = (len(cfg.edge_services) + 1 + len(mtls_plan(cfg, "pencom").sidecars)
            + len(monitoring.server_specs(cfg.monitoring, "/x")) + exporters)
    return {"edge": edge - len(EDGE_EXEMPT), "app": len(cfg.app_services) + 1 + exporters,
            "data": 3 + exporters, "storage": 1 + exporters}


@rule(PencomConfig)
def _node_subnets_fit(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Docker assigns a node's containers addresses in the upper half of its subnet
    (``EgressLock.dynamic_range``), which also holds the subnet's broadcast address and, taken
    first, Docker's gateway: a range with fewer addresses starts some container with
    "no available IPv4 addresses" only at deploy time."""
    services = [*cfg.edge_services, *cfg.app_services]
    if any(s is None for s in services) or any(s.port is None for s in cfg.app_services):
        return  # an item's own error stands; the mutual-TLS plan counted here needs every one
    counts = node_containers(cfg)
    for node, count in counts.items():
        loc = ("egress", "edge_subnet") if node == "edge" else ("egress", "node_subnets", node)
        subnet = ipaddress.ip_network(cfg.egress.edge_subnet if node == "edge" else getattr(cfg.egress.node_subnets, node))
        room = subnet.num_addresses // 2 - 2
        if count > room:
            prefix = next(p for p in range(subnet.prefixlen, 0, -1) if 2 ** (32 - p) // 2 - 2 >= count)
            yield Finding(loc, f"{subnet} is too small for the {node} node: Docker gives its {count} containers "
                          f"addresses in the upper half ({room} free after the broadcast address and Docker's "
                          f"gateway); use a /{prefix} or larger")


@rule(PencomConfig)
def _edge_subnet_apart(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    if ipaddress.ip_network(cfg.egress.edge_subnet).overlaps(ipaddress.ip_network(cfg.internal_cidr)):
        yield Finding(("egress", "edge_subnet"), f"overlaps internal_cidr {cfg.internal_cidr}; containers "
                      "could not reach the internal network")


@rule(PencomConfig)
def _node_subnets_apart(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each node's container subnet apart from the others', the internal network, docker0, the
    resolvers and the direct routes: an overlap sends that traffic into a bridge instead."""
    claims = [(("egress", "edge_subnet"), cfg.egress.edge_subnet),
              *((("egress", "node_subnets", node), getattr(cfg.egress.node_subnets, node))
                for node in ("app", "data", "storage"))]
    others = [("internal_cidr", cfg.internal_cidr), ("docker0's default subnet", DOCKER_DEFAULT_BRIDGE),
              *((f"egress.resolvers[{i}]", r) for i, r in each(cfg.egress.resolvers)),
              *((f"egress.direct[{i}] ({d.name}).cidrs", c) for i, d in each(cfg.egress.direct) for c in d.cidrs)]
    for index, (loc, cidr) in enumerate(claims):
        network = ipaddress.ip_network(cidr)
        for earlier, other in claims[:index]:
            if network.overlaps(ipaddress.ip_network(other)):
                yield Finding(loc, f"{cidr} overlaps {ctx.where(*earlier)} ({other}): each node's containers need "
                                   "addresses of their own; choose another private /24")
        for what, other in others:
            if loc != ("egress", "edge_subnet") or what != "internal_cidr":  # _edge_subnet_apart says it
                if network.overlaps(ipaddress.ip_network(other, strict=False)):
                    yield Finding(loc, f"{cidr} overlaps {what} ({other}); choose another private /24")


@rule(PencomConfig)
def _direct_routes(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from duplicates(((("egress", "direct", i, "name"), r.name) for i, r in each(cfg.egress.direct)),
                          "route name", ctx.where)


@rule(PencomConfig)
def _proxy(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    proxy = cfg.egress.proxy
    if proxy.tier is not tiers.Tier.MGMT:
        yield Finding(("egress", "proxy", "tier"), f"tier mgmt (published on the private address only), "
                      f"got {proxy.tier.value}")
    if proxy.publish:
        yield Finding(("egress", "proxy", "publish"), "the program publishes the proxy ports; remove it")


# Where a registry serves an image's layers from, beyond its own name: a pull through an
# allow-list proxy needs them all. Sources: Docker's allowlist for Docker Hub
# (docs.docker.com/desktop/setup/allow-list: registry-1, auth, production.cloudflare), GitHub's
# packages hosts (docs.github.com, "About GitHub's IP addresses": pkg-containers), Google
# Container Registry's layers in Cloud Storage. Any other registry: its own name.
REGISTRY_PULL_DOMAINS = {
    "docker.io": ("registry-1.docker.io", "auth.docker.io", "production.cloudflare.docker.com"),
    "ghcr.io": ("ghcr.io", "pkg-containers.githubusercontent.com"),
    "gcr.io": ("gcr.io", "storage.googleapis.com"),
}


def _admits(allowed: list[str], domain: str) -> bool:
    """squid's ``dstdomain``: ``.example.com`` admits example.com and every name under it."""
    return any(a == domain or (a.startswith(".") and (domain == a[1:] or domain.endswith(a)))
               for a in allowed)


@rule(PencomConfig)
def _pulls_through_proxy(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """The app, data and storage nodes pull their images through the edge's proxy (their
    Docker daemons' HTTPS_PROXY): its host allow-list admits every registry they pull from."""
    images: list[tuple[str, str]] = []

    def add(getter):
        try:
            images.extend(getter())
        except Skip:
            pass
    add(lambda: [(f"app_services[{i}].image", s.image) for i, s in each(cfg.app_services)])
    for field in ("postgres", "mongodb", "redis", "minio"):
        add(lambda field=field: [(f"{field}.image", getattr(cfg, field).image)])
    add(lambda: [(f"monitoring.{k}", getattr(cfg.monitoring, k)) for k in ("node_exporter_image", "cadvisor_image")])
    try:
        allowed = list(cfg.egress.host_domains)
    except Skip:
        return
    missing: dict[str, list[str]] = {}
    for where, image in images:
        registry = image_registry(image)
        for domain in REGISTRY_PULL_DOMAINS.get(registry, (registry,)):
            if not _admits(allowed, domain):
                missing.setdefault(domain, []).append(f"{image} ({where})")
    if missing:
        yield Finding(("egress", "host_domains"),
                      f"add {', '.join(sorted(missing))}: the internal nodes pull "
                      f"{'; '.join(sorted({i for v in missing.values() for i in v}))} through the "
                      "edge's proxy, which refuses them (\"Forbidden\" on the first pull)")
