"""KRO's settings: the config models (the boundary) and the constants the plan and the rules
share. No resources are created here."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, Field

from components.containers import ContainerSpec
from components.monitoring import MonitoringConfig
from stacks.environment import DO_REGIONS
from stacks.shared_config import BackupConfig, ContainerEgressConfig, DnsConfig, RouteConfig
from validation.fields import PrivateCidr, ResourceName, StrictModel
from validation.provider_lists import check_version, validator as provider_slug

SSH_KEY_SECRET = "kro_ssh_private_key"
DATABASE_PORTS = (25060, 25061)
"""The managed Postgres cluster's port and its connection pool's, reached in the VPC."""
BACKUP_LABEL = "db"
DATABASE_BRIDGE = "kro-db-ctr"
"""Bridge of the database service's own Docker network (``egress.OwnNetwork``)."""


def database_subnet(egress_subnet: str) -> str:
    """The database service's own network: the /28 just below ``egress.subnet`` (172.31.250.240/28
    below the default 172.31.251.0/24), 13 dynamic addresses for the running container, its
    replacement and a failed one left behind. The config rules refuse one that is not private
    or meets the VPC."""
    below = int(ipaddress.ip_network(egress_subnet).network_address) - 16
    return str(ipaddress.ip_network((max(below, 0), 28)))


class DropletConfig(StrictModel):
    size: Annotated[str, AfterValidator(provider_slug("droplet_sizes", "droplet size"))] = Field(
        description="droplet size slug, e.g. s-2vcpu-4gb")
    image: str = Field(default="ubuntu-24-04-x64", pattern=r"^ubuntu-\d\d-04-x64$",
                       description="Ubuntu LTS image slug; changing it replaces the droplet")
    ssh_key_fingerprints: list[Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")]] = Field(
        min_length=1, description="MD5 fingerprints (aa:bb:...) of DigitalOcean SSH keys for the first boot")
    backups: bool = Field(default=True, description="weekly provider backups of the droplet")


class DatabaseConfig(StrictModel):
    version: Annotated[str, AfterValidator(lambda v: check_version("pg", v))] = Field(
        default="16", description="Postgres major version")
    size: Annotated[str, AfterValidator(provider_slug("database_sizes", "database node size"))] = Field(
        description="node size slug, e.g. db-s-1vcpu-2gb")
    node_count: int = Field(default=1, ge=1, le=3, description="nodes; 2+ adds a standby")
    name: str = Field(default="kro", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                                     description="application database name")
    user: str = Field(default="kro_backend", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                      description="application database user (password generated)")
    pool_size: int = Field(default=10, ge=1, le=100, description="PgBouncer pool size")
    use_pool: bool = Field(default=False, description="backend connects through the pool; off "
                           "by default because migrations need session features")
    maintenance_day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                             "sunday"] = Field(default="sunday", description="maintenance day")
    maintenance_hour: str = Field(default="02:00", pattern=r"^([01]\d|2[0-3]):00$",
                                  description="maintenance window start, UTC, on the hour")


class AdoptConfig(StrictModel):
    """IDs of existing resources that the first ``pulumi up`` adopts instead of creating."""

    droplet_id: str | None = Field(default=None, pattern=r"^\d+$", description="droplet id")
    database_cluster_id: str | None = Field(
        default=None, pattern=r"^[0-9a-f-]{36}$", description="database cluster uuid")
    domain: bool = Field(default=False, description="adopt the DigitalOcean DNS domain (zone) "
                         "so the program manages it; records are managed either way")


class KroConfig(StrictModel):
    """Settings of the KRO product in one stack."""

    region: Literal[DO_REGIONS] | None = Field(  # type: ignore[valid-type]
        default=None, description="region slug; defaults to environment.region")
    vpc_ip_range: PrivateCidr = Field(description="private range of the product's VPC, e.g. 10.110.0.0/20")
    droplet: DropletConfig = Field(description="the droplet that runs the containers")
    database: DatabaseConfig = Field(description="the managed Postgres cluster")
    services: list[ContainerSpec] = Field(min_length=1, description="containers behind nginx")
    database_service: ResourceName = Field(
        default="backend", description="service that gets DATABASE_URL and the cluster CA")
    database_ca_path: str = Field(
        pattern=r"^/[^\s]+\.crt$",
        description="where the database service reads the cluster CA, e.g. "
        "/usr/src/app/kro-prod-db-cluster-ca-certificate.crt")
    routes: list[RouteConfig] = Field(min_length=1, description="hostname -> service routes")
    dns: DnsConfig = Field(description="where the hostnames are published")
    acme_email: EmailStr = Field(description="Let's Encrypt account email (expiry notices)")
    acme_staging: bool = Field(default=False, description="use Let's Encrypt's staging CA")
    backup: BackupConfig = Field(description="off-site backup of the database to R2, restore-"
                                 "tested weekly on the droplet")
    adopt: AdoptConfig = Field(default_factory=AdoptConfig, description="resources to adopt")
    monitoring: MonitoringConfig | None = Field(
        default=None, description="self-hosted Prometheus, Alertmanager, Grafana and exporters on the "
                                  "droplet (mgmt tier), watching its host and the backup jobs; unset: none")
    egress: ContainerEgressConfig = Field(
        default_factory=ContainerEgressConfig,
        description="where the droplet's containers may open connections: direct egress is dropped except this allow-list (by address and port, per "
                    "service); Alertmanager and the blackbox prober are the program's exemptions")
