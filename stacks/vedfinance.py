"""V-EdFinance: one VPS (2 vCPU / 4 GB) running api and web for dev and staging, Postgres 17 with
pgvector and Redis, behind nginx with Let's Encrypt.

Fixes what the 2025-12-23 audit found: no resource limits (every container now has them, and
their sum must fit the host with headroom, or the config is rejected), Postgres 15 (now 17 with
pgvector), plaintext credentials (every password is generated and secret), no web healthcheck
(every container has one), root SSH login still enabled (closed, with password auth, by the
sshd baseline), a privileged monitoring container (none is privileged), backups only on the VPS
(now encrypted off-site to R2 daily, restore-tested weekly). Dev and staging keep separate
databases on the shared Postgres, each role confined to its own.
"""

from __future__ import annotations

import ipaddress

import pulumi
from pydantic import Field, model_validator

from components import monitoring, tiers
from components.backup import R2Backup, R2BackupArgs
from components.backupscripts import WAL_ROLE, BackupJob, replication_role_sql
from components.containers import ContainerSpec
from components.dns import a_records
from components.ingress import Ingress, IngressRoute
from components.internal_ca import InternalCa
from components.monitoring import MonitoringConfig
from components.onprem import OnPremVps, OnPremVpsArgs
from components.postgres_init import render_init_sql
from components.workloads import HostFile, datastore_init
from stacks.common import (BackupConfig, DnsConfig, Product, RouteConfig, check_hosts_in_zone,
                           check_secret_keys, generated_password, host_monitoring, merge_env,
                           monitoring_secrets, service_secret_env)
from stacks.config import SecretKey
from stacks.definition import ProductDefinition
from stacks.model import BootstrapUser, ResourceName, StrictModel

SSH_KEY_SECRET = "vedfinance_ssh_private_key"
CA_PATH = "/run/platform/ca.crt"
PG_TLS_DIR = "/run/platform/tls"


class HostConfig(StrictModel):
    address: str = Field(description="public address the program connects to over SSH")
    ssh_port: int = Field(default=22, gt=0, lt=65536, description="SSH port")
    bootstrap_user: BootstrapUser = None
    vcpus: float = Field(gt=0, description="CPU cores of the VPS")
    memory_mb: int = Field(gt=0, description="memory of the VPS in MiB")
    headroom_mb: int = Field(default=512, ge=0, description="memory kept for the OS and Docker")
    headroom_cpus: float = Field(default=0.25, ge=0, description="CPU kept for the OS and Docker")

    @model_validator(mode="after")
    def _address(self) -> "HostConfig":
        ipaddress.ip_address(self.address)
        return self


class AppDatabase(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="database (and its role) name")
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
    extensions: list[str] = Field(default_factory=lambda: ["vector"], description="extensions per database")
    routes: list[RouteConfig] = Field(min_length=1, description="hostname -> service routes")
    dns: DnsConfig = Field(description="where the hostnames are published")
    acme_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", description="Let's Encrypt email")
    ingress_memory_mb: int = Field(default=64, gt=0, description="nginx memory limit")
    ingress_cpus: float = Field(default=0.1, gt=0, description="nginx CPU limit")
    backup: BackupConfig = Field(description="off-site backups of Postgres and Redis to R2")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig,
        description="Prometheus, Alertmanager, Grafana, blackbox, node-exporter and cAdvisor on the "
                    "VPS (mgmt tier); their limits count against the host too")

    @model_validator(mode="after")
    def _consistent(self) -> "VedfinanceConfig":
        by_name = {s.name: s for s in self.services}
        if len(by_name) != len(self.services):
            raise ValueError("service names repeat")
        for needed in (self.postgres_service, self.redis_service, *(d.service for d in self.databases),
                       *(r.service for r in self.routes)):
            if needed not in by_name:
                raise ValueError(f"{needed} is referenced but not among services")
        for spec in self.services:
            if spec.publish and spec.tier is not tiers.Tier.DATA:
                raise ValueError(f"services {spec.name}: only the ingress publishes ports publicly; "
                                 "data services may publish, bound to loopback for the backup runner")
        for name in (self.postgres_service, self.redis_service):
            if by_name[name].tier is not tiers.Tier.DATA:
                raise ValueError(f"services {name}: a datastore is data tier")
        check_hosts_in_zone([r.host for r in self.routes], self.dns.zone)
        check_secret_keys("vedfinance", self.services)
        monitoring.check_config(self.monitoring, "vedfinance", list(by_name))
        stack = [*self.services, *monitoring_specs(self.monitoring, "/srv")]
        memory = sum(s.memory_mb for s in stack) + self.ingress_memory_mb
        cpus = sum(s.cpus for s in stack) + self.ingress_cpus
        memory_budget = self.host.memory_mb - self.host.headroom_mb
        cpu_budget = self.host.vcpus - self.host.headroom_cpus
        over = []
        if memory > memory_budget:
            over.append(f"memory limits add up to {memory} MiB but the host has {self.host.memory_mb} "
                        f"MiB less {self.host.headroom_mb} MiB headroom = {memory_budget} MiB")
        if cpus > cpu_budget + 1e-9:
            over.append(f"CPU limits add up to {cpus:g} but the host has {self.host.vcpus:g} less "
                        f"{self.host.headroom_cpus:g} headroom = {cpu_budget:g}")
        if over:
            raise ValueError("; ".join(over) + " (lower the limits or grow the host)")
        return self


def monitoring_specs(cfg: MonitoringConfig, data_dir: str) -> list[ContainerSpec]:
    """The whole monitoring stack on the one VPS; nothing is published but Grafana on loopback."""
    return [*monitoring.server_specs(cfg, data_dir), *monitoring.exporter_specs(cfg, publish=False)]


def required_secrets(cfg: VedfinanceConfig) -> list[SecretKey]:
    needed = [SecretKey(key=SSH_KEY_SECRET, description="private SSH key of the VPS's deploy user")]
    needed += monitoring_secrets(cfg.monitoring)
    for spec in cfg.services:
        needed += [SecretKey(key=k, description=f"{e} of {spec.name}") for e, k in sorted(spec.secret_env.items())]
    return needed



def build(ctx, cfg: VedfinanceConfig) -> dict:
    env = ctx.environment
    prod = env.is_production
    name = f"vedfinance-{env.name}"
    product = Product("vedfinance")
    child = pulumi.ResourceOptions(parent=product)
    by_name = {s.name: s for s in cfg.services}

    host = OnPremVps(name, OnPremVpsArgs(
        address=cfg.host.address, private_key=ctx.secret(SSH_KEY_SECRET), ssh_port=cfg.host.ssh_port,
        bootstrap_user=cfg.host.bootstrap_user,
        role=tiers.HostRole(tier=tiers.Tier.EDGE, ssh_cidrs=tuple(env.admin_cidrs)),
        directories=monitoring.data_directories(f"/srv/{name}"),
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
    ]}
    for db in cfg.databases:
        files.setdefault(db.service, []).append(HostFile(container_path=CA_PATH, content=ca.cert_pem))

    services = [s.model_copy(update={"command": [
        "postgres", "-c", "ssl=on", "-c", f"ssl_cert_file={PG_TLS_DIR}/server.crt",
        "-c", f"ssl_key_file={PG_TLS_DIR}/server.key", "-c", "ssl_min_protocol_version=TLSv1.2"]})
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
                          ready="pg_isready -U postgres -q", apply="psql -U postgres -v ON_ERROR_STOP=1 -q",
                          path=f"/etc/platform/{name}-init.sql", parent=product,
                          depends_on=[created[cfg.postgres_service]])

    jobs = [(d.name, "postgres", by_name[cfg.postgres_service].image,
             pulumi.Output.secret(role_passwords[d.name].apply(
                 lambda pw, d=d: f"postgresql://{d.name}:{pw}@127.0.0.1:5432/{d.name}"
                                 f"?sslmode=verify-full&sslrootcert={host.data_dir}/files/{d.service}/ca.crt")))
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
        ), opts=child)

    outputs = {"address": cfg.host.address, "urls": [f"https://{r.host}" for r in cfg.routes],
               # Grafana listens on the VPS's loopback: ssh -L 3300:127.0.0.1:3300 deploy@<address>.
               "grafanaAdminPassword": pulumi.Output.secret(grafana_password)}
    product.register_outputs(outputs)
    return outputs


PRODUCT = ProductDefinition(name="vedfinance", config_model=VedfinanceConfig, build=build,
                            secrets=required_secrets)
