"""V-EdFinance's plan: everything the stack holds, from the config alone, as plain values and
secret references (``stacks.wiring``); ``provision`` turns it into resources."""

from __future__ import annotations

from dataclasses import dataclass

from components.backupscripts import WAL_ROLE
from components.containers import ContainerSpec
from components.postgres_init import check_init_plan, hba_file_args
from stacks.vedfinance.config import BACKUP_REDIS_LABEL, CA_PATH, PG_TLS_DIR, VedfinanceConfig
from stacks.wiring import (WAL_LABEL, EnvMaps, Generated, SecretUrl, ServiceEnv, backup_job_name, host_file,
                           with_env)


@dataclass(frozen=True)
class BackupPlan:
    """One off-site backup job of the shared Postgres (one per database, and ``pitr``: the
    cluster's WAL archive) or of Redis; run on the VPS over loopback."""

    label: str
    kind: str
    source: str
    """the container it reads"""
    tool_image: str
    uri: SecretUrl
    rpo_minutes: int | None


@dataclass(frozen=True)
class VedfinancePlan:
    name: str
    production: bool
    data_dir: str
    env: dict[str, ServiceEnv]
    services: tuple[ContainerSpec, ...]
    """the product's containers with their plain env (monitoring's come from its wiring)"""
    role_passwords: dict[str, Generated]
    """database (and its role) -> password"""
    wal_password: Generated
    backups: tuple[BackupPlan, ...]
    backup_job_names: tuple[str, ...]
    cluster_rpo: int


def plan(cfg: VedfinanceConfig, environment) -> VedfinancePlan:
    """The plan of ``cfg`` in ``environment`` (its ``name`` and ``is_production``). Raises
    ``ValueError`` on an init plan Postgres would reject or an env key with two sources (the
    config rules report both first)."""
    name = f"vedfinance-{environment.name}"
    data_dir = f"/srv/{name}"
    # Checked on plain names before anything is registered: the init script is rendered inside
    # an apply, which `pulumi preview` does not run.
    check_init_plan({d.name: d.name for d in cfg.databases}, [d.name for d in cfg.databases], cfg.extensions)
    by_name = {s.name: s for s in cfg.services}
    redis_password = Generated(f"{name}-redis-password")
    role_passwords = {d.name: Generated(f"{name}-db-{d.name}") for d in cfg.databases}

    env = EnvMaps()
    for spec in cfg.services:
        env.user(spec)
    env.secret(cfg.postgres_service, {"POSTGRES_PASSWORD": Generated(f"{name}-pg-superuser")},
               "the generated superuser password")
    env.secret(cfg.redis_service, {"REDIS_PASSWORD": redis_password}, "the generated Redis password")
    for db in cfg.databases:
        env.secret(db.service, {
            "DATABASE_URL": SecretUrl(f"postgresql://{db.name}:{{pw}}@{cfg.postgres_service}:5432/{db.name}"
                                      f"?sslmode=verify-full&sslrootcert={CA_PATH}", role_passwords[db.name]),
            "REDIS_URL": SecretUrl(f"redis://default:{{pw}}@{cfg.redis_service}:6379", redis_password),
        }, f"database {db.name}")
    env_maps = env.freeze()
    services = tuple(with_env(s, env_maps.get(s.name), **({"command": [
        "postgres", "-c", "ssl=on", "-c", f"ssl_cert_file={PG_TLS_DIR}/server.crt",
        "-c", f"ssl_key_file={PG_TLS_DIR}/server.key", "-c", "ssl_min_protocol_version=TLSv1.2",
        *hba_file_args()]}
        if s.name == cfg.postgres_service else {})) for s in cfg.services)

    pg_image = by_name[cfg.postgres_service].image
    backups = [BackupPlan(d.name, "postgres", cfg.postgres_service, pg_image, SecretUrl(
        f"postgresql://{d.name}:{{pw}}@127.0.0.1:5432/{d.name}?sslmode=verify-full&sslrootcert="
        f"{host_file(data_dir, d.service, CA_PATH)}", role_passwords[d.name]), d.rpo_minutes) for d in cfg.databases]
    backups.append(BackupPlan(BACKUP_REDIS_LABEL, "redis", cfg.redis_service, by_name[cfg.redis_service].image,
                              SecretUrl("redis://default:{pw}@127.0.0.1:6379", redis_password), None))
    # Point-in-time recovery of the cluster: one WAL archive, at the strictest RPO of its databases.
    cluster_rpo = min(d.rpo_minutes for d in cfg.databases)
    wal_password = Generated(f"{name}-pg-wal")
    backups.append(BackupPlan(WAL_LABEL, "pitr", cfg.postgres_service, pg_image, SecretUrl(
        f"postgresql://{WAL_ROLE}:{{pw}}@127.0.0.1:5432/postgres", wal_password), cluster_rpo))
    return VedfinancePlan(
        name=name, production=environment.is_production, data_dir=data_dir, env=env_maps, services=services,
        role_passwords=role_passwords, wal_password=wal_password, backups=tuple(backups),
        backup_job_names=tuple(backup_job_name(name, label)
                               for label in [*(d.name for d in cfg.databases), BACKUP_REDIS_LABEL]),
        cluster_rpo=cluster_rpo)
