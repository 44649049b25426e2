"""KRO's plan: everything the stack holds, from the config alone, as plain values and secret
references (``stacks.wiring``); ``provision`` turns it into resources."""

from __future__ import annotations

from dataclasses import dataclass

from components import monitoring
from components.containers import ContainerSpec
from components.egress import EgressLock, OwnNetwork
from stacks.kro.config import BACKUP_LABEL, DATABASE_BRIDGE, DATABASE_PORTS, KroConfig, database_subnet
from stacks.shared_config import container_egress_lock
from stacks.wiring import ClusterUri, EnvMaps, ServiceEnv, backup_job_name, host_file, with_env


@dataclass(frozen=True)
class DatabasePlan:
    """The managed Postgres cluster (component ``cluster``), its one database, user and pool."""

    cluster: str
    database: str
    user: str
    pool: str


@dataclass(frozen=True)
class BackupPlan:
    """The off-site backup of the database, run on the droplet, verifying the cluster against
    the CA file the database service mounts (``ca_on_host``)."""

    label: str
    job: str
    tool_image: str
    ca_on_host: str
    uri: ClusterUri


@dataclass(frozen=True)
class KroPlan:
    name: str
    production: bool
    region: str
    data_dir: str
    tags: tuple[str, ...]
    env: dict[str, ServiceEnv]
    services: tuple[ContainerSpec, ...]
    """the product's containers with their plain env (monitoring's come from its wiring)"""
    egress: EgressLock
    directories: tuple[tuple[str, str, str], ...]
    """the monitoring servers' data directories (none without monitoring)"""
    hosts: tuple[str, ...]
    """the routed hostnames, published in DNS and probed"""
    database: DatabasePlan
    backup: BackupPlan
    backup_job_names: tuple[str, ...]
    metrics_ports: dict[str, int]
    """the services Prometheus scrapes -> their port"""


def plan(cfg: KroConfig, environment) -> KroPlan:
    """The plan of ``cfg`` in ``environment`` (its ``name``, ``region`` and ``is_production``).
    Raises ``ValueError`` on an env key with two sources (the config rules report it first)."""
    name = f"kro-{environment.name}"
    data_dir = f"/srv/{name}"
    database = DatabasePlan(cluster=f"{name}-db", database=cfg.database.name, user=cfg.database.user,
                            pool=f"{cfg.database.name}-pool")
    env = EnvMaps()
    for spec in cfg.services:
        env.user(spec)
    env.secret(cfg.database_service, {"DATABASE_URL": ClusterUri(
        database.cluster, ca_path=cfg.database_ca_path, user=database.user, database=database.database,
        pool=database.pool if cfg.database.use_pool else None)}, "the managed database's URL")
    env_maps = env.freeze()

    watched = [s.name for s in monitoring.server_specs(cfg.monitoring, "")] if cfg.monitoring else []
    metrics = set(cfg.monitoring.metrics_services) if cfg.monitoring else set()
    # The backend reaches its managed Postgres in the VPC (the cluster's port and its pool's)
    # from a network of its own, whose subnet the rule matches: a fixed address would make
    # every deploy of it delete-first (the new container cannot take the old one's address).
    lock = container_egress_lock(
        cfg.egress, bridge="kro-ctr", containers=[*(s.name for s in cfg.services), *watched],
        internal_cidr=cfg.vpc_ip_range,
        extra=[(cfg.database_service, cfg.vpc_ip_range, port) for port in DATABASE_PORTS],
        own_networks=[OwnNetwork(cfg.database_service, DATABASE_BRIDGE, database_subnet(cfg.egress.subnet),
                                 peers=("nginx", *(["prometheus"] if cfg.database_service in metrics else [])))])
    ca_on_host = host_file(data_dir, cfg.database_service, cfg.database_ca_path)
    ports = {s.name: s.port for s in cfg.services}
    return KroPlan(
        name=name, production=environment.is_production, region=cfg.region or environment.region,
        data_dir=data_dir, tags=("kro", f"env-{environment.name}"), env=env_maps,
        services=tuple(with_env(s, env_maps.get(s.name)) for s in cfg.services), egress=lock,
        directories=tuple(monitoring.data_directories(data_dir)) if cfg.monitoring else (),
        hosts=tuple(r.host for r in cfg.routes), database=database,
        backup=BackupPlan(label=BACKUP_LABEL, job=backup_job_name(name, BACKUP_LABEL),
                          tool_image=f"postgres:{cfg.database.version}-alpine", ca_on_host=ca_on_host,
                          uri=ClusterUri(database.cluster, ca_path=ca_on_host, user=database.user,
                                         database=database.database)),
        backup_job_names=(backup_job_name(name, BACKUP_LABEL),),
        metrics_ports={s: ports[s] for s in cfg.monitoring.metrics_services} if cfg.monitoring else {})
