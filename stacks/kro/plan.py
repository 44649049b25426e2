"""KRO's plan: everything the stack holds, from the config alone, as plain values and secret
references (``stacks.wiring``, ``stacks.plan``); ``stacks.provision`` turns it into resources:
the project and VPC, the droplet with its containers behind TLS ingress, the managed Postgres
cluster, DNS, monitoring, the off-site backup and DigitalOcean's alerts."""

from __future__ import annotations

from dataclasses import dataclass

from components import monitoring, tiers
from components.containers import ContainerSpec
from components.egress import EgressLock, OwnNetwork
from components.ingress import IngressRoute
from components.service_files import HostFile
from stacks import management
from stacks.kro.config import (BACKUP_LABEL, DATABASE_BRIDGE, DATABASE_PORTS, SSH_KEY_SECRET, KroConfig,
                               database_subnet)
from stacks.plan import ProductPlan, Step, call, ref, step
from stacks.plan_parts import foundation, host_monitoring, service_secret_env, session_archive
from stacks.shared_config import container_egress_lock
from stacks.wiring import ClusterUri, ConfigSecret, EnvMaps, Generated, ServiceEnv, backup_job_name, host_file, with_env


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


def plan(cfg: KroConfig, environment) -> ProductPlan:
    """The plan of ``cfg`` in ``environment`` (its ``name``, ``region``, ``is_production``,
    ``management``, ``admin_cidrs`` and ``alerts``); ``detail`` is a ``KroPlan``. Raises
    ``ValueError`` on an env key with two sources (the config rules report it first)."""
    d = detail(cfg, environment)
    return ProductPlan(product="kro", name=d.name, production=d.production, env=d.env,
                       steps=_steps(cfg, environment, d), outputs=_outputs(environment, d),
                       backup_job_names=d.backup_job_names, detail=d)


def detail(cfg: KroConfig, environment) -> KroPlan:
    """The values KRO's steps are computed from."""
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


def _steps(cfg: KroConfig, environment, d: KroPlan) -> tuple[Step, ...]:
    name, prod, db = d.name, d.production, d.database
    host = name
    steps = [*foundation(name, label="KRO", production=prod, region=d.region, ip_range=cfg.vpc_ip_range)]
    # The cluster admits the droplet, and the records point at its address, before it exists.
    steps.append(step(
        "managed_cluster", db.cluster, engine="pg", version=cfg.database.version, size=cfg.database.size,
        node_count=cfg.database.node_count, region=d.region, vpc_id=ref(f"{name}-vpc", "id"),
        trusted_sources=[call("TrustedSourceInput", kind="droplet", value=ref(host, "droplet_id"), tier=tiers.Tier.APP)],
        maintenance_day=cfg.database.maintenance_day, maintenance_hour=cfg.database.maintenance_hour,
        databases=[db.database], users=[db.user],
        pools=[call("ConnectionPool", name=db.pool, database=db.database, user=db.user, size=cfg.database.pool_size)],
        project_id=ref(f"{name}-project", "id"), tags=list(d.tags), adopt_cluster_id=cfg.adopt.database_cluster_id,
        protect=prod))
    if cfg.dns.provider == "digitalocean" and cfg.adopt.domain:
        steps.append(step("do.Domain", f"{name}-domain", name=cfg.dns.zone, import_=cfg.dns.zone, protect=True,
                          retain_on_delete=True))
    records = f"{name}-records"
    steps.append(step("a_records", records, prefix=name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=list(d.hosts),
                      address=ref(host, "public_ip"), ttl=cfg.dns.ttl, cloudflare_zone_id=cfg.dns.cloudflare_zone_id))
    ports = {s.name: s.port for s in cfg.services}
    ingress = call("Ingress", routes=[IngressRoute(host=r.host, service=r.service, port=ports[r.service],
                                                   websocket=r.websocket) for r in cfg.routes],
                   acme_email=cfg.acme_email, acme_staging=cfg.acme_staging, depends_on=ref(records))
    ca_file = HostFile(container_path=cfg.database_ca_path, content=ref(db.cluster, "ca_certificate"))
    watch = monitoring.HostMonitoring(specs=[], files={}, secret_env={})
    if cfg.monitoring:
        watch = host_monitoring(environment, cfg.monitoring, data_dir=d.data_dir,
                                grafana_password=Generated(f"{name}-grafana-admin"), service_ports=d.metrics_ports,
                                probes=[f"https://{h}" for h in d.hosts], backup_jobs=list(d.backup_job_names))
    mgmt = environment.management
    steps.append(step(
        "droplet_host", host, data_dir=d.data_dir,
        region=d.region, size=cfg.droplet.size, image=cfg.droplet.image,
        ssh_key_fingerprints=cfg.droplet.ssh_key_fingerprints, vpc_id=ref(f"{name}-vpc", "id"),
        admin_cidrs=management.public_ssh_sources(mgmt, environment.admin_cidrs),
        wireguard=management.endpoint(mgmt, "kro"), connect_address=management.connect_address(mgmt, "kro", None),
        ssh_private_key=ConfigSecret(SSH_KEY_SECRET), access=call("admin_access"),
        registry_auth=call("registry_auth", product="kro", images=[s.image for s in cfg.services]),
        tier=tiers.Tier.EDGE, workload_tiers=[tiers.Tier.APP], tags=list(d.tags),
        backups=call("DropletBackups") if cfg.droplet.backups else None,
        project_id=ref(f"{name}-project", "id"), adopt_droplet_id=cfg.adopt.droplet_id, protect=prod,
        directories=d.directories, egress=d.egress,
        workload=call("Workload", containers=[*d.services, *watch.specs],
                      secret_env={**service_secret_env(d.env), **watch.secret_env},
                      files={cfg.database_service: [ca_file], **watch.files}, ingress=ingress)))
    # The droplet is the backup runner; it reads the CA file the backend mounts.
    b = d.backup
    steps.append(step(
        "backup", f"{b.job}-backup", stack=name, label=b.label, backup=cfg.backup, kind="postgres",
        tool_image=b.tool_image, mounts=(b.ca_on_host.rsplit("/", 1)[0],), bucket_per_job=False,
        source_name=ref(db.cluster, "cluster_resource_name"), source_uri=b.uri, runner=ref(host, "ssh"),
        runner_ready=ref(host, "files_delivered"), protect=prod))
    steps.append(session_archive(name, cfg.backup, host, protect=prod))
    destinations = call("alert_destinations")
    steps.append(step("droplet_alerts", f"{name}-droplet-alerts", prefix=name, droplet_ids=[ref(host, "droplet_id")], destinations=destinations))
    steps.append(step("uptime_checks", f"{name}-uptime-checks", prefix=name, urls=[f"https://{h}" for h in d.hosts], destinations=destinations))
    return tuple(steps)


def _outputs(environment, d: KroPlan) -> tuple:
    host = d.name
    return (("public_ip", ref(host, "public_ip")), ("droplet_id", ref(host, "droplet_id")),
            ("database_host", ref(d.database.cluster, "private_host")),
            ("backup_bucket", ref(f"{d.backup.job}-backup", "bucket", "name")),
            ("urls", [f"https://{h}" for h in d.hosts]),
            ("wireguard", call("wireguard_output", m=environment.management, product="kro",
                               public_address=ref(host, "public_ip"), public_key=ref(host, "wireguard_public_key"))))
