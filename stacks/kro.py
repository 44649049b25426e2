"""KRO: one droplet (nginx, backend, frontend, admin-frontend) and a managed Postgres cluster.

Deploys are idempotent remote commands run as a deploy user, with root login closed; each
environment is its own stack with its own VPC, database and credentials; certificates are
renewed by certbot's timer, nginx reloaded by a deploy hook.
"""

from __future__ import annotations

from typing import Annotated, Iterator, Literal

import pulumi
import pulumi_digitalocean as do
from pydantic import AfterValidator, EmailStr, Field

from components import monitoring, tiers
from components.containers import ContainerSpec
from components.database import (ConnectionPool, ManagedDatabaseCluster,
                                 ManagedDatabaseClusterArgs, TrustedSourceInput)
from components.dns import a_records
from components.do_monitoring import droplet_alerts, uptime_checks
from components.droplet_stack import DropletBackups, DropletStack, DropletStackArgs
from components.monitoring import MonitoringConfig
from components.ingress import Ingress, IngressRoute
from components.service_files import HostFile, host_path_for
from validation.rules import Finding, RuleContext, each, rule
from stacks.collisions import duplicates, program_containers, reserved_names
from stacks.product import (Product, generated_password, host_monitoring, merge_env, product_foundation,
                            service_secret_env)
from stacks.secret_keys import monitoring_secrets, secret_key_findings
from stacks.shared_config import (BackupConfig, ContainerEgressConfig, DnsConfig, RouteConfig,
                                  alert_email_findings, backup_bucket_findings, container_egress_lock,
                                  derived_buckets, egress_allow_findings, hosts_in_zone,
                                  injected_env_findings, monitoring_findings)
from stacks import management, secret_keys
from stacks.definition import SecretKey
from stacks.environment import DO_REGIONS
from validation.fields import PrivateCidr, ResourceName, StrictModel
from stacks.definition import ProductDefinition
from stacks.backups import provision_backup
from stacks.wiring import backup_job_name, service_secret_keys
from validation.provider_lists import check_version, validator as provider_slug

SSH_KEY_SECRET = "kro_ssh_private_key"


class DropletConfig(StrictModel):
    size: Annotated[str, AfterValidator(provider_slug("droplet_sizes", "droplet size"))] = Field(
        description="droplet size slug, e.g. s-2vcpu-4gb")
    image: str = Field(default="ubuntu-24-04-x64", pattern=r"^ubuntu-\d\d-04-x64$",
                       description="Ubuntu LTS image slug; changing it replaces the droplet")
    ssh_key_fingerprints: list[Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")]] = Field(
        min_length=1, description="MD5 fingerprints (aa:bb:...) of DigitalOcean SSH keys for the first boot")
    backups: bool = Field(default=True, description="weekly provider backups of the droplet")


class DatabaseConfig(StrictModel):
    version: Annotated[str, AfterValidator(lambda v: check_version("pg", v))] = Field(
        default="16", description="Postgres major version")
    size: Annotated[str, AfterValidator(provider_slug("database_sizes", "database node size"))] = Field(
        description="node size slug, e.g. db-s-1vcpu-2gb")
    node_count: int = Field(default=1, ge=1, le=3, description="nodes; 2+ adds a standby")
    name: str = Field(default="kro", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                                     description="application database name")
    user: str = Field(default="kro_backend", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                      description="application database user (password generated)")
    pool_size: int = Field(default=10, ge=1, le=100, description="PgBouncer pool size")
    use_pool: bool = Field(default=False, description="backend connects through the pool; off "
                           "by default because migrations need session features")
    maintenance_day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                             "sunday"] = Field(default="sunday", description="maintenance day")
    maintenance_hour: str = Field(default="02:00", pattern=r"^([01]\d|2[0-3]):00$",
                                  description="maintenance window start, UTC, on the hour")


class AdoptConfig(StrictModel):
    """IDs of existing resources that the first ``pulumi up`` adopts instead of creating."""

    droplet_id: str | None = Field(default=None, pattern=r"^\d+$", description="droplet id")
    database_cluster_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f-]{36}$", description="database cluster uuid")
    domain: bool = Field(default=False, description="adopt the DigitalOcean DNS domain (zone) "
                         "so the program manages it; records are managed either way")


class KroConfig(StrictModel):
    """Settings of the KRO product in one stack."""

    region: Literal[DO_REGIONS] | None = Field(  # type: ignore[valid-type]
        default=None, description="region slug; defaults to environment.region")
    vpc_ip_range: PrivateCidr = Field(description="private range of the product's VPC, e.g. 10.110.0.0/20")
    droplet: DropletConfig = Field(description="the droplet that runs the containers")
    database: DatabaseConfig = Field(description="the managed Postgres cluster")
    services: list[ContainerSpec] = Field(min_length=1, description="containers behind nginx")
    database_service: ResourceName = Field(
        default="backend", description="service that gets DATABASE_URL and the cluster CA")
    database_ca_path: str = Field(
        pattern=r"^/[^\s]+\.crt$",
        description="where the database service reads the cluster CA, e.g. "
        "/usr/src/app/kro-prod-db-cluster-ca-certificate.crt")
    routes: list[RouteConfig] = Field(min_length=1, description="hostname -> service routes")
    dns: DnsConfig = Field(description="where the hostnames are published")
    acme_email: EmailStr = Field(description="Let's Encrypt account email (expiry notices)")
    acme_staging: bool = Field(default=False, description="use Let's Encrypt's staging CA")
    backup: BackupConfig = Field(description="off-site backup of the database to R2, restore-"
                                 "tested weekly on the droplet")
    adopt: AdoptConfig = Field(default_factory=AdoptConfig, description="resources to adopt")
    monitoring: MonitoringConfig | None = Field(
        default=None, description="self-hosted Prometheus, Alertmanager, Grafana and exporters on the "
                                  "droplet (mgmt tier), watching its host and the backup jobs; unset: none")
    egress: ContainerEgressConfig = Field(
        default_factory=ContainerEgressConfig,
        description="where the droplet's containers may open connections: direct egress is dropped except this allow-list (by address and port, per "
                    "service); Alertmanager and the blackbox prober are the program's exemptions")



@rule(KroConfig)
def _services(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Unique names, none a container the program adds; app tier, published by the ingress only."""
    yield from duplicates(((("services", i, "name"), s.name) for i, s in each(cfg.services)), "service name",
                          ctx.where)
    yield from reserved_names(cfg.services, "services", program_containers(monitoring=True))
    for index, spec in each(cfg.services):
        if spec.publish:
            yield Finding(("services", index, "publish"), "only the ingress publishes ports; remove publish "
                                                          "and add a route")
        if spec.tier is not tiers.Tier.APP:
            yield Finding(("services", index, "tier"), f"KRO services are app tier, got {spec.tier.value}")
    yield from secret_key_findings("kro", "services", cfg.services)


@rule(KroConfig)
def _routes(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each route names a service with a port; each hostname once, inside the DNS zone."""
    by_name = {s.name: (i, s) for i, s in each(cfg.services)}
    for index, route in each(cfg.routes):
        if route.service not in by_name:
            yield Finding(("routes", index, "service"), f"{route.service} is not a service "
                          f"(services: {', '.join(sorted(by_name))})")
        elif by_name[route.service][1].port is None:
            yield Finding(("routes", index, "service"), f"{route.service} has no port to route to; set "
                          f"{ctx.where('services', by_name[route.service][0], 'port')}")
    yield from duplicates(((("routes", i, "host"), r.host) for i, r in each(cfg.routes)), "hostname", ctx.where)


@rule(KroConfig)
def _routes_in_zone(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from hosts_in_zone([(("routes", i, "host"), r.host) for i, r in each(cfg.routes)], cfg.dns.zone)


@rule(KroConfig)
def _database_service(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    names = {s.name for _, s in each(cfg.services)}
    if cfg.database_service not in names:
        yield Finding(("database_service",), f"{cfg.database_service} is not a service "
                      f"(services: {', '.join(sorted(names))})")
    yield from injected_env_findings("services", cfg.services, {
        cfg.database_service: {"DATABASE_URL": "the managed database's URL"}})


@rule(KroConfig)
def _monitoring(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from monitoring_findings(cfg.monitoring, "kro", {s.name: s for _, s in each(cfg.services)},
                                   where=lambda n: ctx.where("services", next(i for i, s in each(cfg.services)
                                                                              if s.name == n), "port"))
    yield from alert_email_findings(cfg.monitoring, ctx)


@rule(KroConfig)
def _adopt_domain(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    if cfg.adopt.domain and cfg.dns.provider != "digitalocean":
        yield Finding(("adopt", "domain"), f"only a DigitalOcean DNS zone can be adopted; dns.provider is "
                      f"{cfg.dns.provider} (set adopt.domain false)")


@rule(KroConfig)
def _egress(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from egress_allow_findings(cfg.egress, [s.name for _, s in each(cfg.services)])


@rule(KroConfig)
def _backup_bucket(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, [""])


def claims(cfg: KroConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, [""])}


def required_secrets(cfg: KroConfig) -> list[SecretKey]:
    needed = [SecretKey(key=SSH_KEY_SECRET,
                        description="private SSH key of the droplet's deploy user (OpenSSH PEM)")]
    needed += service_secret_keys(cfg.services, lambda env, service: f"{env} of the {service} service")
    return (needed + monitoring_secrets(cfg.monitoring)
            + secret_keys.registry_secrets("kro", [s.image for s in cfg.services]))


def build(ctx, cfg: KroConfig) -> dict:
    env = ctx.environment
    prod = env.is_production
    name = f"kro-{env.name}"
    region = cfg.region or env.region
    product = Product("kro")
    child = pulumi.ResourceOptions(parent=product)

    project, vpc = product_foundation(product, name=name, label="KRO", production=prod,
                                      region=region, ip_range=cfg.vpc_ip_range)

    watch_names = [s.name for s in monitoring.server_specs(cfg.monitoring, "")] if cfg.monitoring else []
    # The backend reaches its managed Postgres in the VPC (the cluster's port and its pool's).
    lock = container_egress_lock(
        cfg.egress, bridge="kro-ctr", containers=[*(s.name for s in cfg.services), *watch_names],
        internal_cidr=cfg.vpc_ip_range,
        extra=[(cfg.database_service, cfg.vpc_ip_range, port) for port in (25060, 25061)])
    host = DropletStack(name, DropletStackArgs(
        region=region, size=cfg.droplet.size, image=cfg.droplet.image,
        ssh_key_fingerprints=cfg.droplet.ssh_key_fingerprints, vpc_id=vpc.id,
        admin_cidrs=management.public_ssh_sources(env.management, env.admin_cidrs),
        wireguard=management.endpoint(env.management, "kro"),
        connect_address=management.connect_address(env.management, "kro", None),
        ssh_private_key=ctx.secret(SSH_KEY_SECRET), access=ctx.admin_access(),
        registry_auth=secret_keys.registry_auth("kro", [s.image for s in cfg.services]),
        tier=tiers.Tier.EDGE, workload_tiers=[tiers.Tier.APP], tags=["kro", f"env-{env.name}"],
        backups=DropletBackups() if cfg.droplet.backups else None,
        project_id=project.id, adopt_droplet_id=cfg.adopt.droplet_id, protect=prod,
        directories=monitoring.data_directories(f"/srv/{name}") if cfg.monitoring else (),
        egress=lock,
    ), opts=child)

    database = ManagedDatabaseCluster(f"{name}-db", ManagedDatabaseClusterArgs(
        engine="pg", version=cfg.database.version, size=cfg.database.size,
        node_count=cfg.database.node_count, region=region, vpc_id=vpc.id,
        trusted_sources=[TrustedSourceInput(kind="droplet", value=host.droplet_id,
                                            tier=tiers.Tier.APP)],
        maintenance_day=cfg.database.maintenance_day,
        maintenance_hour=cfg.database.maintenance_hour,
        databases=[cfg.database.name], users=[cfg.database.user],
        pools=[ConnectionPool(name=f"{cfg.database.name}-pool", database=cfg.database.name,
                              user=cfg.database.user, size=cfg.database.pool_size)],
        project_id=project.id, tags=["kro", f"env-{env.name}"],
        adopt_cluster_id=cfg.adopt.database_cluster_id, protect=prod,
    ), opts=child)

    if cfg.dns.provider == "digitalocean" and cfg.adopt.domain:
        do.Domain(f"{name}-domain", name=cfg.dns.zone,
                  opts=pulumi.ResourceOptions(parent=product, import_=cfg.dns.zone,
                                              protect=True, retain_on_delete=True))
    hosts = [r.host for r in cfg.routes]
    records = a_records(name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=hosts,
                        address=host.public_ip, ttl=cfg.dns.ttl, parent=product,
                        cloudflare_zone_id=cfg.dns.cloudflare_zone_id)

    ports = {s.name: s.port for s in cfg.services}
    ingress = Ingress(
        routes=[IngressRoute(host=r.host, service=r.service, port=ports[r.service],
                             websocket=r.websocket) for r in cfg.routes],
        acme_email=cfg.acme_email, acme_staging=cfg.acme_staging, depends_on=records,
    )
    database_url = database.uri(
        ca_path=cfg.database_ca_path, user=cfg.database.user, database=cfg.database.name,
        pool=f"{cfg.database.name}-pool" if cfg.database.use_pool else None)
    ca_file = HostFile(container_path=cfg.database_ca_path, content=database.ca_certificate)
    watch = monitoring.HostMonitoring(specs=[], files={}, secret_env={})
    if cfg.monitoring:
        watch = host_monitoring(
            ctx, cfg.monitoring, data_dir=host.data_dir,
            grafana_password=generated_password(f"{name}-grafana-admin", product),
            service_ports={s: ports[s] for s in cfg.monitoring.metrics_services},
            probes=[f"https://{h}" for h in [r.host for r in cfg.routes]], backup_jobs=[backup_job_name(name, "db")])
    host.deploy(
        [*cfg.services, *watch.specs],
        secret_env=merge_env(service_secret_env(ctx.secret, cfg.services),
                             {cfg.database_service: {"DATABASE_URL": database_url}}, watch.secret_env),
        files={cfg.database_service: [ca_file], **watch.files},
        ingress=ingress,
    )
    # The droplet is the backup runner; it reads the CA file the backend mounts.
    ca_on_host = host_path_for(host.data_dir, cfg.database_service, ca_file)
    backup = provision_backup(
        name, "db", cfg.backup, kind="postgres", tool_image=f"postgres:{cfg.database.version}-alpine",
        mounts=(ca_on_host.rsplit("/", 1)[0],), bucket_per_job=False,
        source_name=database.cluster_resource_name,
        source_uri=database.uri(ca_path=ca_on_host, user=cfg.database.user, database=cfg.database.name),
        runner=host.ssh, runner_ready=host.files_delivered, protect=prod, opts=child)
    destinations = ctx.alert_destinations()
    droplet_alerts(name, [host.droplet_id], destinations, product)
    uptime_checks(name, [f"https://{h}" for h in hosts], destinations, product)
    outputs = {
        "public_ip": host.public_ip,
        "droplet_id": host.droplet_id,
        "database_host": database.private_host,
        "backup_bucket": backup.bucket.name,
        "urls": [f"https://{h}" for h in hosts],
        "wireguard": management.endpoint_output(env.management, "kro", host.public_ip, host.wireguard_public_key),
    }
    product.register_outputs(outputs)
    return outputs


PRODUCT = ProductDefinition(name="kro", config_model=KroConfig, build=build, secrets=required_secrets,
                            claims=claims)
