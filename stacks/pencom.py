"""Pencom / eHub: four on-prem VPS nodes reached over SSH.

| node    | tier | runs                                                           | accepts            |
|---------|------|----------------------------------------------------------------|--------------------|
| edge    | edge | nginx (TLS), api-gateway, external-gateway, the egress proxy   | internet on 80/443 |
| app     | app  | core, payments, compliance, notifications, external-integrations, audit | edge, app |
| data    | data | Postgres, MongoDB, Redis, all over TLS from an internal CA     | app (+ one waiver) |
| storage | data | MinIO over TLS, one bucket, one IAM user per consuming service | app                |

Fixes what the seed describes: database connections without TLS (now TLS everywhere with
``sslmode=verify-full`` against the internal CA), an internal API key some services do not get
(every service gets it), external-gateway reading the compliance database through an
undocumented hole (now a named waiver with a read-only role), and egress nobody restricts (the
internal nodes reach only the internal network, their resolvers and Oracle ECRS; HTTPS leaves
through a proxy on the edge node that allows each service only its own providers). SSH to the
internal nodes goes only through the edge node, from the admin CIDRs.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Iterator

import pulumi
import pulumi_minio as minio
from pydantic import EmailStr, Field, field_validator

from components import egress, hostsetup, monitoring, prometheus, tiers
from components.backup import R2Backup, R2BackupArgs
from components.backupscripts import WAL_ROLE, BackupJob, replication_role_sql
from components.containers import ContainerSpec, PublishedPort
from components.dns import a_records
from components.dockerhost import image_registry
from components.ingress import Ingress, IngressRoute
from components.internal_ca import InternalCa
from components.monitoring import MonitoringConfig
from components.minio_bucket import MinioBucket, MinioBucketArgs, MinioConsumer
from components.mongo_init import check_mongo_names, render_mongo_init_js
from components.onprem import OnPremVps, OnPremVpsArgs
from components.postgres_init import HBA_PATH, hba_file_args, render_pg_hba, check_init_plan, render_init_sql
from components.host_containers import datastore_init
from components.service_files import HostFile, host_path_for
from validation.rules import Finding, RuleContext, Skip, each, rule
from stacks.collisions import duplicates, program_containers
from stacks.product import Product, generated_password, merge_env, service_secret_env
from stacks.secret_keys import monitoring_secrets, secret_key_findings
from stacks.shared_config import (BackupConfig, DnsConfig, RouteConfig, alert_email_findings,
                                  backup_bucket_findings, bootstrap_user_problem, derived_buckets,
                                  hosts_in_zone, injected_env_findings, monitoring_findings)
from stacks import secret_keys
from stacks.definition import SecretKey
from stacks.definition import ProductDefinition
from validation.fields import (ADMIN_PREFIX_MIN, BootstrapUser, Cidr, HostCidr, PrivateAddress, PrivateCidr,
                               PublicAddress, ResourceName, StrictModel)

SSH_KEY_SECRET = "pencom_ssh_private_key"
CA_PATH = "/run/platform/ca.crt"
TLS_DIR = "/run/platform/tls"
PROXY_SERVICE = "egress-proxy"
BACKUP_READER = "backup"
"""The MinIO user the mirror backup reads with: every prefix, read-only."""
PORTS = {"postgres": 5432, "mongodb": 27017, "redis": 6379, "minio": 9000}
# The MinIO provider reaches the admin API through `ssh -L` to the storage node (see README).
MINIO_TUNNEL_HOST = "127.0.0.1"
MINIO_ROOT_USER = "pencom-admin"
# The redis image's own user and group (redis:*-alpine: uid 999, gid 1000). The program starts
# Redis with `sh -c` (for TLS and the password from the environment), so the image's entrypoint
# does not step down from root; without CAP_DAC_OVERRIDE root could not read its 0600 key.
REDIS_USER = "999:1000"
# Docker's default address pools: the edge node's containers reach the proxy from these.
DOCKER_POOLS = ("172.16.0.0/12", "192.168.0.0/16")


class NodeConfig(StrictModel):
    private_address: PrivateAddress = Field(description="address on the internal network")
    public_address: PublicAddress | None = Field(default=None, description="public address (edge node only)")
    ssh_port: int = Field(default=22, gt=0, lt=65536, description="SSH port")
    bootstrap_user: BootstrapUser = None

    @field_validator("bootstrap_user")
    @classmethod
    def _not_root_or_deploy(cls, value: str | None) -> str | None:
        problem = bootstrap_user_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Nodes(StrictModel):
    edge: NodeConfig = Field(description="VPS 1: the only internet-facing node; the SSH bastion")
    app: NodeConfig = Field(description="VPS 2: the core services")
    data: NodeConfig = Field(description="VPS 3: Postgres, MongoDB, Redis")
    storage: NodeConfig = Field(description="VPS 4: MinIO")


class ServiceDatabase(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="database name")
    service: ResourceName = Field(description="service that owns it (its role or user is named after the service)")
    env: str = Field(default="", pattern=r"^([A-Z][A-Z0-9_]*)?$",
                     description="environment variable with the connection URL "
                                 "(default DATABASE_URL for Postgres, MONGODB_URI for MongoDB)")
    rpo_minutes: int = Field(default=5, ge=1, le=1440,
                             description="recovery point objective in minutes (Postgres: the WAL "
                                         "archive of the cluster ships at the strictest of its databases)")


class ReadWaiver(StrictModel):
    """A declared exception to the tier model: an edge service reading one database."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="waiver name, shown in the plan and the UFW rule")
    service: ResourceName = Field(description="edge service that reads")
    database: str = Field(description="Postgres database it may read (and only read)")
    env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="environment variable with the read-only URL")
    reason: str = Field(min_length=10, description="why the exception exists and when it can go")


class BucketConsumerConfig(StrictModel):
    service: ResourceName = Field(description="app service that uses the bucket")
    prefixes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/$")]] = Field(
        min_length=1, description="key prefixes it may use, e.g. CERTIFICATES/ (a name and a slash)")
    write: bool = Field(default=True, description="read-write (default) or read-only")


class BucketConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", description="MinIO bucket name")
    consumers: list[BucketConsumerConfig] = Field(min_length=1, description="services and their prefixes")
    noncurrent_version_days: int = Field(default=30, ge=1, le=3650, description="days old versions are kept")
    tunnel_port: int = Field(default=19000, gt=1024, lt=65536,
                             description="local port of the operator's SSH tunnel to MinIO's API")


class HttpsRoute(StrictModel):
    name: ResourceName = Field(description="provider, e.g. sendgrid")
    domains: list[str] = Field(min_length=1, description="domains; a leading dot allows subdomains")
    services: list[str] = Field(min_length=1, description="services allowed to reach them")


class DirectRouteConfig(StrictModel):
    name: ResourceName = Field(description="destination, e.g. oracle-ecrs")
    cidrs: list[Cidr] = Field(min_length=1, description="its addresses: at most one site wide (IPv4 /24, "
                              "IPv6 /48), since a broader route defeats the allow-list")

    @field_validator("cidrs")
    @classmethod
    def _narrow(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            network = ipaddress.ip_network(cidr)
            if network.prefixlen < ADMIN_PREFIX_MIN[network.version]:
                raise ValueError(f"{cidr} is broader than /{ADMIN_PREFIX_MIN[network.version]}: a direct "
                                 "route that wide bypasses the egress allow-list; list the destination's "
                                 "own addresses")
        return cidrs
    port: int = Field(gt=0, lt=65536, description="TCP port")
    services: list[ResourceName] = Field(min_length=1, description="app services that use it")


DOCKER_DEFAULT_BRIDGE = "172.17.0.0/16"
"""docker0's subnet on every node (Docker's default ``bip``): a network there cannot be created."""


class NodeSubnets(StrictModel):
    """Fixed subnets of the internal nodes' Docker networks, one per node and apart, so a
    container address names one node: a route to a neighbour's container subnet is then
    unambiguous (and the rehearsal's matrix can probe one node's containers from another)."""

    app: PrivateCidr = Field(default="172.31.251.0/24", description="subnet of the app node's Docker network")
    data: PrivateCidr = Field(default="172.31.252.0/24", description="subnet of the data node's Docker network")
    storage: PrivateCidr = Field(default="172.31.253.0/24",
                                 description="subnet of the storage node's Docker network")


class EgressConfig(StrictModel):
    proxy: ContainerSpec = Field(description="the forward proxy (squid) on the edge node")
    https: list[HttpsRoute] = Field(description="HTTPS destinations per service")
    host_domains: list[str] = Field(min_length=1, description="what the nodes themselves reach "
                                    "through the proxy: package mirrors, registries, R2")
    direct: list[DirectRouteConfig] = Field(default_factory=list,
                                            description="non-HTTP destinations at fixed addresses")
    resolvers: list[HostCidr] = Field(min_length=1, description="DNS resolvers of the internal nodes, each "
                                      "one host (/32, /128): port 53 to a range would be a tunnel out")
    edge_subnet: PrivateCidr = Field(default="172.31.250.0/24",
                              description="subnet of the edge node's Docker network; the proxy, Alertmanager "
                                          "and the blackbox exporter get fixed addresses in its lower half, "
                                          "the only containers there allowed to reach the internet directly")
    node_subnets: NodeSubnets = Field(default_factory=NodeSubnets,
                                      description="subnets of the app, data and storage nodes' Docker networks; "
                                                  "apart from each other, edge_subnet and internal_cidr")


class JwtConfig(StrictModel):
    users: list[ResourceName] = Field(min_length=1, description="services that get JWT_SECRET (employers, admins)")
    partners: list[ResourceName] = Field(min_length=1, description="services that get PFC_JWT_SECRET (PFC partners)")


class PencomConfig(StrictModel):
    """Settings of the Pencom product in one stack."""

    internal_cidr: PrivateCidr = Field(description="the internal network of the four nodes")
    nodes: Nodes = Field(description="the four VPS nodes")
    edge_services: list[ContainerSpec] = Field(min_length=1, description="api-gateway, external-gateway (tier edge)")
    app_services: list[ContainerSpec] = Field(min_length=1, description="services on the app node (tier app, "
                                              "with a port; it is published on the private address)")
    postgres: ContainerSpec = Field(description="Postgres container (data node); TLS is added")
    mongodb: ContainerSpec = Field(description="MongoDB container (data node); TLS is added")
    redis: ContainerSpec = Field(description="Redis container (data node); TLS is added")
    minio: ContainerSpec = Field(description="MinIO container (storage node); TLS is added")
    databases: list[ServiceDatabase] = Field(min_length=1, description="Postgres databases, one per service")
    mongo_databases: list[ServiceDatabase] = Field(min_length=1, description="MongoDB databases, one per service (at least one: the data node always runs MongoDB, and every datastore needs a backup)")
    redis_clients: list[ResourceName] = Field(description="services that get REDIS_URL")
    read_waivers: list[ReadWaiver] = Field(default_factory=list, description="declared read-only exceptions")
    bucket: BucketConfig = Field(description="the MinIO bucket")
    jwt: JwtConfig = Field(description="who gets which JWT secret")
    egress: EgressConfig = Field(description="the egress allow-list")
    routes: list[RouteConfig] = Field(min_length=1, description="public hostname -> edge service")
    dns: DnsConfig | None = Field(default=None, description="where the hostnames are published; "
                                  "unset when PenCom manages the records")
    acme_email: EmailStr = Field(description="Let's Encrypt email")
    backup: BackupConfig = Field(description="off-site backups of every datastore and the bucket to R2")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Prometheus, Alertmanager, Grafana and the blackbox exporter on the edge node "
                    "(mgmt tier); node-exporter and cAdvisor on every node")



NODES = ("edge", "app", "data", "storage")
RESERVED_LABELS = ("redis", "files")
"""Backup jobs (and R2 buckets) the program adds besides one per database."""


# Over TCP: the postgres image's entrypoint runs initdb's temporary server on the Unix socket
# only and stops it before the real one starts, so a socket check can pass in between and the
# init then finds no server (seen on the rehearsal: "connection to server on socket ... failed").
PG_READY = "pg_isready -h 127.0.0.1 -U postgres -q"


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
    reserved = {**program_containers(monitoring=True), BACKUP_READER: "the MinIO backup reader"}
    for loc, name in claims:
        if name in reserved:
            yield Finding(loc, f"{name!r} is the name of {reserved[name]}'s container or user; rename it")


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
            yield Finding(("app_services", index, "port"), "is required: it is published on the app node's "
                          "private address")
        if spec.publish:
            yield Finding(("app_services", index, "publish"), "the program publishes the port on the app "
                          "node's private address; remove publish")


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
        for key in ("SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY", "SPACES_ENDPOINT", "SPACES_BUCKET_NAME",
                    "SPACES_REGION", "SPACES_FORCE_PATH_STYLE"):
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
def _published(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each node's published address:port once: app services on the app node's private address
    with node-exporter and cAdvisor, and sshd on every node."""
    app_address = cfg.nodes.app.private_address
    program = {cfg.nodes.app.ssh_port: "sshd", monitoring.NODE_EXPORTER_PORT: "node-exporter",
               monitoring.CADVISOR_PORT: "cadvisor"}
    own = [(("app_services", i, "port"), (app_address, s.port)) for i, s in each(cfg.app_services) if s.port]
    for loc, (address, port) in own:
        if port in program:
            yield Finding(loc, f"{address}:{port} is already published by {program[port]} on the app node; "
                               "choose another port")
    yield from duplicates(own, "published address:port", ctx.where)


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
    subnet = ipaddress.ip_network(cfg.egress.edge_subnet)
    needed = 9 + len(EDGE_EXEMPT)
    hosts = list(subnet.hosts()) if subnet.num_addresses <= 65536 else None
    lower = list(subnet.subnets())[0] if subnet.prefixlen < subnet.max_prefixlen else subnet
    if hosts is not None and (len(hosts) < needed or hosts[needed - 1] not in lower):
        yield Finding(("egress", "edge_subnet"), f"{subnet} is too small: {', '.join(EDGE_EXEMPT)} get fixed "
                      f"addresses .{10}-.{needed} in its lower half; use a /27 or larger")


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
    yield from backup_bucket_findings(cfg.backup, _backup_labels(cfg))


def _backup_labels(cfg: PencomConfig) -> list[str]:
    return [d.name for _, d in each(cfg.databases)] + [d.name for _, d in each(cfg.mongo_databases)] \
        + list(RESERVED_LABELS)


def claims(cfg: PencomConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, _backup_labels(cfg)),
            "ingress_addresses": [(("nodes", "edge", "public_address"), cfg.nodes.edge.public_address)]}


def required_secrets(cfg: PencomConfig) -> list[SecretKey]:
    # A node with a bootstrap user gets the deploy user created from this key's public half
    # (tls.get_public_key, which reads the OpenSSH format): checked at the boundary.
    bootstrap = any(getattr(cfg.nodes, n).bootstrap_user for n in NODES)
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the deploy user on all four nodes",
                        format="openssh_private_key" if bootstrap else None)]
    needed += monitoring_secrets(cfg.monitoring)
    for spec in [*cfg.edge_services, *cfg.app_services]:
        needed += [SecretKey(key=k, description=f"{e} of {spec.name}") for e, k in sorted(spec.secret_env.items())]
    return needed + secret_keys.registry_secrets("pencom", _images(cfg))


def _images(cfg: PencomConfig) -> list[str]:
    return [s.image for s in (*cfg.edge_services, *cfg.app_services)]


def role_name(service: str) -> str:
    return service.replace("-", "_")


def proxy_routes(cfg: PencomConfig) -> list[egress.ProxyRoute]:
    routes = [egress.ProxyRoute(name=r.name, domains=tuple(r.domains), clients=tuple(r.services))
              for r in cfg.egress.https]
    routes.append(egress.ProxyRoute(name="nodes", domains=tuple(cfg.egress.host_domains),
                                    clients=(egress.HOST_ROUTE,)))
    return routes


def proxy_env(cfg: PencomConfig) -> dict[str, dict[str, str]]:
    """HTTPS_PROXY for each service with an egress route: its own proxy port, by alias on the
    edge node and by the edge node's private address from the app node."""
    ports = egress.proxy_ports(proxy_routes(cfg))
    edge_names = {s.name for s in cfg.edge_services}
    no_proxy = ",".join(["localhost", "127.0.0.1", cfg.internal_cidr,
                         *sorted(s.name for s in [*cfg.edge_services, *cfg.app_services])])
    out = {}
    for service, port in ports.items():
        if service == egress.HOST_ROUTE:
            continue
        host = PROXY_SERVICE if service in edge_names else cfg.nodes.edge.private_address
        url = f"http://{host}:{port}"
        out[service] = {"HTTPS_PROXY": url, "HTTP_PROXY": url, "NO_PROXY": no_proxy}
    return out


def service_urls(cfg: PencomConfig) -> dict[str, str]:
    """How an edge service reaches each app service (its published port on the app node)."""
    return {f"{s.name.upper().replace('-', '_')}_SERVICE_URL":
            f"http://{cfg.nodes.app.private_address}:{s.port}" for s in cfg.app_services}


EDGE_EXEMPT = (PROXY_SERVICE, "alertmanager", "blackbox")
"""The edge node's containers that reach the internet directly: the proxy for everyone, mail
and Slack for alerts, probes of the public hostnames. The others go through the proxy."""


def edge_egress(cfg: PencomConfig, admin_cidrs: tuple[str, ...]) -> egress.EgressLock:
    """The edge host keeps open egress (it runs the proxy, certbot, apt); its containers do not.
    On the internal network they reach only what the other nodes admit from the edge's address
    (``container_peers``), never SSH: the edge is the bastion, and its containers leave
    masqueraded to its address."""
    static = list(ipaddress.ip_network(cfg.egress.edge_subnet).hosts())
    return egress.EgressLock(bridge="pencom-edge", internal_cidr=cfg.internal_cidr, subnet=cfg.egress.edge_subnet,
                             exempt=tuple((c, str(static[9 + i])) for i, c in enumerate(EDGE_EXEMPT)),
                             internal_peers=container_peers(cfg, "edge", admin_cidrs))


def node_rules(cfg: PencomConfig, admin_cidrs: tuple[str, ...]) -> dict[str, list[tiers.InboundRule]]:
    """Each node's inbound rules (UFW), from the tier model plus the named waivers."""
    return {node: tiers.inbound_rules(role) + extra for node, (role, extra) in _roles(cfg, admin_cidrs).items()}


def container_peers(cfg: PencomConfig, node: str, admin_cidrs: tuple[str, ...]
                    ) -> tuple[tuple[str, int | tuple[int, int]], ...]:
    """(address/32, port or range) that ``node``'s containers may open on the internal network:
    every other node's inbound rule that admits ``node``'s private address (the containers'
    traffic is masqueraded to it), except SSH, which only the operator's jumps through the
    bastion use, and the session collector, which only the hosts' rsyslog uses. Sorted, so the
    rules file is stable."""
    source = ipaddress.ip_address(getattr(cfg.nodes, node).private_address)
    pairs = set()
    for other, rules in node_rules(cfg, admin_cidrs).items():
        if other == node:
            continue
        target = _cidr(getattr(cfg.nodes, other).private_address)
        for rule in rules:
            if rule.port in (tiers.SSH_PORT, hostsetup.SESSION_LOG_PORT) or rule.protocol != "tcp":
                continue
            if any(source.version == ipaddress.ip_network(c, strict=False).version
                   and source in ipaddress.ip_network(c, strict=False) for c in rule.cidrs):
                pairs.add((target, rule.port))
    return tuple(sorted(pairs, key=lambda p: (p[0], p[1] if isinstance(p[1], tuple) else (p[1], p[1]))))


def backup_job_name(stack: str, label: str) -> str:
    return f"{stack}-{label.replace('_', '-')}"


def backup_jobs(stack: str, cfg: PencomConfig) -> list[str]:
    """Every backup job's name, known before the jobs exist so monitoring can expect each one."""
    labels = [d.name for d in [*cfg.databases, *cfg.mongo_databases]] + ["redis", "files"]
    return [backup_job_name(stack, label) for label in labels]



def _owner(user: str | None) -> str:
    if not user:
        return "root:root"
    return user if ":" in user else f"{user}:{user}"


def _cidr(address: str) -> str:
    return f"{address}/32"


def operator_ca_path(name: str) -> str:
    """Where the MinIO provider reads the internal CA on the operator's machine, relative to
    the project directory (the provider runs there). The program writes nothing: the operator
    writes the file from the stack output ``<product>.internalCaPem`` (see the README)."""
    return f"operator/{name}-internal-ca.pem"


def direct_routes_denied(cfg: PencomConfig) -> tuple[hostsetup.OutboundRule, ...]:
    """The direct routes (Oracle ECRS) as flows a node other than the app node may never open:
    only the app node's services use them (through its containers' egress lock), and the edge
    host's own egress is otherwise open (it runs the proxy and certbot)."""
    return tuple(hostsetup.OutboundRule(c, r.port, "tcp", f"{r.name} is the app node's")
                 for r in cfg.egress.direct for c in r.cidrs)


def _roles(cfg: PencomConfig, admin_cidrs: tuple[str, ...]
           ) -> dict[str, tuple[tiers.HostRole, list[tiers.InboundRule]]]:
    """Each node's tier role and its rules beyond the tier model (the read waivers), computed
    once so the UFW rules and the containers' egress to the peers agree."""
    n = cfg.nodes
    ports = egress.proxy_ports(proxy_routes(cfg))
    internal_nodes = [n.app.private_address, n.data.private_address, n.storage.private_address]
    # Internal nodes' own traffic (apt, image pulls, backups) leaves through the proxy port of
    # "hosts"; each app service has its own port.
    proxy_rule = tiers.InboundRule(
        (min(ports.values()), max(ports.values())), cidrs=tuple(_cidr(a) for a in internal_nodes),
        reason="egress proxy")
    bastion_only = (_cidr(n.edge.private_address),)
    # The monitoring stack runs on the edge node (mgmt tier): it alone reaches the exporters.
    metrics = {"metrics_cidrs": bastion_only,
               "metrics_ports": (monitoring.NODE_EXPORTER_PORT, monitoring.CADVISOR_PORT)}
    waiver_rules = [tiers.InboundRule(PORTS["postgres"], cidrs=(_cidr(n.edge.private_address),),
                                      reason=f"{w.service} reads {w.database}") for w in cfg.read_waivers]
    return {
        # The session collector (rsyslog over TLS) takes the internal nodes' hosts' records.
        "edge": (tiers.HostRole(tier=tiers.Tier.EDGE, ssh_cidrs=tuple(admin_cidrs),
                                rules_beyond_tier=(proxy_rule, tiers.InboundRule(
                                    hostsetup.SESSION_LOG_PORT, cidrs=tuple(_cidr(a) for a in internal_nodes),
                                    reason="session logs"))), []),
        "app": (tiers.HostRole(
            tier=tiers.Tier.APP, ssh_cidrs=bastion_only, **metrics,
            service_ports=tuple(s.port for s in cfg.app_services),
            peer_cidrs=(_cidr(n.edge.private_address), _cidr(n.app.private_address))), []),
        "data": (tiers.HostRole(
            tier=tiers.Tier.DATA, ssh_cidrs=bastion_only, **metrics,
            service_ports=(PORTS["postgres"], PORTS["mongodb"], PORTS["redis"]),
            peer_cidrs=(_cidr(n.app.private_address),)), waiver_rules),
        "storage": (tiers.HostRole(
            tier=tiers.Tier.DATA, ssh_cidrs=bastion_only, **metrics, service_ports=(PORTS["minio"],),
            peer_cidrs=(_cidr(n.app.private_address),)), []),
    }


def session_peer_name(name: str) -> str:
    """The name the session collector's certificate carries, which the nodes check."""
    return f"sessions.{name}.internal"


def _edge_node(ctx, cfg: PencomConfig, name: str, ports: dict[str, int], child: pulumi.ResourceOptions
               ) -> OnPremVps:
    """The edge node, firewalled by the tier model: the bastion and egress proxy of the others."""
    env = ctx.environment
    key = ctx.secret(SSH_KEY_SECRET)
    n = cfg.nodes
    admin = tuple(env.admin_cidrs)
    edge = OnPremVps(f"{name}-edge", OnPremVpsArgs(
        address=n.edge.public_address, private_address=n.edge.private_address, private_key=key,
        registry_auth=secret_keys.registry_auth("pencom", _images(cfg)),
        ssh_port=n.edge.ssh_port, bootstrap_user=n.edge.bootstrap_user, access=ctx.admin_access(),
        directories=monitoring.data_directories(f"/srv/{name}-edge"),
        role=_roles(cfg, admin)["edge"][0],
        egress=edge_egress(cfg, admin), denied_outbound=direct_routes_denied(cfg),
    ), opts=child)
    return edge


def _internal_nodes(ctx, cfg: PencomConfig, name: str, ports: dict[str, int], child: pulumi.ResourceOptions,
                    edge: OnPremVps, proxy: pulumi.Resource) -> tuple[OnPremVps, OnPremVps, OnPremVps]:
    """The app, data and storage nodes, firewalled by the tier model, reached through the edge.
    Their setup waits for ``proxy`` (the edge's egress proxy container): their apt and image
    pulls leave through it, and fail on a first ``pulumi up`` while it is not running."""
    key = ctx.secret(SSH_KEY_SECRET)
    n = cfg.nodes
    admin = tuple(ctx.environment.admin_cidrs)
    roles = _roles(cfg, admin)
    direct = tuple(egress.DirectRoute(name=r.name, cidrs=tuple(r.cidrs), port=r.port, clients=tuple(r.services))
                   for r in cfg.egress.direct)

    def internal(node: str, node_cfg: NodeConfig, **extra) -> OnPremVps:
        role, extra_rules = roles[node]
        lock = egress.EgressLock(
            bridge=f"pencom-{node}", internal_cidr=cfg.internal_cidr, resolvers=tuple(cfg.egress.resolvers),
            proxy_url=f"http://{n.edge.private_address}:{ports[egress.HOST_ROUTE]}",
            direct=direct if node == "app" else (), internal_peers=container_peers(cfg, node, admin),
            subnet=getattr(cfg.egress.node_subnets, node))
        return OnPremVps(f"{name}-{node}", OnPremVpsArgs(
            address=node_cfg.private_address, private_address=node_cfg.private_address,
            private_key=key, ssh_port=node_cfg.ssh_port, bootstrap_user=node_cfg.bootstrap_user,
            bastion=edge.ssh, role=role, egress=lock, after=(proxy,), extra_rules=extra_rules,
            denied_outbound=() if node == "app" else direct_routes_denied(cfg), access=ctx.admin_access(),
            registry_auth=secret_keys.registry_auth("pencom", _images(cfg)),
            **extra), opts=child)

    app = internal("app", n.app)
    data = internal("data", n.data,
                    directories=[(m.host_path, "0750", _owner(cfg.redis.user or REDIS_USER))
                                 for m in cfg.redis.mounts if not m.read_only],
                    waivers={f"{w.service} reads {w.database}": w.name for w in cfg.read_waivers})
    minio_api = f"{n.storage.private_address}:{PORTS['minio']}"
    # MinIO runs as its configured user: its data directories and TLS key belong to that user.
    minio_owner = _owner(cfg.minio.user)
    storage = internal("storage", n.storage, permit_open=(minio_api,),
                       directories=[(m.host_path, "0750", minio_owner) for m in cfg.minio.mounts if not m.read_only])
    return app, data, storage


def build(ctx, cfg: PencomConfig) -> dict:
    env = ctx.environment
    prod = env.is_production
    name = f"pencom-{env.name}"
    # The init scripts' names are checked here, on plain values, before anything is registered:
    # the scripts are rendered inside applies, which `pulumi preview` does not run.
    pg_plan = ({d.name: role_name(d.service) for d in cfg.databases},
               {w.database: [role_name(w.service)] for w in cfg.read_waivers} or None)
    check_init_plan(pg_plan[0], [role_name(s) for s in [*(d.service for d in cfg.databases),
                                                         *(w.service for w in cfg.read_waivers)]],
                    readers=pg_plan[1])
    check_mongo_names({d.name: role_name(d.service) for d in cfg.mongo_databases})
    product = Product("pencom")
    child = pulumi.ResourceOptions(parent=product)
    n = cfg.nodes
    routes = proxy_routes(cfg)
    ports = egress.proxy_ports(routes)
    edge = _edge_node(ctx, cfg, name, ports, child)
    minio_api = f"{n.storage.private_address}:{PORTS['minio']}"
    minio_owner = _owner(cfg.minio.user)

    # --- secrets ---------------------------------------------------------------------------
    api_key = generated_password(f"{name}-internal-api-key", product, 48)
    jwt_users = generated_password(f"{name}-jwt-users", product, 64)
    jwt_partners = generated_password(f"{name}-jwt-partners", product, 64)
    pg_superuser = generated_password(f"{name}-pg-superuser", product)
    mongo_root = generated_password(f"{name}-mongo-root", product)
    redis_password = generated_password(f"{name}-redis-password", product)
    minio_root = generated_password(f"{name}-minio-root", product, 40)
    pg_roles = {d.service: generated_password(f"{name}-pg-{d.service}", product) for d in cfg.databases}
    pg_roles |= {w.service: generated_password(f"{name}-pg-{w.service}-reader", product) for w in cfg.read_waivers}
    mongo_users = {d.name: generated_password(f"{name}-mongo-{d.name.replace('_', '-')}", product)
                   for d in cfg.mongo_databases}

    # --- TLS for the data tier -------------------------------------------------------------
    ca = InternalCa(f"{name}-ca", common_name=f"{name} internal CA", opts=child)
    data_cert = ca.issue("data", ["localhost"], ip_addresses=[n.data.private_address, "127.0.0.1"])
    minio_cert = ca.issue("minio", ["localhost"], ip_addresses=[n.storage.private_address, MINIO_TUNNEL_HOST])
    ca_file = HostFile(container_path=CA_PATH, content=ca.cert_pem)
    minio_ca_file = HostFile(container_path="/run/platform/certs/CAs/ca.crt", content=ca.cert_pem)

    def url(template: str, password: pulumi.Output[str]) -> pulumi.Output[str]:
        return pulumi.Output.secret(password.apply(lambda pw: template.format(pw=pw)))

    data_host = n.data.private_address
    injected: dict[str, dict[str, pulumi.Input[str]]] = {}
    for spec in [*cfg.edge_services, *cfg.app_services]:
        injected[spec.name] = {"INTERNAL_API_KEY": api_key}
    for service in cfg.jwt.users:
        injected[service]["JWT_SECRET"] = jwt_users
    for service in cfg.jwt.partners:
        injected[service]["PFC_JWT_SECRET"] = jwt_partners
    tls_query = f"sslmode=verify-full&sslrootcert={CA_PATH}"
    for d in cfg.databases:
        injected[d.service][d.env or "DATABASE_URL"] = url(
            f"postgresql://{role_name(d.service)}:{{pw}}@{data_host}:5432/{d.name}?{tls_query}", pg_roles[d.service])
    for w in cfg.read_waivers:
        injected[w.service][w.env] = url(
            f"postgresql://{role_name(w.service)}:{{pw}}@{data_host}:5432/{w.database}?{tls_query}",
            pg_roles[w.service])
    for d in cfg.mongo_databases:
        injected[d.service][d.env or "MONGODB_URI"] = url(
            f"mongodb://{role_name(d.service)}:{{pw}}@{data_host}:27017/{d.name}"
            f"?authSource={d.name}&tls=true&tlsCAFile={CA_PATH}", mongo_users[d.name])
    for service in cfg.redis_clients:
        injected[service]["REDIS_URL"] = url(f"rediss://default:{{pw}}@{data_host}:6379", redis_password)

    # --- MinIO: the bucket is managed through an SSH tunnel to the storage node ----------------
    minio_provider = minio.Provider(
        f"{name}-minio", minio_server=f"{MINIO_TUNNEL_HOST}:{cfg.bucket.tunnel_port}", minio_user=MINIO_ROOT_USER,
        minio_password=minio_root, minio_ssl=True,
        minio_cacert_file=operator_ca_path(name),
        opts=pulumi.ResourceOptions(parent=product))
    bucket = MinioBucket(f"{name}-files", MinioBucketArgs(
        bucket=cfg.bucket.name, provider=minio_provider, protect=prod,
        noncurrent_version_days=cfg.bucket.noncurrent_version_days,
        consumers=[MinioConsumer(service=c.service, prefixes=tuple(c.prefixes), write=c.write)
                   for c in cfg.bucket.consumers]
        + [MinioConsumer(service=BACKUP_READER, write=False,
                         prefixes=tuple(sorted({p for c in cfg.bucket.consumers for p in c.prefixes})))]),
        opts=child)
    for consumer in cfg.bucket.consumers:
        access, secret = bucket.credentials[consumer.service]
        injected[consumer.service] |= {
            "SPACES_ACCESS_KEY_ID": access, "SPACES_SECRET_ACCESS_KEY": secret}

    plain: dict[str, dict[str, str]] = {}
    for spec in [*cfg.edge_services, *cfg.app_services]:
        plain[spec.name] = {"NODE_EXTRA_CA_CERTS": CA_PATH}
    for spec in cfg.edge_services:
        plain[spec.name] |= service_urls(cfg)
    for consumer in cfg.bucket.consumers:
        plain[consumer.service] |= {"SPACES_ENDPOINT": f"https://{minio_api}", "SPACES_BUCKET_NAME": cfg.bucket.name,
                                    "SPACES_REGION": "us-east-1", "SPACES_FORCE_PATH_STYLE": "true"}
    for service, values in proxy_env(cfg).items():
        plain[service] |= values

    def with_env(spec: ContainerSpec, **update) -> ContainerSpec:
        clash = set(plain.get(spec.name, {})) & (set(spec.env) | set(spec.secret_env))
        if clash:
            raise ValueError(f"{spec.name}: {sorted(clash)} are set by the program; remove them from the config")
        return spec.model_copy(update={"env": {**spec.env, **plain.get(spec.name, {})}, **update})

    service_secrets = merge_env(service_secret_env(ctx.secret, [*cfg.edge_services, *cfg.app_services]), injected)

    def secrets_of(specs) -> dict:
        return {s.name: service_secrets[s.name] for s in specs}

    # --- edge: nginx, gateways, egress proxy --------------------------------------------------
    squid_conf = egress.render_squid_conf(routes, ports, allowed_sources=[cfg.internal_cidr, *DOCKER_POOLS])
    proxy = cfg.egress.proxy.model_copy(update={
        "publish": [PublishedPort(host_port=p, container_port=p) for p in sorted(ports.values())]})
    records = []
    if cfg.dns:
        records = a_records(name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=[r.host for r in cfg.routes],
                            address=n.edge.public_address, ttl=cfg.dns.ttl, parent=product,
                            cloudflare_zone_id=cfg.dns.cloudflare_zone_id)
    by_edge = {s.name: s for s in cfg.edge_services}
    ingress = Ingress(routes=[IngressRoute(host=r.host, service=r.service, port=by_edge[r.service].port,
                                           websocket=r.websocket) for r in cfg.routes],
                      acme_email=cfg.acme_email, depends_on=records)
    edge_files = {s.name: [ca_file] for s in cfg.edge_services}
    edge_files[PROXY_SERVICE] = [HostFile(container_path="/etc/squid/squid.conf", content=squid_conf)]
    mon = cfg.monitoring
    internal_exporters = [(a, port) for a in (n.app.private_address, n.data.private_address, n.storage.private_address)
                          for port in (monitoring.NODE_EXPORTER_PORT, monitoring.CADVISOR_PORT)]
    edge_names = {s.name for s in cfg.edge_services}
    targets = prometheus.ScrapeTargets(
        node=[f"node-exporter:{monitoring.NODE_EXPORTER_PORT}"]
        + [f"{a}:{p}" for a, p in internal_exporters if p == monitoring.NODE_EXPORTER_PORT],
        cadvisor=[f"cadvisor:{monitoring.CADVISOR_PORT}"]
        + [f"{a}:{p}" for a, p in internal_exporters if p == monitoring.CADVISOR_PORT],
        services={s.name: [f"{s.name}:{s.port}" if s.name in edge_names else f"{n.app.private_address}:{s.port}"]
                  for s in [*cfg.edge_services, *cfg.app_services] if s.name in mon.metrics_services},
        probes=[f"https://{r.host}" for r in cfg.routes])
    alerts = env.alerts
    files_for_monitoring = monitoring.monitoring_files(
        mon, targets, prometheus.AlertRoutes(emails=tuple(alerts.emails), slack_channel=alerts.slack_channel,
                                             sender=mon.smtp_from),
        smtp_password=ctx.secret(mon.smtp_password_secret) if mon.smtp_password_secret else None,
        slack_url=ctx.secret("alerts_slack_webhook_url") if alerts.slack_channel else None,
        backup_jobs=backup_jobs(name, cfg))
    grafana_password = generated_password(f"{name}-grafana-admin", product)
    edge_created = edge.deploy(
        [*(with_env(s) for s in cfg.edge_services), proxy,
         *monitoring.server_specs(mon, edge.data_dir), *monitoring.exporter_specs(mon, publish=False)],
        ingress=ingress, files={**edge_files, **files_for_monitoring},
        secret_env={**secrets_of(cfg.edge_services), "grafana": {"GF_SECURITY_ADMIN_PASSWORD": grafana_password}})

    app, data, storage = _internal_nodes(ctx, cfg, name, ports, child, edge, edge_created[PROXY_SERVICE])

    # --- admin sessions: the internal nodes ship their audit records to the edge (mgmt tier) --
    peer = session_peer_name(name)
    collector = ca.issue("sessions", [peer], ip_addresses=[n.edge.private_address])
    edge.collect_sessions(n.edge.private_address, collector.cert_pem, collector.key_pem, ca.cert_pem)
    for node in (app, data, storage):
        node.ship_sessions(hostsetup.SessionShipping(collector=n.edge.private_address, peer_name=peer,
                                                     ca_pem=ca.cert_pem))

    # --- app -------------------------------------------------------------------------------
    app.deploy(
        [*(with_env(s, publish=[PublishedPort(host_port=s.port, container_port=s.port)]) for s in cfg.app_services),
         *monitoring.exporter_specs(cfg.monitoring, publish=True)],
        files={s.name: [ca_file] for s in cfg.app_services},
        secret_env=secrets_of(cfg.app_services))

    # --- data ------------------------------------------------------------------------------
    mongo_pem = pulumi.Output.secret(pulumi.Output.all(data_cert.cert_pem, data_cert.key_pem).apply(
        lambda parts: parts[0].rstrip("\n") + "\n" + parts[1]))

    def key_file(path: str, content, owner: str) -> HostFile:
        # Each image's user must own its key, readable by nobody else.
        return HostFile(container_path=path, content=content, mode="0600", owner=owner)

    data_specs = [
        cfg.postgres.model_copy(update={
            "publish": [PublishedPort(host_port=5432, container_port=5432)],
            "command": ["postgres", "-c", "ssl=on", "-c", f"ssl_cert_file={TLS_DIR}/server.crt",
                        "-c", f"ssl_key_file={TLS_DIR}/server.key", "-c", "ssl_min_protocol_version=TLSv1.2",
                        "-c", "listen_addresses=*", *hba_file_args()]}),
        cfg.mongodb.model_copy(update={
            "publish": [PublishedPort(host_port=27017, container_port=27017)],
            "command": ["mongod", "--auth", "--bind_ip_all", "--tlsMode", "requireTLS",
                        "--tlsCertificateKeyFile", f"{TLS_DIR}/mongodb.pem"]}),
        cfg.redis.model_copy(update={
            "user": cfg.redis.user or REDIS_USER,
            "publish": [PublishedPort(host_port=6379, container_port=6379)],
            "command": ["sh", "-c", "exec redis-server --port 0 --tls-port 6379 "
                        f"--tls-cert-file {TLS_DIR}/server.crt --tls-key-file {TLS_DIR}/redis.key "
                        f"--tls-ca-cert-file {CA_PATH} --tls-auth-clients no "
                        '--requirepass "$REDIS_PASSWORD" --appendonly yes']}),
    ]
    data_files = {
        cfg.postgres.name: [HostFile(container_path=f"{TLS_DIR}/server.crt", content=data_cert.cert_pem),
                            key_file(f"{TLS_DIR}/server.key", data_cert.key_pem, "999:999"), ca_file,
                            HostFile(container_path=HBA_PATH, content=render_pg_hba())],
        cfg.mongodb.name: [key_file(f"{TLS_DIR}/mongodb.pem", mongo_pem, "999:999"), ca_file],
        cfg.redis.name: [HostFile(container_path=f"{TLS_DIR}/server.crt", content=data_cert.cert_pem),
                         key_file(f"{TLS_DIR}/redis.key", data_cert.key_pem, _owner(cfg.redis.user or REDIS_USER)),
                         ca_file],
    }
    data_created = data.deploy([*data_specs, *monitoring.exporter_specs(cfg.monitoring, publish=True)], files=data_files, secret_env={
        cfg.postgres.name: {"POSTGRES_PASSWORD": pg_superuser},
        cfg.mongodb.name: {"MONGO_INITDB_ROOT_USERNAME": "root", "MONGO_INITDB_ROOT_PASSWORD": mongo_root},
        cfg.redis.name: {"REDIS_PASSWORD": redis_password},
    })

    role_passwords = pulumi.Output.all(**{role_name(s): pw for s, pw in pg_roles.items()})
    wal_password = generated_password(f"{name}-pg-wal", product)
    sql = pulumi.Output.all(role_passwords, wal_password).apply(lambda a: render_init_sql(
        pg_plan[0], a[0], readers=pg_plan[1]) + replication_role_sql(a[1]))
    pg_init = datastore_init(f"{name}-postgres-init", data.ssh, stack=data.pulumi_resource_name, service=cfg.postgres.name,
                             text=sql, ready=PG_READY,
                             apply="psql -U postgres -v ON_ERROR_STOP=1 -q",
                             path=f"/etc/platform/{name}-postgres-init.sql", parent=data,
                             depends_on=[data_created[cfg.postgres.name]])
    mongo_js = pulumi.Output.all(**mongo_users).apply(lambda pws: render_mongo_init_js(
        {d.name: (role_name(d.service), pws[d.name]) for d in cfg.mongo_databases}))
    # Single-quoted: the root password is expanded inside the container, from its own env.
    mongo_shell = (f'mongosh --quiet --tls --tlsCAFile {CA_PATH} --host localhost '
                   '-u root -p "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin')
    mongo_init = datastore_init(f"{name}-mongodb-init", data.ssh, stack=data.pulumi_resource_name, service=cfg.mongodb.name,
                                text=mongo_js, ready=f"sh -c '{mongo_shell} --eval \"db.runCommand({{ping: 1}})\"'",
                                apply=f"sh -c '{mongo_shell}'", path=f"/etc/platform/{name}-mongodb-init.js",
                                parent=data, depends_on=[data_created[cfg.mongodb.name]])

    # --- storage ---------------------------------------------------------------------------
    storage_created = storage.deploy(
        [cfg.minio.model_copy(update={
            "publish": [PublishedPort(host_port=9000, container_port=9000)],
            "command": ["server", "/data", "--address", ":9000", "--console-address", "127.0.0.1:9001",
                        "--certs-dir", "/run/platform/certs"]}),
         *monitoring.exporter_specs(cfg.monitoring, publish=True)],
        files={cfg.minio.name: [
            HostFile(container_path="/run/platform/certs/public.crt", content=minio_cert.cert_pem),
            key_file("/run/platform/certs/private.key", minio_cert.key_pem, minio_owner),
            minio_ca_file]},
        secret_env={cfg.minio.name: {"MINIO_ROOT_USER": MINIO_ROOT_USER, "MINIO_ROOT_PASSWORD": minio_root}})

    # --- off-site backups: the data node for its datastores, the storage node for the bucket ----
    runner_env = {"HTTPS_PROXY": f"http://{n.edge.private_address}:{ports[egress.HOST_ROUTE]}",
                  "NO_PROXY": f"localhost,127.0.0.1,{cfg.internal_cidr}"}
    data_ca = host_path_for(data.data_dir, cfg.postgres.name, ca_file)
    jobs = []
    for d in cfg.databases:
        jobs.append((d.name, "postgres", cfg.postgres, data, url(
            f"postgresql://{role_name(d.service)}:{{pw}}@127.0.0.1:5432/{d.name}"
            f"?sslmode=verify-full&sslrootcert={data_ca}", pg_roles[d.service]), [pg_init], {}))
    mongo_ca = host_path_for(data.data_dir, cfg.mongodb.name, ca_file)
    for d in cfg.mongo_databases:
        jobs.append((d.name, "mongodb", cfg.mongodb, data, url(
            f"mongodb://{role_name(d.service)}:{{pw}}@127.0.0.1:27017/{d.name}"
            f"?authSource={d.name}&tls=true&tlsCAFile={mongo_ca}", mongo_users[d.name]), [mongo_init], {}))
    jobs.append(("redis", "redis", cfg.redis, data, url("rediss://default:{pw}@127.0.0.1:6379", redis_password),
                 [data_created[cfg.redis.name]],
                 {"BACKUP_CA_CERT": host_path_for(data.data_dir, cfg.redis.name, ca_file)}))
    access, secret = bucket.credentials[BACKUP_READER]
    jobs.append(("files", "minio", cfg.minio, storage, pulumi.Output.secret(pulumi.Output.all(access, secret).apply(
        lambda keys: f"https://{keys[0]}:{keys[1]}@{minio_api}/{cfg.bucket.name}")),
        [storage_created[cfg.minio.name], bucket],
        {"RCLONE_CA_CERT": host_path_for(storage.data_dir, cfg.minio.name, minio_ca_file)}))
    # Point-in-time recovery of the cluster: one WAL archive, at the strictest RPO of its databases.
    jobs.append(("wal", "pitr", cfg.postgres, data, url(
        f"postgresql://{WAL_ROLE}:{{pw}}@127.0.0.1:5432/postgres", wal_password), [pg_init], {}))
    cluster_rpo = min(d.rpo_minutes for d in cfg.databases)
    rpo_by_label = {d.name: d.rpo_minutes for d in cfg.databases}
    for label, kind, spec, runner, uri, ready, extra_env in jobs:
        job = backup_job_name(name, label)
        R2Backup(f"{job}-backup", R2BackupArgs(
            job=BackupJob(job=job, kind=kind, retention_days=cfg.backup.retention_days,
                          mode="host" if kind == "minio" else "docker", tool_image=spec.image,
                          mounts=(f"{runner.data_dir}/files",), rpo_minutes=cluster_rpo,
                          # The data node publishes its datastores on its private address only,
                          # so 127.0.0.1 is theirs only inside the server's own network namespace.
                          source_service=spec.name if kind != "minio" else ""),
            rpo_minutes=cluster_rpo if kind == "pitr" else rpo_by_label.get(label),
            source_name=f"{runner.pulumi_resource_name}-{spec.name}", source_uri=uri,
            account_id=cfg.backup.cloudflare_account_id, bucket_name=f"{cfg.backup.bucket}-{label.replace('_', '-')}",
            location=cfg.backup.location, lock_days=cfg.backup.lock_days, runner=runner.ssh,
            runner_ready=ready, protect=prod, environment={**runner_env, **extra_env},
            backup_calendar=cfg.backup.schedule, restore_calendar=cfg.backup.restore_test_schedule,
        ), opts=child)

    outputs = {
        "edgeAddress": n.edge.public_address,
        "urls": [f"https://{r.host}" for r in cfg.routes],
        "waivers": [w.name for w in cfg.read_waivers],
        "internalCaPem": ca.cert_pem,
        # Grafana listens on the edge node's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<edge>.
        "grafanaAdminPassword": pulumi.Output.secret(grafana_password),
    }
    product.register_outputs(outputs)
    return outputs


PRODUCT = ProductDefinition(name="pencom", config_model=PencomConfig, build=build, secrets=required_secrets,
                            claims=claims)
