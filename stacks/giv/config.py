"""GIV's settings: the config models (the boundary) and the constants the plan and the rules
share. No resources are created here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from components.app_components import AppComponent
from components.monitoring import MonitoringConfig
from stacks.environment import DO_REGIONS
from stacks.shared_config import BackupConfig, ContainerEgressConfig
from validation.fields import Hostname, PrivateCidr, StrictModel
from validation.provider_lists import digitalocean, validator as provider_slug

SSH_KEY_SECRET = "giv_ssh_private_key"
APP_REGIONS = tuple(digitalocean()["app_regions"])
SPACES_REGIONS = tuple(digitalocean()["spaces_regions"])
BACKUP_LABELS = ("pg", "mongo")
"""R2 buckets ``<backup.bucket>-<label>``, one per backed-up cluster."""
WEEKDAYS = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
CA_DIR = "/workspace/.certs"


class ClusterConfig(StrictModel):
    version: str = Field(pattern=r"^\d+$", description="major version (checked per engine against "
                         "validation/data/digitalocean.json)")
    size: Annotated[str, AfterValidator(provider_slug("database_sizes", "database node size"))] = Field(
        description="node size slug")
    node_count: int = Field(default=1, ge=1, le=3, description="nodes; 2+ adds a standby")
    maintenance_day: WEEKDAYS = Field(default="sunday", description="maintenance day")
    maintenance_hour: str = Field(default="02:00", pattern=r"^([01]\d|2[0-3]):00$",
                                  description="maintenance window start, UTC")


class MediaBucketConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", description="Spaces bucket name")
    region: Literal[SPACES_REGIONS] = Field(description="Spaces region")  # type: ignore[valid-type]
    noncurrent_version_days: int = Field(default=30, ge=1, le=3650,
                                         description="days old object versions are kept")


class OpsDropletConfig(StrictModel):
    size: Annotated[str, AfterValidator(provider_slug("droplet_sizes", "droplet size"))] = Field(
        default="s-1vcpu-1gb", description="droplet size")
    ssh_key_fingerprints: list[Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")]] = Field(
        min_length=1, description="MD5 fingerprints of DigitalOcean SSH keys")


class GivAdoptConfig(StrictModel):
    app_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="App Platform app id")
    mongodb_cluster_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="cluster uuid")
    postgres_cluster_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="cluster uuid")
    cache_cluster_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$", description="cluster uuid")
    media_bucket: bool = Field(default=False, description="adopt the existing Spaces bucket by name")


class GivConfig(StrictModel):
    """Settings of the GIV product in one stack."""

    region: Literal[DO_REGIONS] | None = Field(  # type: ignore[valid-type]
        default=None, description="region of VPC and databases; defaults to environment.region")
    app_region: Literal[APP_REGIONS] = Field(description="App Platform region, e.g. fra")  # type: ignore[valid-type]
    vpc_ip_range: PrivateCidr = Field(description="private range of the product's VPC")
    zone: Hostname = Field(description="DNS zone of the app's domains (on DigitalOcean DNS)")
    app_name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$", description="App Platform app name")
    components: list[AppComponent] = Field(min_length=1, description="backend service and static sites")
    backend: str = Field(default="krogiving-backend", description="component that gets the data "
                         "stores and the media bucket")
    frontend_origins: list[Hostname] = Field(default_factory=list, description="extra CORS origins "
                                             "for the media bucket; the static sites' domains are always allowed")
    mongodb: ClusterConfig = Field(description="managed MongoDB")
    postgres: ClusterConfig = Field(description="managed Postgres")
    cache: ClusterConfig = Field(description="managed Valkey (Bull queues, caches)")
    database_name: str = Field(default="krogiving", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                               description="database name in Postgres and MongoDB")
    database_user: str = Field(default="krogiving_backend", pattern=r"^[a-z][a-z0-9_]{0,62}$",
                               description="application user in Postgres and MongoDB")
    media_bucket: MediaBucketConfig = Field(description="Spaces bucket for campaign media")
    ops_droplet: OpsDropletConfig = Field(description="the backup runner inside the VPC (mgmt tier)")
    backup: BackupConfig = Field(description="off-site backups of MongoDB and Postgres to R2")
    adopt: GivAdoptConfig = Field(default_factory=GivAdoptConfig, description="resources to adopt")
    monitoring: MonitoringConfig | None = Field(
        default=None, description="self-hosted Prometheus, Alertmanager, Grafana and exporters on the "
                                  "ops droplet (mgmt tier), watching its host and the backup jobs; unset: none")
    egress: ContainerEgressConfig = Field(
        default_factory=ContainerEgressConfig,
        description="where the ops droplet's containers may open connections: direct egress is dropped except this allow-list (by address and port, per "
                    "service); Alertmanager and the blackbox prober are the program's exemptions")



BACKEND_ENV = {"DATABASE_URL": "Postgres", "MONGODB_URI": "MongoDB", "REDIS_URL": "Valkey",
               "SPACES_ACCESS_KEY_ID": "the media bucket key", "SPACES_SECRET_ACCESS_KEY": "the media bucket key",
               "SPACES_REGION": "the media bucket", "SPACES_BUCKET_NAME": "the media bucket",
               "SPACES_ENDPOINT": "the media bucket", "POSTGRES_CA_CERT": "Postgres's CA",
               "MONGODB_CA_CERT": "MongoDB's CA"}
"""What the program sets on the backend component (``plan``), each with its source."""
