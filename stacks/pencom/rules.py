"""Pencom's config rules: what the models alone cannot check (addresses, names, references
between sections, env keys; the egress rules are in ``egress_rules``), each finding naming its
key path."""

from __future__ import annotations

import ipaddress
from typing import Iterator

from components import tiers
from components.containers import HOST_DIRECTORIES
from stacks.collisions import duplicates, program_containers, wal_collision
from stacks.pencom.config import BACKUP_READER, NODES, RESERVED_LABELS, PencomConfig
from stacks.pencom.mtls import SIDECAR_SUFFIX, TERMINATOR
from stacks.pencom.plan import BUCKET_ENV, backup_labels, proxy_env, role_name
from stacks.secret_keys import secret_key_findings
from stacks.wiring import SESSION_ARCHIVE_LABEL, SESSION_LABEL_TAKEN, WAL_LABEL
from stacks.shared_config import (alert_email_findings, backup_bucket_findings, hosts_in_zone,
                                  injected_env_findings, monitoring_findings)
from validation.rules import Finding, RuleContext, Skip, each, rule


@rule(PencomConfig)
def _node_addresses(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Distinct private addresses inside internal_cidr (not its network or broadcast address);
    the edge node alone has a public address."""
    network = ipaddress.ip_network(cfg.internal_cidr)
    nodes = [(name, getattr(cfg.nodes, name, None)) for name in NODES]
    yield from duplicates(((("nodes", n, "private_address"), node.private_address) for n, node in nodes
                           if node is not None), "private address", ctx.where)
    for name, node in nodes:
        if node is None:
            continue
        address = ipaddress.ip_address(node.private_address)
        if address not in network:
            yield Finding(("nodes", name, "private_address"), f"{address} is outside internal_cidr {network}")
        elif network.num_addresses > 2 and address in (network.network_address, network.broadcast_address):
            yield Finding(("nodes", name, "private_address"), f"{address} is the network or broadcast address "
                          f"of {network}")
        if name != "edge" and node.public_address:
            yield Finding(("nodes", name, "public_address"), "internal nodes have no public_address (they are "
                          "reached through the edge node); remove it")
    if not cfg.nodes.edge.public_address:
        yield Finding(("nodes", "edge", "public_address"), "is required: the edge node is the bastion")


@rule(PencomConfig)
def _service_names(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Every container name once on its node: nginx, the monitoring containers and the MinIO
    backup reader are the program's."""
    claims = []
    for field in ("edge_services", "app_services"):
        try:
            claims += [((field, i, "name"), s.name) for i, s in each(getattr(cfg, field))]
        except Skip:
            pass
    for field in ("postgres", "mongodb", "redis", "minio"):
        try:
            claims.append(((field, "name"), getattr(cfg, field).name))
        except Skip:
            pass
    try:
        claims.append((("egress", "proxy", "name"), cfg.egress.proxy.name))
    except Skip:
        pass
    yield from duplicates(claims, "service name", ctx.where)
    reserved = {**program_containers(monitoring=True), BACKUP_READER: "the MinIO backup reader",
                TERMINATOR: "the mutual-TLS terminator"}
    for loc, name in claims:
        if name in reserved and name not in HOST_DIRECTORIES:  # those have their own error
            yield Finding(loc, f"{name!r} is the name of {reserved[name]}'s container or user; rename it")
        elif name.endswith(SIDECAR_SUFFIX):
            yield Finding(loc, f"{name!r} ends in {SIDECAR_SUFFIX!r}, which names the mutual-TLS sidecars' "
                               "containers; rename it")


@rule(PencomConfig)
def _tiers(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    for index, spec in each(cfg.edge_services):
        if spec.tier is not tiers.Tier.EDGE:
            yield Finding(("edge_services", index, "tier"), f"edge services are tier edge, got {spec.tier.value}")
        if spec.publish:
            yield Finding(("edge_services", index, "publish"), "nginx fronts edge services; remove publish")
    for index, spec in each(cfg.app_services):
        if spec.tier is not tiers.Tier.APP:
            yield Finding(("app_services", index, "tier"), f"app services are tier app, got {spec.tier.value}")
        if spec.port is None:
            yield Finding(("app_services", index, "port"), "is required: the mutual-TLS terminator forwards "
                          "to it and serves it on port + 10000 of the app node's private address")
        if spec.publish:
            yield Finding(("app_services", index, "publish"), "the program publishes the port on the app "
                          "node's private address, over mutual TLS only (port + 10000); remove publish")


@rule(PencomConfig)
def _datastores(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    for field in ("postgres", "mongodb", "redis", "minio"):
        try:
            spec = getattr(cfg, field)
        except Skip:
            continue
        if spec.tier is not tiers.Tier.DATA:
            yield Finding((field, "tier"), f"tier data, got {spec.tier.value}")
        for key in ("publish", "command"):
            if getattr(spec, key):
                yield Finding((field, key), "is set by the program (with TLS); remove it")


@rule(PencomConfig)
def _references(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Every service a section names exists, on the node that section needs."""
    edge = {s.name for _, s in each(cfg.edge_services)}
    app = {s.name for _, s in each(cfg.app_services)}
    both = edge | app
    refs: list[tuple[tuple, str, set, str]] = []

    def add(getter, kind, allowed):
        try:
            refs.extend((loc, name, allowed, kind) for loc, name in getter())
        except Skip:
            pass
    add(lambda: [(("databases", i, "service"), d.service) for i, d in each(cfg.databases)], "an app service", app)
    add(lambda: [(("mongo_databases", i, "service"), d.service) for i, d in each(cfg.mongo_databases)],
        "an app service", app)
    add(lambda: [(("redis_clients", i), s) for i, s in enumerate(cfg.redis_clients)], "an app service", app)
    add(lambda: [(("bucket", "consumers", i, "service"), c.service) for i, c in each(cfg.bucket.consumers)],
        "an app service", app)
    add(lambda: [(("read_waivers", i, "service"), w.service) for i, w in each(cfg.read_waivers)],
        "an edge service", edge)
    add(lambda: [(("jwt", k, i), s) for k in ("users", "partners") for i, s in enumerate(getattr(cfg.jwt, k))],
        "a service", both)
    add(lambda: [(("egress", "https", i, "services", j), s) for i, r in each(cfg.egress.https)
                 for j, s in enumerate(r.services)], "a service", both)
    add(lambda: [(("egress", "direct", i, "services", j), s) for i, r in each(cfg.egress.direct)
                 for j, s in enumerate(r.services)], "an app service", app)
    add(lambda: [(("routes", i, "service"), r.service) for i, r in each(cfg.routes)], "an edge service", edge)
    add(lambda: [(("callers", callee), callee) for callee in cfg.callers], "an app service", app)
    add(lambda: [(("callers", callee, i), c) for callee, callers in cfg.callers.items()
                 for i, c in enumerate(callers)], "an edge service", edge)
    for loc, name, allowed, kind in refs:
        if name not in allowed:
            yield Finding(loc, f"{name} is not {kind} ({', '.join(sorted(allowed)) or 'none'})")


@rule(PencomConfig)
def _routes(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    edge = {s.name: (i, s) for i, s in each(cfg.edge_services)}
    for index, route in each(cfg.routes):
        if route.service in edge and edge[route.service][1].port is None:
            yield Finding(("routes", index, "service"), f"{route.service} has no port to route to; set "
                          f"{ctx.where('edge_services', edge[route.service][0], 'port')}")
    yield from duplicates(((("routes", i, "host"), r.host) for i, r in each(cfg.routes)), "hostname", ctx.where)
    if cfg.dns:
        yield from hosts_in_zone([(("routes", i, "host"), r.host) for i, r in each(cfg.routes)], cfg.dns.zone)


@rule(PencomConfig)
def _databases(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Database names unique across Postgres and MongoDB and not a backup label the program
    uses; one Postgres database per service (its role is named after it); every waiver reads an
    existing Postgres database, one waiver per service."""
    dbs = [(("databases", i, "name"), d.name) for i, d in each(cfg.databases)]
    dbs += [(("mongo_databases", i, "name"), d.name) for i, d in each(cfg.mongo_databases)]
    yield from duplicates(dbs, "database name", ctx.where)
    for loc, name in dbs:
        if name.replace("_", "-") in RESERVED_LABELS:
            yield Finding(loc, f"{name} is the name of the program's {name} backup job; rename the database")
        elif name.replace("_", "-") == SESSION_ARCHIVE_LABEL:
            yield Finding(loc, SESSION_LABEL_TAKEN)
        elif name == WAL_LABEL:
            yield Finding(loc, wal_collision(ctx.where("postgres")))
    yield from duplicates(((("databases", i, "service"), role_name(d.service)) for i, d in each(cfg.databases)),
                          "Postgres role (one database per service)", ctx.where)
    postgres = {d.name for _, d in each(cfg.databases)}
    for index, waiver in each(cfg.read_waivers):
        if waiver.database not in postgres:
            yield Finding(("read_waivers", index, "database"), f"{waiver.database} is not a Postgres database "
                          f"({', '.join(sorted(postgres))})")
    yield from duplicates(((("read_waivers", i, "name"), w.name) for i, w in each(cfg.read_waivers)),
                          "waiver name", ctx.where)
    yield from duplicates(((("read_waivers", i, "service"), w.service) for i, w in each(cfg.read_waivers)),
                          "reader role (one waiver per service)", ctx.where)


@rule(PencomConfig)
def _env_keys(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Env keys the program sets: two sources of one key for one service, or a user key the
    program would overwrite."""
    claims = []
    for i, d in each(cfg.databases):
        claims.append((("databases", i, "env"), (d.service, d.env or "DATABASE_URL")))
    for i, d in each(cfg.mongo_databases):
        claims.append((("mongo_databases", i, "env"), (d.service, d.env or "MONGODB_URI")))
    for i, w in each(cfg.read_waivers):
        claims.append((("read_waivers", i, "env"), (w.service, w.env)))
    injected: dict[str, dict[str, str]] = {}
    services = [*(s for _, s in each(cfg.edge_services)), *(s for _, s in each(cfg.app_services))]
    fixed = {"INTERNAL_API_KEY": "the internal API key", "NODE_EXTRA_CA_CERTS": "the internal CA"}
    for spec in services:
        injected[spec.name] = dict(fixed)
    for service in cfg.jwt.users:
        claims.append((("jwt", "users"), (service, "JWT_SECRET")))
    for service in cfg.jwt.partners:
        claims.append((("jwt", "partners"), (service, "PFC_JWT_SECRET")))
    for i, service in enumerate(cfg.redis_clients):
        claims.append((("redis_clients", i), (service, "REDIS_URL")))
    for i, c in each(cfg.bucket.consumers):
        for key in BUCKET_ENV:
            claims.append((("bucket", "consumers", i, "service"), (c.service, key)))
    for loc, (service, key) in claims:
        if key in fixed:
            yield Finding(loc, f"{key} is set by the program for every service ({fixed[key]})")
        injected.setdefault(service, {})[key] = ctx.where(*loc)
    yield from duplicates(claims, "service and env key", ctx.where)
    edge_urls = {f"{s.name.upper().replace('-', '_')}_SERVICE_URL": "an app service's URL"
                 for _, s in each(cfg.app_services)}
    for _, spec in each(cfg.edge_services):
        injected.setdefault(spec.name, {}).update(edge_urls)
    try:
        for service in proxy_env(cfg):
            injected.setdefault(service, {}).update(
                {k: "the egress proxy" for k in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")})
    except (Skip, AttributeError, KeyError):
        pass
    yield from injected_env_findings("edge_services", cfg.edge_services, injected)
    yield from injected_env_findings("app_services", cfg.app_services, injected)


@rule(PencomConfig)
def _secrets(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from secret_key_findings("pencom", "edge_services", cfg.edge_services)
    yield from secret_key_findings("pencom", "app_services", cfg.app_services)


@rule(PencomConfig)
def _monitoring(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    services = {s.name: s for _, s in each(cfg.edge_services)} | {s.name: s for _, s in each(cfg.app_services)}
    where = {s.name: ("edge_services", i) for i, s in each(cfg.edge_services)}
    where |= {s.name: ("app_services", i) for i, s in each(cfg.app_services)}
    yield from monitoring_findings(cfg.monitoring, "pencom", services,
                                   where=lambda n: ctx.where(*where[n], "port"))
    yield from alert_email_findings(cfg.monitoring, ctx)


@rule(PencomConfig)
def _backup_buckets(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, backup_labels(cfg))
