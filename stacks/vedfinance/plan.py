"""V-EdFinance's plan: everything the stack holds, from the config alone, as plain values and
secret references (``stacks.wiring``, ``stacks.plan``); ``stacks.provision`` turns it into
resources: the VPS, the internal CA and Postgres's certificate, the containers with their files
and monitoring, the database init and the off-site backups."""

from __future__ import annotations

from dataclasses import dataclass

from components import monitoring, tiers
from components.backupscripts import WAL_ROLE
from components.containers import ContainerSpec
from components.ingress import IngressRoute
from components.postgres_init import HBA_PATH, check_init_plan, hba_file_args, render_pg_hba
from components.service_files import HostFile
from stacks import management
from stacks.plan import ProductPlan, Step, call, ref, step
from stacks.plan_parts import PG_READY, host_monitoring, service_secret_env, session_archive
from stacks.shared_config import container_egress_lock
from stacks.vedfinance.config import BACKUP_REDIS_LABEL, CA_PATH, PG_TLS_DIR, SSH_KEY_SECRET, VedfinanceConfig
from stacks.wiring import (WAL_LABEL, ConfigSecret, EnvMaps, Generated, SecretUrl, ServiceEnv, backup_job_name,
                           host_file, with_env)


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


def plan(cfg: VedfinanceConfig, environment) -> ProductPlan:
    """The plan of ``cfg`` in ``environment`` (its ``name``, ``is_production``, ``management``,
    ``admin_cidrs`` and ``alerts``); ``detail`` is a ``VedfinancePlan``. Raises ``ValueError``
    on an init plan Postgres would reject or an env key with two sources (the config rules
    report both first)."""
    d = detail(cfg, environment)
    mgmt = environment.management
    outputs = (("address", cfg.host.address), ("urls", [f"https://{r.host}" for r in cfg.routes]),
               ("wireguard", call("wireguard_output", m=mgmt, product="vedfinance", public_address=cfg.host.address,
                                  public_key=ref(d.name, "wireguard_public_key"))),
               # Grafana listens on the VPS's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<address>.
               ("grafanaAdminPassword", call("secret", value=Generated(f"{d.name}-grafana-admin"))))
    return ProductPlan(product="vedfinance", name=d.name, production=d.production, env=d.env,
                       steps=_steps(cfg, environment, d), outputs=outputs, backup_job_names=d.backup_job_names,
                       detail=d)


def detail(cfg: VedfinanceConfig, environment) -> VedfinancePlan:
    """The values V-EdFinance's steps are computed from."""
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


def _steps(cfg: VedfinanceConfig, environment, d: VedfinancePlan) -> tuple[Step, ...]:
    name, host, ca, pg = d.name, d.name, f"{d.name}-ca", cfg.postgres_service
    by_name = {s.name: s for s in cfg.services}
    mgmt = environment.management
    # The backup runner reaches Postgres on loopback, also with verify-full: 127.0.0.1 is a SAN.
    steps = [step("internal_ca", ca, common_name=f"{name} internal CA",
                  servers=[call("ServerRequest", server="postgres", dns_names=(pg,), ip_addresses=("127.0.0.1",))])]
    cert = ("certificates", "postgres")
    files = {pg: [
        HostFile(container_path=f"{PG_TLS_DIR}/server.crt", content=ref(ca, *cert, "cert_pem"), mode="0444"),
        # The postgres image's user (uid 999) must own its key, readable by nobody else.
        HostFile(container_path=f"{PG_TLS_DIR}/server.key", content=ref(ca, *cert, "key_pem"), mode="0600",
                 owner="999:999"),
        HostFile(container_path=HBA_PATH, content=render_pg_hba()),
    ]}
    ca_file = HostFile(container_path=CA_PATH, content=ref(ca, "cert_pem"))
    for db in cfg.databases:
        files.setdefault(db.service, []).append(ca_file)
    steps.append(step("a_records", f"{name}-records", prefix=name, provider=cfg.dns.provider, zone=cfg.dns.zone,
                      hosts=[r.host for r in cfg.routes], address=cfg.host.address, ttl=cfg.dns.ttl,
                      cloudflare_zone_id=cfg.dns.cloudflare_zone_id))
    ingress = call("Ingress", routes=[IngressRoute(host=r.host, service=r.service, port=by_name[r.service].port,
                                                   websocket=r.websocket) for r in cfg.routes],
                   acme_email=cfg.acme_email, memory_mb=cfg.ingress_memory_mb, cpus=cfg.ingress_cpus,
                   depends_on=ref(f"{name}-records"))
    watch = host_monitoring(environment, cfg.monitoring, data_dir=d.data_dir,
                            grafana_password=Generated(f"{name}-grafana-admin"),
                            service_ports={s: by_name[s].port for s in cfg.monitoring.metrics_services},
                            probes=[f"https://{r.host}" for r in cfg.routes], backup_jobs=list(d.backup_job_names))
    steps.append(step(
        "vps_host", host, data_dir=d.data_dir,
        address=management.connect_address(mgmt, "vedfinance", cfg.host.address),
        wireguard=management.endpoint(mgmt, "vedfinance"),
        private_key=ConfigSecret(SSH_KEY_SECRET), ssh_port=cfg.host.ssh_port,
        registry_auth=call("registry_auth", product="vedfinance", images=[s.image for s in cfg.services]),
        bootstrap_user=cfg.host.bootstrap_user, access=call("admin_access"),
        role=tiers.HostRole(tier=tiers.Tier.EDGE, ssh_cidrs=management.ssh_sources(mgmt, environment.admin_cidrs)),
        directories=monitoring.data_directories(f"/srv/{name}"),
        egress=container_egress_lock(
            cfg.egress, bridge="ved-ctr",
            containers=[*(s.name for s in cfg.services),
                        *(s.name for s in monitoring.server_specs(cfg.monitoring, ""))]),
        workload=call("Workload", containers=[*d.services, *watch.specs],
                      secret_env={**service_secret_env(d.env), **watch.secret_env},
                      files={**files, **watch.files}, ingress=ingress)))
    init = f"{name}-postgres-init"
    steps.append(step(
        "datastore_init", init, target=ref(host, "ssh"), stack=name, service=pg,
        text=call("init_sql", databases={db.name: db.name for db in cfg.databases}, passwords=dict(d.role_passwords),
                  wal_password=d.wal_password, extensions=cfg.extensions),
        ready=PG_READY, apply="psql -U postgres -v ON_ERROR_STOP=1 -q", path=f"/etc/platform/{name}-init.sql",
        depends_on=[ref(host, "containers", pg)]))
    for job in d.backups:
        steps.append(step(
            "backup", f"{backup_job_name(name, job.label)}-backup", stack=name, label=job.label, backup=cfg.backup,
            kind=job.kind, tool_image=job.tool_image, runner=ref(host, "ssh"), runner_ready=[ref(init)],
            mounts=(f"{d.data_dir}/files",), cluster_rpo=d.cluster_rpo, rpo_minutes=job.rpo_minutes,
            source_service=job.source if job.kind == "pitr" else "",
            scratch_limits=(by_name[job.source].memory_mb, by_name[job.source].cpus),
            source_name=ref(host, "containers", job.source, "pulumi_resource_name"), source_uri=job.uri,
            protect=d.production))
    steps.append(session_archive(name, cfg.backup, host, protect=d.production))
    return tuple(steps)
