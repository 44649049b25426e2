"""V-EdFinance's settings: the config models (the boundary) and the constants the plan and
the rules share. No resources are created here."""

from __future__ import annotations

from typing import Annotated

from pydantic import EmailStr, Field, field_validator

from components.containers import ContainerSpec
from components.monitoring import MonitoringConfig
from stacks.shared_config import BackupConfig, ContainerEgressConfig, DnsConfig, RouteConfig, bootstrap_user_problem
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
    ingress_cpus: float = Field(default=0.1, ge=0.01, description="nginx CPU limit, at least 0.01 (Docker's smallest --cpus)")
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
