"""V-EdFinance: one VPS (2 vCPU / 4 GB) running api and web for dev and staging, Postgres 17 with
pgvector and Redis, behind nginx with Let's Encrypt.

Every container has resource limits, and their sum must fit the host with headroom, or the
config is rejected; every password is generated and secret; every container has a
healthcheck, none is privileged; the sshd baseline closes root and password login; backups
go encrypted off-site to R2 daily and are restore-tested weekly (the 2025-12-23 audit's
findings). Dev and staging keep separate databases on the shared Postgres, each role confined
to its own.
"""

from __future__ import annotations

from typing import Annotated, Iterator

import pulumi
from pydantic import EmailStr, Field, field_validator

from components import monitoring, tiers
from components.backup import R2Backup, R2BackupArgs
from components.backupscripts import WAL_ROLE, BackupJob, replication_role_sql
from components.containers import ContainerSpec
from components.dns import a_records
from components.ingress import Ingress, IngressRoute
from components.internal_ca import InternalCa
from components.monitoring import MonitoringConfig
from components.onprem import OnPremVps, OnPremVpsArgs
from components.postgres_init import HBA_PATH, hba_file_args, render_pg_hba, check_init_plan, render_init_sql
from components.host_containers import datastore_init
from components.service_files import HostFile, host_path_for
from validation.rules import Finding, RuleContext, each, rule
from stacks.collisions import duplicates, program_containers, reserved_names
from stacks.product import Product, generated_password, host_monitoring, merge_env, service_secret_env
from stacks.secret_keys import monitoring_secrets, secret_key_findings
from stacks.shared_config import (BackupConfig, ContainerEgressConfig, DnsConfig, RouteConfig,
                                  alert_email_findings, backup_bucket_findings, bootstrap_user_problem,
                                  container_egress_lock, derived_buckets, egress_allow_findings,
                                  hosts_in_zone, injected_env_findings, monitoring_findings)
from stacks import secret_keys
from stacks.definition import SecretKey
from stacks.definition import ProductDefinition
from validation.fields import BootstrapUser, PublicAddress, ResourceName, StrictModel

SSH_KEY_SECRET = "vedfinance_ssh_private_key"
CA_PATH = "/run/platform/ca.crt"
PG_TLS_DIR = "/run/platform/tls"


class HostConfig(StrictModel):
    address: PublicAddress = Field(description="public address the program connects to over SSH")
    ssh_port: int = Field(default=22, gt=0, lt=65536, description="SSH port")
    bootstrap_user: BootstrapUser = None
    vcpus: float = Field(gt=0, description="CPU cores of the VPS")
    memory_mb: int = Field(gt=0, description="memory of the VPS in MiB")
    headroom_mb: int = Field(default=512, ge=0, description="memory kept for the OS and Docker")
    headroom_cpus: float = Field(default=0.25, ge=0, description="CPU kept for the OS and Docker")

    @field_validator("bootstrap_user")
    @classmethod
    def _not_root_or_deploy(cls, value: str | None) -> str | None:
        problem = bootstrap_user_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class AppDatabase(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="database (and its role) name")
    service: ResourceName = Field(description="service that gets DATABASE_URL for it")
    rpo_minutes: int = Field(default=5, ge=1, le=1440,
                             description="recovery point objective in minutes (the cluster's WAL "
                                         "archive ships at the strictest of its databases)")


class VedfinanceConfig(StrictModel):
    """Settings of the V-EdFinance product in one stack."""

    host: HostConfig = Field(description="the VPS")
    services: list[ContainerSpec] = Field(min_length=1, description="api/web per environment, "
                                          "postgres and redis; limits must fit the host")
    postgres_service: ResourceName = Field(default="postgres", description="the Postgres container")
    redis_service: ResourceName = Field(default="redis", description="the Redis container")
    databases: list[AppDatabase] = Field(min_length=1, description="one database per app environment")
    extensions: list[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]] = Field(
        default_factory=lambda: ["vector"], description="extensions per database")
    routes: list[RouteConfig] = Field(min_length=1, description="hostname -> service routes")
    dns: DnsConfig = Field(description="where the hostnames are published")
    acme_email: EmailStr = Field(description="Let's Encrypt email")
    ingress_memory_mb: int = Field(default=64, gt=0, description="nginx memory limit")
    ingress_cpus: float = Field(default=0.1, gt=0, description="nginx CPU limit")
    backup: BackupConfig = Field(description="off-site backups of Postgres and Redis to R2")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Prometheus, Alertmanager, Grafana, blackbox, node-exporter and cAdvisor on the "
                    "VPS (mgmt tier); their limits count against the host too")
    egress: ContainerEgressConfig = Field(
        default_factory=ContainerEgressConfig,
        description="where the VPS's containers may open connections: direct egress is dropped except this allow-list (by address and port, per "
                    "service); Alertmanager and the blackbox prober are the program's exemptions")



BACKUP_REDIS_LABEL = "redis"


# Over TCP: the postgres image's entrypoint runs initdb's temporary server on the Unix socket
# only and stops it before the real one starts, so a socket check can pass in between and the
# init then finds no server (seen on the rehearsal: "connection to server on socket ... failed").
PG_READY = "pg_isready -h 127.0.0.1 -U postgres -q"


@rule(VedfinanceConfig)

def _services(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from duplicates(((("services", i, "name"), s.name) for i, s in each(cfg.services)), "service name",
                          ctx.where)
    yield from reserved_names(cfg.services, "services", program_containers(monitoring=True))
    for index, spec in each(cfg.services):
        if spec.publish and spec.tier is not tiers.Tier.DATA:
            yield Finding(("services", index, "publish"), "only the ingress publishes ports publicly; data "
                          "services may publish, bound to loopback for the backup runner")
    yield from secret_key_findings("vedfinance", "services", cfg.services)
    published = [(("services", i, "publish", j, "host_port"), p.host_port)
                 for i, s in each(cfg.services) for j, p in each(s.publish)]
    yield from duplicates(published, "published port", ctx.where)
    for loc, port in published:
        if port in (80, 443) or port == monitoring.GRAFANA_LOOPBACK_PORT:
            yield Finding(loc, f"port {port} is published by {'the ingress' if port in (80, 443) else 'Grafana'}")


@rule(VedfinanceConfig)
def _references(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    by_name = {s.name: s for _, s in each(cfg.services)}
    refs = [(("postgres_service",), cfg.postgres_service), (("redis_service",), cfg.redis_service)]
    refs += [(("databases", i, "service"), d.service) for i, d in each(cfg.databases)]
    refs += [(("routes", i, "service"), r.service) for i, r in each(cfg.routes)]
    for loc, name in refs:
        if name not in by_name:
            yield Finding(loc, f"{name} is not among services ({', '.join(sorted(by_name))})")
        elif loc[0] == "routes" and by_name[name].port is None:
            index = next(i for i, s in each(cfg.services) if s.name == name)
            yield Finding(loc, f"{name} has no port to route to; set {ctx.where('services', index, 'port')}")
    for loc, name in refs[:2]:
        if name in by_name and by_name[name].tier is not tiers.Tier.DATA:
            index = next(i for i, s in each(cfg.services) if s.name == name)
            yield Finding(("services", index, "tier"), f"{name} is a datastore ({loc[0]}): data tier")


@rule(VedfinanceConfig)
def _databases(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    """One database per service (each gets one DATABASE_URL), names unique, none named like the
    redis backup job (its bucket and job would be the same)."""
    yield from duplicates(((("databases", i, "name"), d.name) for i, d in each(cfg.databases)),
                          "database name", ctx.where)
    yield from duplicates(((("databases", i, "service"), d.service) for i, d in each(cfg.databases)),
                          "service (it would get two DATABASE_URL values)", ctx.where)
    for index, db in each(cfg.databases):
        if db.name.replace("_", "-") == BACKUP_REDIS_LABEL:
            yield Finding(("databases", index, "name"), "is the name of the redis backup job; rename it")
    injected = {cfg.postgres_service: {"POSTGRES_PASSWORD": "the generated superuser password"},
                cfg.redis_service: {"REDIS_PASSWORD": "the generated Redis password"}}
    for _, db in each(cfg.databases):
        injected.setdefault(db.service, {}).update(DATABASE_URL=f"database {db.name}", REDIS_URL="Redis")
    yield from injected_env_findings("services", cfg.services, injected)


@rule(VedfinanceConfig)
def _routes(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from duplicates(((("routes", i, "host"), r.host) for i, r in each(cfg.routes)), "hostname", ctx.where)
    yield from hosts_in_zone([(("routes", i, "host"), r.host) for i, r in each(cfg.routes)], cfg.dns.zone)


@rule(VedfinanceConfig)
def _monitoring(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from monitoring_findings(cfg.monitoring, "vedfinance", {s.name: s for _, s in each(cfg.services)},
                                   where=lambda n: ctx.where("services", next(i for i, s in each(cfg.services)
                                                                              if s.name == n), "port"))
    yield from alert_email_findings(cfg.monitoring, ctx)


def _parts(parts: list, ctx: RuleContext) -> str:
    """Each limit's key path and value, largest first, the monitoring stack's fixed ones summed."""
    fixed = sum(v for loc, v in parts if loc == ("monitoring",))
    named = sorted(((loc, v) for loc, v in parts if loc != ("monitoring",)), key=lambda p: -p[1])
    return ", ".join([f"{ctx.where(*loc)} {v:g}" for loc, v in named] + [f"fixed monitoring limits {fixed:g}"])


@rule(VedfinanceConfig)
def _fits_the_host(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Every limit, the ingress's and the monitoring stack's included, fits the host with headroom."""
    if any(s is None for s in cfg.services):
        return
    host = cfg.host
    for field, size, unit in (("headroom_mb", "memory_mb", "MiB"), ("headroom_cpus", "vcpus", "CPUs")):
        if getattr(host, field) >= getattr(host, size):
            yield Finding(("host", field), f"{getattr(host, field):g} {unit} of headroom leaves nothing of the "
                          f"host's {getattr(host, size):g}")
            return
    extra = monitoring_specs(cfg.monitoring, "/srv")
    memory_parts = [(("services", i, "memory_mb"), s.memory_mb) for i, s in enumerate(cfg.services)]
    memory_parts += [(("ingress_memory_mb",), cfg.ingress_memory_mb)]
    memory_parts += [(("monitoring", f"{s.name}_memory_mb") if f"{s.name}_memory_mb" in MonitoringConfig.model_fields
                      else ("monitoring",), s.memory_mb) for s in extra]
    cpu_parts = [(("services", i, "cpus"), s.cpus) for i, s in enumerate(cfg.services)]
    cpu_parts += [(("ingress_cpus",), cfg.ingress_cpus)] + [(("monitoring",), s.cpus) for s in extra]
    memory = sum(v for _, v in memory_parts)
    cpus = sum(v for _, v in cpu_parts)
    memory_budget = host.memory_mb - host.headroom_mb
    cpu_budget = host.vcpus - host.headroom_cpus
    over = []
    if memory > memory_budget:
        over.append(f"memory limits add up to {memory} MiB but the host has {host.memory_mb} "
                    f"MiB less {host.headroom_mb} MiB headroom = {memory_budget} MiB ({_parts(memory_parts, ctx)})")
    if cpus > cpu_budget + 1e-9:
        over.append(f"CPU limits add up to {cpus:g} but the host has {host.vcpus:g} less "
                    f"{host.headroom_cpus:g} headroom = {cpu_budget:g} ({_parts(cpu_parts, ctx)})")
    if over:
        yield Finding(("services",), "; ".join(over) + " (lower the limits or grow the host)")


@rule(VedfinanceConfig)
def _egress(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from egress_allow_findings(cfg.egress, [s.name for _, s in each(cfg.services)])


@rule(VedfinanceConfig)
def _backup_buckets(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, [d.name for _, d in each(cfg.databases)] + [BACKUP_REDIS_LABEL])


def claims(cfg: VedfinanceConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, [d.name for _, d in each(cfg.databases)] + [BACKUP_REDIS_LABEL]),
            "ingress_addresses": [(("host", "address"), cfg.host.address)]}


def monitoring_specs(cfg: MonitoringConfig, data_dir: str) -> list[ContainerSpec]:
    """The whole monitoring stack on the one VPS; nothing is published but Grafana on loopback."""
    return [*monitoring.server_specs(cfg, data_dir), *monitoring.exporter_specs(cfg, publish=False)]


def required_secrets(cfg: VedfinanceConfig) -> list[SecretKey]:
    # With a bootstrap user the deploy user is created from this key's public half
    # (tls.get_public_key, which reads the OpenSSH format): checked at the boundary.
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the VPS's deploy user",
                        format="openssh_private_key" if cfg.host.bootstrap_user else None)]
    needed += monitoring_secrets(cfg.monitoring)
    for spec in cfg.services:
        needed += [SecretKey(key=k, description=f"{e} of {spec.name}") for e, k in sorted(spec.secret_env.items())]
    return needed + secret_keys.registry_secrets("vedfinance", [s.image for s in cfg.services])



def build(ctx, cfg: VedfinanceConfig) -> dict:
    env = ctx.environment
    prod = env.is_production
    name = f"vedfinance-{env.name}"
    # Checked on plain names before anything is registered: the init script is rendered inside
    # an apply, which `pulumi preview` does not run.
    check_init_plan({d.name: d.name for d in cfg.databases}, [d.name for d in cfg.databases], cfg.extensions)
    product = Product("vedfinance")
    child = pulumi.ResourceOptions(parent=product)
    by_name = {s.name: s for s in cfg.services}

    host = OnPremVps(name, OnPremVpsArgs(
        address=cfg.host.address, private_key=ctx.secret(SSH_KEY_SECRET), ssh_port=cfg.host.ssh_port,
        registry_auth=secret_keys.registry_auth("vedfinance", [s.image for s in cfg.services]),
        bootstrap_user=cfg.host.bootstrap_user, access=ctx.admin_access(),
        role=tiers.HostRole(tier=tiers.Tier.EDGE, ssh_cidrs=tuple(env.admin_cidrs)),
        directories=monitoring.data_directories(f"/srv/{name}"),
        egress=container_egress_lock(
            cfg.egress, bridge="ved-ctr",
            containers=[*(s.name for s in cfg.services),
                        *(s.name for s in monitoring.server_specs(cfg.monitoring, ""))]),
    ), opts=child)

    ca = InternalCa(f"{name}-ca", common_name=f"{name} internal CA", opts=child)
    # The backup runner reaches Postgres on loopback, also with verify-full: 127.0.0.1 is a SAN.
    pg_cert = ca.issue("postgres", [cfg.postgres_service], ip_addresses=["127.0.0.1"])
    superuser = generated_password(f"{name}-pg-superuser", product)
    redis_password = generated_password(f"{name}-redis-password", product)
    role_passwords = {d.name: generated_password(f"{name}-db-{d.name}", product) for d in cfg.databases}

    def database_url(db: AppDatabase) -> pulumi.Output[str]:
        return pulumi.Output.secret(role_passwords[db.name].apply(
            lambda pw, db=db: f"postgresql://{db.name}:{pw}@{cfg.postgres_service}:5432/{db.name}"
                              f"?sslmode=verify-full&sslrootcert={CA_PATH}"))

    injected: dict[str, dict[str, pulumi.Input[str]]] = {
        cfg.postgres_service: {"POSTGRES_PASSWORD": superuser},
        cfg.redis_service: {"REDIS_PASSWORD": redis_password},
    }
    for db in cfg.databases:
        injected.setdefault(db.service, {})["DATABASE_URL"] = database_url(db)
        injected[db.service]["REDIS_URL"] = pulumi.Output.secret(redis_password.apply(
            lambda pw: f"redis://default:{pw}@{cfg.redis_service}:6379"))
    files = {cfg.postgres_service: [
        HostFile(container_path=f"{PG_TLS_DIR}/server.crt", content=pg_cert.cert_pem, mode="0444"),
        # The postgres image's user (uid 999) must own its key, readable by nobody else.
        HostFile(container_path=f"{PG_TLS_DIR}/server.key", content=pg_cert.key_pem, mode="0600", owner="999:999"),
        HostFile(container_path=HBA_PATH, content=render_pg_hba()),
    ]}
    ca_file = HostFile(container_path=CA_PATH, content=ca.cert_pem)
    for db in cfg.databases:
        files.setdefault(db.service, []).append(ca_file)

    services = [s.model_copy(update={"command": [
        "postgres", "-c", "ssl=on", "-c", f"ssl_cert_file={PG_TLS_DIR}/server.crt",
        "-c", f"ssl_key_file={PG_TLS_DIR}/server.key", "-c", "ssl_min_protocol_version=TLSv1.2",
        *hba_file_args()]})
        if s.name == cfg.postgres_service else s for s in cfg.services]
    records = a_records(name, provider=cfg.dns.provider, zone=cfg.dns.zone, hosts=[r.host for r in cfg.routes],
                        address=cfg.host.address, ttl=cfg.dns.ttl, parent=product,
                        cloudflare_zone_id=cfg.dns.cloudflare_zone_id)
    ingress = Ingress(routes=[IngressRoute(host=r.host, service=r.service, port=by_name[r.service].port,
                                           websocket=r.websocket) for r in cfg.routes],
                      acme_email=cfg.acme_email, memory_mb=cfg.ingress_memory_mb, cpus=cfg.ingress_cpus,
                      depends_on=records)
    grafana_password = generated_password(f"{name}-grafana-admin", product)
    watch = host_monitoring(ctx, cfg.monitoring, data_dir=host.data_dir, grafana_password=grafana_password,
                            service_ports={s: by_name[s].port for s in cfg.monitoring.metrics_services},
                            probes=[f"https://{r.host}" for r in cfg.routes],
                            backup_jobs=[f"{name}-{label.replace('_', '-')}"
                                         for label in [*(d.name for d in cfg.databases), "redis"]])
    files |= watch.files
    injected |= watch.secret_env
    created = host.deploy([*services, *watch.specs],
                          secret_env=merge_env(service_secret_env(ctx.secret, cfg.services), injected),
                          files=files, ingress=ingress)

    wal_password = generated_password(f"{name}-pg-wal", product)
    sql = pulumi.Output.all(wal_password, *[role_passwords[d.name] for d in cfg.databases]).apply(
        lambda pws: render_init_sql({d.name: d.name for d in cfg.databases},
                                    {d.name: pw for d, pw in zip(cfg.databases, pws[1:])}, cfg.extensions)
        + replication_role_sql(pws[0]))
    init = datastore_init(f"{name}-postgres-init", host.ssh, stack=name, service=cfg.postgres_service, text=sql,
                          ready=PG_READY, apply="psql -U postgres -v ON_ERROR_STOP=1 -q",
                          path=f"/etc/platform/{name}-init.sql", parent=product,
                          depends_on=[created[cfg.postgres_service]])

    jobs = [(d.name, "postgres", by_name[cfg.postgres_service].image,
             pulumi.Output.secret(role_passwords[d.name].apply(
                 lambda pw, d=d: f"postgresql://{d.name}:{pw}@127.0.0.1:5432/{d.name}"
                                 f"?sslmode=verify-full&sslrootcert={host_path_for(host.data_dir, d.service, ca_file)}")))
            for d in cfg.databases]
    jobs.append(("redis", "redis", by_name[cfg.redis_service].image, pulumi.Output.secret(
        redis_password.apply(lambda pw: f"redis://default:{pw}@127.0.0.1:6379"))))
    # Point-in-time recovery of the cluster: one WAL archive, at the strictest RPO of its databases.
    jobs.append(("wal", "pitr", by_name[cfg.postgres_service].image, pulumi.Output.secret(
        wal_password.apply(lambda pw: f"postgresql://{WAL_ROLE}:{pw}@127.0.0.1:5432/postgres"))))
    cluster_rpo = min(d.rpo_minutes for d in cfg.databases)
    rpo_by_label = {d.name: d.rpo_minutes for d in cfg.databases}
    for label, kind, image, uri in jobs:
        source = created[cfg.redis_service if kind == "redis" else cfg.postgres_service]
        job_name = f"{name}-{label.replace('_', '-')}"
        R2Backup(f"{name}-{label.replace('_', '-')}-backup", R2BackupArgs(
            job=BackupJob(job=job_name, kind=kind,
                          retention_days=cfg.backup.retention_days, tool_image=image,
                          mounts=(f"{host.data_dir}/files",), rpo_minutes=cluster_rpo,
                          source_service=cfg.postgres_service if kind == "pitr" else ""),
            rpo_minutes=cluster_rpo if kind == "pitr" else rpo_by_label.get(label),
            source_name=source.pulumi_resource_name, source_uri=uri,
            account_id=cfg.backup.cloudflare_account_id,
            bucket_name=f"{cfg.backup.bucket}-{label.replace('_', '-')}",
            location=cfg.backup.location, lock_days=cfg.backup.lock_days,
            runner=host.ssh, runner_ready=[init], protect=prod,
            backup_calendar=cfg.backup.schedule, restore_calendar=cfg.backup.restore_test_schedule,
        ), opts=child)

    outputs = {"address": cfg.host.address, "urls": [f"https://{r.host}" for r in cfg.routes],
               # Grafana listens on the VPS's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<address>.
               "grafanaAdminPassword": pulumi.Output.secret(grafana_password)}
    product.register_outputs(outputs)
    return outputs


PRODUCT = ProductDefinition(name="vedfinance", config_model=VedfinanceConfig, build=build,
                            secrets=required_secrets, claims=claims)
