"""GIV's plan: everything the stack holds, from the config alone, as plain values and secret
references (``stacks.wiring``, ``stacks.plan``); ``stacks.provision`` turns it into resources:
the project and VPC, the three managed clusters, the Spaces media bucket and its key, the App
Platform app, the ops droplet (monitoring, backup runner) with its off-site backups, and
DigitalOcean's alerts."""

from __future__ import annotations

from dataclasses import dataclass

from components import monitoring, tiers
from components.egress import EgressLock
from components.service_files import HostFile
from stacks import management
from stacks.giv.config import CA_DIR, SSH_KEY_SECRET, GivConfig
from stacks.plan import ProductPlan, Step, call, ref, step
from stacks.plan_parts import foundation, host_monitoring, service_secret_env, session_archive
from stacks.shared_config import container_egress_lock
from stacks.wiring import (BucketKey, ClusterUri, ConfigSecret, EnvMaps, Generated, ResourceValue, ServiceEnv,
                           backup_job_name, host_file)

BACKUP_SERVICE = "backup"
"""The ops droplet's service whose files the backup jobs read (the clusters' CAs)."""


@dataclass(frozen=True)
class ClusterPlan:
    """One managed cluster: ``config`` is its section of ``GivConfig`` (``postgres``, ``mongodb``,
    ``cache``), ``resource`` its component's name, ``admits`` its trusted sources (``app``,
    ``ops``), ``attachment`` its name in the App Platform app."""

    config: str
    resource: str
    engine: str
    databases: tuple[str, ...]
    users: tuple[str, ...]
    adopt_id: str | None
    admits: tuple[str, ...]
    attachment: str


@dataclass(frozen=True)
class BackupPlan:
    """One off-site backup job, run on the ops droplet, verifying its cluster against the CA file
    the ``backup`` service holds there (``ca_file``, container path; ``uri`` reads it on the host)."""

    label: str
    job: str
    cluster: str
    kind: str
    tool_image: str
    ca_file: str
    uri: ClusterUri


@dataclass(frozen=True)
class MediaPlan:
    """The Spaces media bucket, its CORS origins and the backend's key to it."""

    resource: str
    bucket: str
    region: str
    endpoint: str
    origins: tuple[str, ...]
    key_name: str


@dataclass(frozen=True)
class GivPlan:
    name: str
    production: bool
    region: str
    tags: tuple[str, ...]
    env: dict[str, ServiceEnv]
    """each component's env: its own, and the backend's data stores and media bucket"""
    clusters: tuple[ClusterPlan, ...]
    media: MediaPlan
    ops: str
    ops_data_dir: str
    ops_egress: EgressLock
    ops_directories: tuple[tuple[str, str, str], ...]
    backups: tuple[BackupPlan, ...]
    backup_job_names: tuple[str, ...]
    domains: tuple[str, ...]
    """the components' public hostnames, probed and checked"""


def plan(cfg: GivConfig, environment) -> ProductPlan:
    """The plan of ``cfg`` in ``environment`` (its ``name``, ``region``, ``is_production``,
    ``management``, ``admin_cidrs`` and ``alerts``); ``detail`` is a ``GivPlan``. Raises
    ``ValueError`` on an env key with two sources (the config rules report it first)."""
    d = detail(cfg, environment)
    app, ops, key = f"{d.name}-app", d.ops, f"{d.name}-media-key"
    outputs = (("app_id", ref(app, "app_id")), ("live_url", ref(app, "live_url")),
               ("media_bucket", ref(d.media.resource, "name")), ("domains", [f"https://{x}" for x in d.domains]),
               ("wireguard", call("wireguard_output", m=environment.management, product="giv",
                                  public_address=ref(ops, "public_ip"), public_key=ref(ops, "wireguard_public_key"))))
    return ProductPlan(product="giv", name=d.name, production=d.production, env=d.env,
                       steps=_steps(cfg, environment, d), outputs=outputs, backup_job_names=d.backup_job_names,
                       detail=d, bucket_keys={cfg.backend: (call("secret", value=ref(key, "access_key")),
                                                            call("secret", value=ref(key, "secret_key")))})


def detail(cfg: GivConfig, environment) -> GivPlan:
    """The values GIV's steps are computed from."""
    name = f"giv-{environment.name}"
    db, user = cfg.database_name, cfg.database_user
    clusters = (
        ClusterPlan("postgres", f"{name}-pg", "pg", (db,), (user,), cfg.adopt.postgres_cluster_id, ("app", "ops"),
                    "postgres"),
        ClusterPlan("mongodb", f"{name}-mongo", "mongodb", (db,), (user,), cfg.adopt.mongodb_cluster_id,
                    ("app", "ops"), "mongodb"),
        ClusterPlan("cache", f"{name}-cache", "valkey", (), (), cfg.adopt.cache_cluster_id, ("app",), "cache"),
    )
    pg, mongo, cache = (c.resource for c in clusters)
    media = MediaPlan(
        resource=f"{name}-media", bucket=cfg.media_bucket.name, region=cfg.media_bucket.region,
        endpoint=f"https://{cfg.media_bucket.region}.digitaloceanspaces.com",
        origins=tuple(sorted({f"https://{c.domain}" for c in cfg.components if c.kind == "static_site" and c.domain}
                             | {f"https://{h}" for h in cfg.frontend_origins})),
        key_name=f"{name}-media")

    env = EnvMaps()
    for component in cfg.components:
        env.user(component)
    env.secret(cfg.backend, {
        "DATABASE_URL": ClusterUri(pg, ca_path=f"{CA_DIR}/postgres-ca.crt", user=user, database=db),
        "MONGODB_URI": ClusterUri(mongo, ca_path=f"{CA_DIR}/mongodb-ca.crt", user=user, database=db),
        "REDIS_URL": ClusterUri(cache, ca_path=""),
        "SPACES_ACCESS_KEY_ID": BucketKey(cfg.backend, "access"),
        "SPACES_SECRET_ACCESS_KEY": BucketKey(cfg.backend, "secret"),
    }, "the program (data stores and media bucket)")
    env.plain(cfg.backend, {
        "SPACES_REGION": media.region, "SPACES_BUCKET_NAME": ResourceValue(media.resource, "name"),
        "SPACES_ENDPOINT": media.endpoint,
        # The backend writes these to CA_DIR at start (see its run_command), so its URIs can
        # verify the servers.
        "POSTGRES_CA_CERT": ResourceValue(pg, "ca_certificate"),
        "MONGODB_CA_CERT": ResourceValue(mongo, "ca_certificate"),
    }, "the program (media bucket and the clusters' CAs)")

    ops, ops_data_dir = f"{name}-ops", f"/srv/{name}-ops"
    backups = []
    for label, cluster, kind, image in (("pg", pg, "postgres", f"postgres:{cfg.postgres.version}-alpine"),
                                        ("mongo", mongo, "mongodb", f"mongo:{cfg.mongodb.version}.0")):
        ca_file = f"/certs/{'postgres' if kind == 'postgres' else 'mongodb'}-ca.crt"
        backups.append(BackupPlan(label=label, job=backup_job_name(name, label), cluster=cluster, kind=kind,
                                  tool_image=image, ca_file=ca_file, uri=ClusterUri(
                                      cluster, ca_path=host_file(ops_data_dir, BACKUP_SERVICE, ca_file),
                                      user=user, database=db)))
    ops_containers = [s.name for s in monitoring.server_specs(cfg.monitoring, "")] if cfg.monitoring else []
    return GivPlan(
        name=name, production=environment.is_production, region=cfg.region or environment.region,
        tags=("giv", f"env-{environment.name}"), env=env.freeze(), clusters=clusters, media=media,
        ops=ops, ops_data_dir=ops_data_dir,
        ops_egress=container_egress_lock(cfg.egress, bridge="giv-ops-ctr", containers=ops_containers),
        ops_directories=tuple(monitoring.data_directories(ops_data_dir)) if cfg.monitoring else (),
        backups=tuple(backups), backup_job_names=tuple(b.job for b in backups),
        domains=tuple(c.domain for c in cfg.components if c.domain))


def _steps(cfg: GivConfig, environment, d: GivPlan) -> tuple[Step, ...]:
    name, prod, media, mgmt = d.name, d.production, d.media, environment.management
    vpc, project, app, ops = ref(f"{name}-vpc", "id"), ref(f"{name}-project", "id"), f"{name}-app", d.ops
    steps = [*foundation(name, label="GIV", production=prod, region=d.region, ip_range=cfg.vpc_ip_range)]
    # The clusters admit the app and the ops droplet, which need the clusters' URIs and CAs first.
    sources = {"app": call("TrustedSourceInput", kind="app", value=ref(app, "app_id"), tier=tiers.Tier.APP),
               "ops": call("TrustedSourceInput", kind="droplet", value=ref(ops, "droplet_id"), tier=tiers.Tier.MGMT)}
    for c in d.clusters:
        section = getattr(cfg, c.config)
        steps.append(step(
            "managed_cluster", c.resource, engine=c.engine, version=section.version, size=section.size,
            node_count=section.node_count, region=d.region, vpc_id=vpc, trusted_sources=[sources[s] for s in c.admits],
            maintenance_day=section.maintenance_day, maintenance_hour=section.maintenance_hour, project_id=project,
            tags=list(d.tags), adopt_cluster_id=c.adopt_id, protect=prod, databases=list(c.databases),
            users=list(c.users)))
    steps.append(step(
        "do.SpacesBucket", media.resource, name=media.bucket, region=media.region, acl="private",
        versioning=call("SpacesBucketVersioningArgs", enabled=True),
        lifecycle_rules=[call("SpacesBucketLifecycleRuleArgs", id="tidy", enabled=True,
                              abort_incomplete_multipart_upload_days=1,
                              noncurrent_version_expiration=call(
                                  "SpacesBucketLifecycleRuleNoncurrentVersionExpirationArgs",
                                  days=cfg.media_bucket.noncurrent_version_days))],
        protect=prod, retain_on_delete=prod,
        import_=f"{media.region},{media.bucket}" if cfg.adopt.media_bucket else None))
    steps.append(step(
        "do.SpacesBucketCorsConfiguration", f"{name}-media-cors", bucket=ref(media.resource, "name"),
        region=media.region, cors_rules=[call("SpacesBucketCorsConfigurationCorsRuleArgs",
                                              allowed_methods=["GET", "PUT", "POST", "HEAD"],
                                              allowed_origins=list(media.origins), allowed_headers=["*"],
                                              max_age_seconds=3000)]))
    steps.append(step("do.SpacesKey", f"{name}-media-key", name=media.key_name,
                      grants=[call("SpacesKeyGrantArgs", bucket=ref(media.resource, "name"), permission="readwrite")],
                      additional_secret_outputs=["secret_key"]))
    steps.append(step(
        "app_platform", app, name=cfg.app_name, region=cfg.app_region, components=cfg.components, zone=cfg.zone,
        vpc_id=vpc, databases=[call("DatabaseAttachment", name=c.attachment, cluster_name=c.resource,
                                    engine=c.engine.upper()) for c in d.clusters],
        secret_env=service_secret_env(d.env),
        extra_env={c: dict(service.plain) for c, service in d.env.items() if service.plain},
        alert_emails=environment.alerts.emails, project_id=project, adopt_app_id=cfg.adopt.app_id))

    ca_files = [HostFile(container_path=b.ca_file, content=ref(b.cluster, "ca_certificate")) for b in d.backups]
    watch = monitoring.HostMonitoring(specs=[], files={}, secret_env={})
    if cfg.monitoring:
        # It watches the ops droplet and the backups it runs, and probes the public domains.
        watch = host_monitoring(environment, cfg.monitoring, data_dir=d.ops_data_dir, service_ports={},
                                grafana_password=Generated(f"{name}-grafana-admin"),
                                probes=[f"https://{x}" for x in d.domains], backup_jobs=list(d.backup_job_names))
    steps.append(step(
        "droplet_host", ops, data_dir=d.ops_data_dir,
        region=d.region, size=cfg.ops_droplet.size, image="ubuntu-24-04-x64",
        ssh_key_fingerprints=cfg.ops_droplet.ssh_key_fingerprints, vpc_id=vpc,
        admin_cidrs=management.public_ssh_sources(mgmt, environment.admin_cidrs),
        wireguard=management.endpoint(mgmt, "giv"), connect_address=management.connect_address(mgmt, "giv", None),
        ssh_private_key=ConfigSecret(SSH_KEY_SECRET), access=call("admin_access"),
        tier=tiers.Tier.MGMT, tags=list(d.tags), backups=call("DropletBackups") if prod else None,
        project_id=project, protect=prod, reserved_ip=False, directories=d.ops_directories, egress=d.ops_egress,
        workload=call("Workload", containers=watch.specs, files={BACKUP_SERVICE: ca_files, **watch.files},
                      secret_env=watch.secret_env)))
    for b in d.backups:
        steps.append(step(
            "backup", f"{b.job}-backup", stack=name, label=b.label, backup=cfg.backup, kind=b.kind,
            tool_image=b.tool_image, mounts=(b.uri.ca_path.rsplit("/", 1)[0],),
            source_name=ref(b.cluster, "cluster_resource_name"), source_uri=b.uri, runner=ref(ops, "ssh"),
            runner_ready=ref(ops, "files_delivered"), protect=prod))
    steps.append(session_archive(name, cfg.backup, ops, protect=prod))
    destinations = call("alert_destinations")
    steps.append(step("droplet_alerts", f"{ops}-droplet-alerts", prefix=ops, droplet_ids=[ref(ops, "droplet_id")],
                      destinations=destinations))
    steps.append(step("uptime_checks", f"{name}-uptime-checks", prefix=name,
                      urls=[f"https://{x}" for x in d.domains], destinations=destinations))
    return tuple(steps)
