"""GIV (KROGiving): App Platform (backend service, two static sites), managed MongoDB, Postgres
and Valkey (DigitalOcean replaced managed Redis with Valkey), a Spaces media bucket, and a small
ops droplet in the VPC that runs the off-site backups.

The app is code (CI on a git tag runs `pulumi up` or `doctl apps create-deployment`); the
Spaces key is limited to the one bucket and wired as SECRET; each database has its own
firewall, admitting the app and the ops droplet only.
"""

from __future__ import annotations

from typing import Annotated, Iterator, Literal

import pulumi
import pulumi_digitalocean as do
from pydantic import AfterValidator, Field

from components import monitoring, tiers
from components.app_platform import AppComponent, AppPlatformApp, AppPlatformAppArgs, DatabaseAttachment
from components.do_monitoring import droplet_alerts, uptime_checks
from components.database import ManagedDatabaseCluster, ManagedDatabaseClusterArgs, TrustedSourceInput
from components.droplet_stack import DropletBackups, DropletStack, DropletStackArgs
from components.monitoring import MonitoringConfig
from components.service_files import HostFile, host_path_for
from validation.rules import Finding, RuleContext, each, rule
from stacks import management
from stacks.collisions import duplicates
from stacks.product import Product, generated_password, host_monitoring, product_foundation
from stacks.secret_keys import monitoring_secrets, secret_key_findings
from stacks.shared_config import (BackupConfig, ContainerEgressConfig, alert_email_findings,
                                  backup_bucket_findings, container_egress_lock, derived_buckets,
                                  egress_allow_findings, hosts_in_zone, injected_env_findings,
                                  monitoring_findings)
from stacks.definition import SecretKey
from stacks.environment import DO_REGIONS
from stacks.definition import ProductDefinition
from stacks.backups import provision_backup
from stacks.wiring import backup_job_name, service_secret_keys
from validation.fields import Hostname, PrivateCidr, StrictModel
from validation.provider_lists import check_version, digitalocean, validator as provider_slug

SSH_KEY_SECRET = "giv_ssh_private_key"
APP_REGIONS = tuple(digitalocean()["app_regions"])
SPACES_REGIONS = tuple(digitalocean()["spaces_regions"])
BACKUP_LABELS = ("pg", "mongo")
"""R2 buckets ``<backup.bucket>-<label>``, one per backed-up cluster."""
WEEKDAYS = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
CA_DIR = "/workspace/.certs"


class ClusterConfig(StrictModel):
    version: str = Field(pattern=r"^\d+$", description="major version (checked per engine against "
                         "validation/data/digitalocean.json)")
    size: Annotated[str, AfterValidator(provider_slug("database_sizes", "database node size"))] = Field(
        description="node size slug")
    node_count: int = Field(default=1, ge=1, le=3, description="nodes; 2+ adds a standby")
    maintenance_day: WEEKDAYS = Field(default="sunday", description="maintenance day")
    maintenance_hour: str = Field(default="02:00", pattern=r"^([01]\d|2[0-3]):00$",
                                  description="maintenance window start, UTC")


class MediaBucketConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", description="Spaces bucket name")
    region: Literal[SPACES_REGIONS] = Field(description="Spaces region")  # type: ignore[valid-type]
    noncurrent_version_days: int = Field(default=30, ge=1, le=3650,
                                         description="days old object versions are kept")


class OpsDropletConfig(StrictModel):
    size: Annotated[str, AfterValidator(provider_slug("droplet_sizes", "droplet size"))] = Field(
        default="s-1vcpu-1gb", description="droplet size")
    ssh_key_fingerprints: list[Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")]] = Field(
        min_length=1, description="MD5 fingerprints of DigitalOcean SSH keys")


class GivAdoptConfig(StrictModel):
    app_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="App Platform app id")
    mongodb_cluster_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="cluster uuid")
    postgres_cluster_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="cluster uuid")
    cache_cluster_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="cluster uuid")
    media_bucket: bool = Field(default=False, description="adopt the existing Spaces bucket by name")


class GivConfig(StrictModel):
    """Settings of the GIV product in one stack."""

    region: Literal[DO_REGIONS] | None = Field(  # type: ignore[valid-type]
        default=None, description="region of VPC and databases; defaults to environment.region")
    app_region: Literal[APP_REGIONS] = Field(description="App Platform region, e.g. fra")  # type: ignore[valid-type]
    vpc_ip_range: PrivateCidr = Field(description="private range of the product's VPC")
    zone: Hostname = Field(description="DNS zone of the app's domains (on DigitalOcean DNS)")
    app_name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$", description="App Platform app name")
    components: list[AppComponent] = Field(min_length=1, description="backend service and static sites")
    backend: str = Field(default="krogiving-backend", description="component that gets the data "
                         "stores and the media bucket")
    frontend_origins: list[Hostname] = Field(default_factory=list, description="extra CORS origins "
                                             "for the media bucket; the static sites' domains are always allowed")
    mongodb: ClusterConfig = Field(description="managed MongoDB")
    postgres: ClusterConfig = Field(description="managed Postgres")
    cache: ClusterConfig = Field(description="managed Valkey (Bull queues, caches)")
    database_name: str = Field(default="krogiving", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                               description="database name in Postgres and MongoDB")
    database_user: str = Field(default="krogiving_backend", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                               description="application user in Postgres and MongoDB")
    media_bucket: MediaBucketConfig = Field(description="Spaces bucket for campaign media")
    ops_droplet: OpsDropletConfig = Field(description="the backup runner inside the VPC (mgmt tier)")
    backup: BackupConfig = Field(description="off-site backups of MongoDB and Postgres to R2")
    adopt: GivAdoptConfig = Field(default_factory=GivAdoptConfig, description="resources to adopt")
    monitoring: MonitoringConfig | None = Field(
        default=None, description="self-hosted Prometheus, Alertmanager, Grafana and exporters on the "
                                  "ops droplet (mgmt tier), watching its host and the backup jobs; unset: none")
    egress: ContainerEgressConfig = Field(
        default_factory=ContainerEgressConfig,
        description="where the ops droplet's containers may open connections: direct egress is dropped except this allow-list (by address and port, per "
                    "service); Alertmanager and the blackbox prober are the program's exemptions")



BACKEND_ENV = {"DATABASE_URL": "Postgres", "MONGODB_URI": "MongoDB", "REDIS_URL": "Valkey",
               "SPACES_ACCESS_KEY_ID": "the media bucket key", "SPACES_SECRET_ACCESS_KEY": "the media bucket key",
               "SPACES_REGION": "the media bucket", "SPACES_BUCKET_NAME": "the media bucket",
               "SPACES_ENDPOINT": "the media bucket", "POSTGRES_CA_CERT": "Postgres's CA",
               "MONGODB_CA_CERT": "MongoDB's CA"}
"""What the program sets on the backend component (build() below)."""


@rule(GivConfig)
def _components(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from duplicates(((("components", i, "name"), c.name) for i, c in each(cfg.components)),
                          "component name", ctx.where)
    yield from duplicates(((("components", i, "domain"), c.domain) for i, c in each(cfg.components)),
                          "domain", ctx.where)
    yield from secret_key_findings("giv", "components", cfg.components)


@rule(GivConfig)
def _backend(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    by_name = {c.name: c for _, c in each(cfg.components)}
    if cfg.backend not in by_name or by_name[cfg.backend].kind != "service":
        yield Finding(("backend",), f"{cfg.backend} must be a service among the components "
                      f"({', '.join(n for n, c in by_name.items() if c.kind == 'service') or 'none'})")
    yield from injected_env_findings("components", cfg.components, {cfg.backend: BACKEND_ENV})


@rule(GivConfig)
def _domains_in_zone(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from hosts_in_zone([(("components", i, "domain"), c.domain) for i, c in each(cfg.components)], cfg.zone)


@rule(GivConfig)
def _versions(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    for field, engine in (("postgres", "pg"), ("mongodb", "mongodb"), ("cache", "valkey")):
        try:
            check_version(engine, getattr(cfg, field).version)
        except ValueError as exc:
            yield Finding((field, "version"), str(exc))


@rule(GivConfig)
def _monitoring(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    if cfg.monitoring and cfg.monitoring.metrics_services:
        yield Finding(("monitoring", "metrics_services"), "the ops droplet runs no services; App Platform "
                      "has its own metrics (remove it)")
    elif cfg.monitoring:
        yield from monitoring_findings(cfg.monitoring, "giv", {})
    yield from alert_email_findings(cfg.monitoring, ctx)


@rule(GivConfig)
def _egress(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from egress_allow_findings(cfg.egress, [s.name for s in monitoring.server_specs(cfg.monitoring, "")]
                                     if cfg.monitoring else [])


@rule(GivConfig)
def _backup_buckets(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, BACKUP_LABELS)


def claims(cfg: GivConfig) -> dict:
    return {"hostnames": [(("components", i, "domain"), c.domain) for i, c in each(cfg.components) if c.domain],
            "buckets": derived_buckets(cfg.backup, BACKUP_LABELS)}


def required_secrets(cfg: GivConfig) -> list[SecretKey]:
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the ops droplet's deploy user")]
    return needed + service_secret_keys(cfg.components) + monitoring_secrets(cfg.monitoring)


def _cluster_args(cfg: ClusterConfig, engine: str, region: str, vpc_id, project_id, env_name: str,
                  prod: bool, adopt: str | None, **extra) -> ManagedDatabaseClusterArgs:
    return ManagedDatabaseClusterArgs(
        engine=engine, version=cfg.version, size=cfg.size, node_count=cfg.node_count, region=region,
        vpc_id=vpc_id, trusted_sources=None, maintenance_day=cfg.maintenance_day,
        maintenance_hour=cfg.maintenance_hour, project_id=project_id,
        tags=["giv", f"env-{env_name}"], adopt_cluster_id=adopt, protect=prod, **extra)


def build(ctx, cfg: GivConfig) -> dict:
    env = ctx.environment
    prod = env.is_production
    name = f"giv-{env.name}"
    region = cfg.region or env.region
    product = Product("giv")
    child = pulumi.ResourceOptions(parent=product)

    project, vpc = product_foundation(product, name=name, label="GIV", production=prod,
                                      region=region, ip_range=cfg.vpc_ip_range)

    db, user = cfg.database_name, cfg.database_user
    postgres = ManagedDatabaseCluster(f"{name}-pg", _cluster_args(
        cfg.postgres, "pg", region, vpc.id, project.id, env.name, prod, cfg.adopt.postgres_cluster_id,
        databases=[db], users=[user]), opts=child)
    mongodb = ManagedDatabaseCluster(f"{name}-mongo", _cluster_args(
        cfg.mongodb, "mongodb", region, vpc.id, project.id, env.name, prod, cfg.adopt.mongodb_cluster_id,
        databases=[db], users=[user]), opts=child)
    cache = ManagedDatabaseCluster(f"{name}-cache", _cluster_args(
        cfg.cache, "valkey", region, vpc.id, project.id, env.name, prod, cfg.adopt.cache_cluster_id),
        opts=child)

    bucket_opts = pulumi.ResourceOptions(parent=product, protect=prod, retain_on_delete=prod,
                                         import_=f"{cfg.media_bucket.region},{cfg.media_bucket.name}"
                                         if cfg.adopt.media_bucket else None)
    bucket = do.SpacesBucket(
        f"{name}-media", name=cfg.media_bucket.name, region=cfg.media_bucket.region, acl="private",
        versioning=do.SpacesBucketVersioningArgs(enabled=True),
        lifecycle_rules=[do.SpacesBucketLifecycleRuleArgs(
            id="tidy", enabled=True, abort_incomplete_multipart_upload_days=1,
            noncurrent_version_expiration=do.SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs(
                days=cfg.media_bucket.noncurrent_version_days))],
        opts=bucket_opts)
    origins = sorted({f"https://{c.domain}" for c in cfg.components if c.kind == "static_site" and c.domain}
                     | {f"https://{h}" for h in cfg.frontend_origins})
    do.SpacesBucketCorsConfiguration(
        f"{name}-media-cors", bucket=bucket.name, region=cfg.media_bucket.region,
        cors_rules=[do.SpacesBucketCorsConfigurationCorsRuleArgs(
            allowed_methods=["GET", "PUT", "POST", "HEAD"], allowed_origins=origins,
            allowed_headers=["*"], max_age_seconds=3000)],
        opts=child)
    media_key = do.SpacesKey(
        f"{name}-media-key", name=f"{name}-media",
        grants=[do.SpacesKeyGrantArgs(bucket=bucket.name, permission="readwrite")],
        opts=pulumi.ResourceOptions(parent=product, additional_secret_outputs=["secret_key"]))
    endpoint = f"https://{cfg.media_bucket.region}.digitaloceanspaces.com"

    pg_ca, mongo_ca = f"{CA_DIR}/postgres-ca.crt", f"{CA_DIR}/mongodb-ca.crt"
    secret_env = {c.name: {k: ctx.secret(v) for k, v in c.secret_env.items()} for c in cfg.components}
    secret_env[cfg.backend].update({
        "DATABASE_URL": postgres.uri(ca_path=pg_ca, user=user, database=db),
        "MONGODB_URI": mongodb.uri(ca_path=mongo_ca, user=user, database=db),
        "REDIS_URL": cache.uri(ca_path=""),
        "SPACES_ACCESS_KEY_ID": pulumi.Output.secret(media_key.access_key),
        "SPACES_SECRET_ACCESS_KEY": pulumi.Output.secret(media_key.secret_key),
    })
    app = AppPlatformApp(f"{name}-app", AppPlatformAppArgs(
        name=cfg.app_name, region=cfg.app_region, components=cfg.components, zone=cfg.zone,
        vpc_id=vpc.id,
        databases=[DatabaseAttachment("postgres", f"{name}-pg", "PG"),
                   DatabaseAttachment("mongodb", f"{name}-mongo", "MONGODB"),
                   DatabaseAttachment("cache", f"{name}-cache", "VALKEY")],
        secret_env={k: v for k, v in secret_env.items() if v},
        extra_env={cfg.backend: {
            "SPACES_REGION": cfg.media_bucket.region, "SPACES_BUCKET_NAME": bucket.name,
            "SPACES_ENDPOINT": endpoint,
            # The backend writes these to CA_DIR at start (see its run_command), so its URIs can
            # verify the servers.
            "POSTGRES_CA_CERT": postgres.ca_certificate, "MONGODB_CA_CERT": mongodb.ca_certificate,
        }},
        alert_emails=env.alerts.emails, project_id=project.id, adopt_app_id=cfg.adopt.app_id,
    ), opts=child)

    ops_containers = [s.name for s in monitoring.server_specs(cfg.monitoring, "")] if cfg.monitoring else []
    ops = DropletStack(f"{name}-ops", DropletStackArgs(
        region=region, size=cfg.ops_droplet.size, image="ubuntu-24-04-x64",
        ssh_key_fingerprints=cfg.ops_droplet.ssh_key_fingerprints, vpc_id=vpc.id,
        admin_cidrs=management.public_ssh_sources(env.management, env.admin_cidrs),
        wireguard=management.endpoint(env.management, "giv"),
        connect_address=management.connect_address(env.management, "giv", None),
        ssh_private_key=ctx.secret(SSH_KEY_SECRET), access=ctx.admin_access(),
        tier=tiers.Tier.MGMT, tags=["giv", f"env-{env.name}"], backups=DropletBackups() if prod else None,
        project_id=project.id, protect=prod, reserved_ip=False,
        directories=monitoring.data_directories(f"/srv/{name}-ops") if cfg.monitoring else (),
        egress=container_egress_lock(cfg.egress, bridge="giv-ops-ctr", containers=ops_containers),
    ), opts=child)
    pg_ca_file = HostFile(container_path="/certs/postgres-ca.crt", content=postgres.ca_certificate)
    mongo_ca_file = HostFile(container_path="/certs/mongodb-ca.crt", content=mongodb.ca_certificate)
    watch = monitoring.HostMonitoring(specs=[], files={}, secret_env={})
    if cfg.monitoring:
        # It watches the ops droplet and the backups it runs, and probes the public domains.
        watch = host_monitoring(
            ctx, cfg.monitoring, data_dir=ops.data_dir, service_ports={},
            grafana_password=generated_password(f"{name}-grafana-admin", product),
            probes=[f"https://{c.domain}" for c in cfg.components if c.domain],
            backup_jobs=[backup_job_name(name, label) for label in BACKUP_LABELS])
    ops.deploy(watch.specs, files={"backup": [pg_ca_file, mongo_ca_file], **watch.files},
               secret_env=watch.secret_env)

    app_source = TrustedSourceInput(kind="app", value=app.app_id, tier=tiers.Tier.APP)
    ops_source = TrustedSourceInput(kind="droplet", value=ops.droplet_id, tier=tiers.Tier.MGMT)
    postgres.admit([app_source, ops_source])
    mongodb.admit([app_source, ops_source])
    cache.admit([app_source])

    pg_ca_host = host_path_for(ops.data_dir, "backup", pg_ca_file)
    mongo_ca_host = host_path_for(ops.data_dir, "backup", mongo_ca_file)
    certs_dir = pg_ca_host.rsplit("/", 1)[0]
    for label, cluster, kind, image, uri in (
        ("pg", postgres, "postgres", f"postgres:{cfg.postgres.version}-alpine",
         postgres.uri(ca_path=pg_ca_host, user=user, database=db)),
        ("mongo", mongodb, "mongodb", f"mongo:{cfg.mongodb.version}.0",
         mongodb.uri(ca_path=mongo_ca_host, user=user, database=db)),
    ):
        provision_backup(
            name, label, cfg.backup, kind=kind, tool_image=image, mounts=(certs_dir,),
            source_name=cluster.cluster_resource_name, source_uri=uri,
            runner=ops.ssh, runner_ready=ops.files_delivered, protect=prod, opts=child)

    destinations = ctx.alert_destinations()
    droplet_alerts(f"{name}-ops", [ops.droplet_id], destinations, product)
    uptime_checks(name, [f"https://{c.domain}" for c in cfg.components if c.domain], destinations, product)
    outputs = {
        "app_id": app.app_id,
        "live_url": app.live_url,
        "media_bucket": bucket.name,
        "domains": [f"https://{c.domain}" for c in cfg.components if c.domain],
        "wireguard": management.endpoint_output(env.management, "giv", ops.public_ip, ops.wireguard_public_key),
    }
    product.register_outputs(outputs)
    return outputs


PRODUCT = ProductDefinition(name="giv", config_model=GivConfig, build=build, secrets=required_secrets,
                            claims=claims)
