"""GIV's plan: everything the stack holds, from the config alone, as plain values and secret
references (``stacks.wiring``); ``provision`` turns it into resources."""

from __future__ import annotations

from dataclasses import dataclass

from components import monitoring
from components.egress import EgressLock
from stacks.giv.config import CA_DIR, GivConfig
from stacks.shared_config import container_egress_lock
from stacks.wiring import (BucketKey, ClusterUri, EnvMaps, ResourceValue, ServiceEnv, backup_job_name,
                           host_file)

MEDIA = "media"
"""What the plan calls the media bucket (``ResourceValue.resource``)."""
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


def plan(cfg: GivConfig, environment) -> GivPlan:
    """The plan of ``cfg`` in ``environment`` (its ``name``, ``region`` and ``is_production``).
    Raises ``ValueError`` on an env key with two sources (the config rules report it first)."""
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
        "SPACES_REGION": media.region, "SPACES_BUCKET_NAME": ResourceValue(MEDIA, "name"),
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
