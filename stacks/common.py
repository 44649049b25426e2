"""Pieces every product module uses: its top-level component and shared config shapes."""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random
from pydantic import Field, ValidationInfo, model_validator

from components import monitoring
from components.app_platform import AppComponent
from components.containers import ContainerSpec
from stacks.model import Hostname, ResourceName, StrictModel

SECRET_KEY_PATTERN = r"^[a-z][a-z0-9_]{2,62}$"


class Product(pulumi.ComponentResource):
    """The root of one product's resources, so the plan and the synth group by product."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"platform:products:{name.capitalize()}", name, None, opts)


def product_foundation(product: Product, *, name: str, label: str, production: bool,
                       region: str, ip_range: str) -> tuple[do.Project, do.Vpc]:
    """The DigitalOcean project that lists a product's resources and the product's own VPC."""
    project = do.Project(f"{name}-project", name=f"{label} {name.split('-', 1)[1]}",
                         environment="Production" if production else "Staging",
                         purpose="Web Application", opts=pulumi.ResourceOptions(parent=product))
    vpc = do.Vpc(f"{name}-vpc", name=name, region=region, ip_range=ip_range,
                 opts=pulumi.ResourceOptions(parent=product, protect=production))
    return project, vpc


class RouteConfig(StrictModel):
    host: Hostname = Field(description="public hostname")
    service: ResourceName = Field(description="service that answers it")
    websocket: bool = Field(default=False, description="allow WebSocket upgrade")


class DnsConfig(StrictModel):
    """Where the product's public hostnames are published."""

    provider: Literal["digitalocean", "cloudflare"] = Field(
        description="DNS host of the zone: digitalocean or cloudflare")
    zone: Hostname = Field(description="the zone, e.g. krotrust.com")
    cloudflare_zone_id: str | None = Field(
        default=None, pattern=r"^[a-f0-9]{32}$",
        description="Cloudflare zone id (32 hex characters); required when provider is cloudflare")
    ttl: int = Field(default=300, ge=60, le=86400, description="record TTL in seconds")

    @model_validator(mode="after")
    def _zone_id_for_cloudflare(self) -> "DnsConfig":
        if self.provider == "cloudflare" and not self.cloudflare_zone_id:
            raise ValueError("cloudflare_zone_id is required when provider is cloudflare")
        if self.provider == "digitalocean" and self.cloudflare_zone_id:
            raise ValueError("cloudflare_zone_id is set but provider is digitalocean")
        return self


def check_hosts_in_zone(hosts: Sequence[str], zone: str) -> None:
    outside = [h for h in hosts if h != zone and not h.endswith(f".{zone}")]
    if outside:
        raise ValueError(f"hosts outside the DNS zone {zone}: {', '.join(outside)}")


def check_secret_keys(product: str, services: Sequence[ContainerSpec | AppComponent]) -> None:
    import re

    for spec in services:
        for env_name, key in spec.secret_env.items():
            if not re.match(SECRET_KEY_PATTERN, key) or not key.startswith(f"{product}_"):
                raise ValueError(f"{spec.name}: secret_env {env_name} -> {key!r}: secret "
                                 f"keys are lower_snake_case and start with {product}_")


def service_secret_env(secret, services: Sequence[ContainerSpec]
                       ) -> dict[str, dict[str, pulumi.Output[str]]]:
    """Each service's ``secret_env`` resolved to secret config values."""
    return {s.name: {env: secret(key) for env, key in s.secret_env.items()}
            for s in services if s.secret_env}


def merge_env(*maps: Mapping[str, Mapping[str, pulumi.Input[str]]]
              ) -> dict[str, dict[str, pulumi.Input[str]]]:
    merged: dict[str, dict[str, pulumi.Input[str]]] = {}
    for env_map in maps:
        for service, values in env_map.items():
            merged.setdefault(service, {}).update(values)
    return merged


class BackupConfig(StrictModel):
    """Where a product's off-site backups go (Cloudflare R2) and how long they are kept."""

    cloudflare_account_id: str = Field(pattern=r"^[a-f0-9]{32}$",
                                       description="Cloudflare account id (32 hex characters)")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
                        description="R2 bucket name for this product's backups")
    retention_days: int = Field(ge=1, le=3650, description="days backups are kept; at least 30 "
                                "in production and 7 elsewhere")
    lock_days: int | None = Field(default=None, ge=1, le=3650,
                                  description="bucket lock: objects cannot be deleted for this long")
    location: Literal["weur", "eeur", "wnam", "enam", "apac", "oc"] = Field(
        default="weur", description="R2 location hint")

    @model_validator(mode="after")
    def _retention_floor(self, info: ValidationInfo) -> "BackupConfig":
        environment = (info.context or {}).get("environment")
        if environment is None:
            return self
        floor = 30 if environment.is_production else 7
        if self.retention_days < floor:
            raise ValueError(f"retention_days is {self.retention_days}; the "
                             f"{environment.name} environment keeps backups at least {floor} days")
        if self.lock_days is not None and self.lock_days > self.retention_days:
            raise ValueError("lock_days cannot exceed retention_days (locked objects could not "
                             "be pruned)")
        return self


def host_monitoring(ctx, cfg: monitoring.MonitoringConfig, **where) -> monitoring.HostMonitoring:
    """The monitoring stack on one host, alerting to the environment's destinations."""
    alerts = ctx.environment.alerts
    return monitoring.single_host(
        cfg, emails=alerts.emails, slack_channel=alerts.slack_channel,
        smtp_password=ctx.secret(cfg.smtp_password_secret) if cfg.smtp_password_secret else None,
        slack_url=ctx.secret("alerts_slack_webhook_url") if alerts.slack_channel else None, **where)


def monitoring_secrets(cfg: monitoring.MonitoringConfig | None) -> list:
    from stacks.config import SecretKey

    if cfg is None or not cfg.smtp_password_secret:
        return []
    return [SecretKey(key=cfg.smtp_password_secret, description="SMTP password Alertmanager sends alert emails with")]


def generated_password(name: str, parent: pulumi.Resource, length: int = 32) -> pulumi.Output[str]:
    """A generated secret (letters and digits, so it is safe in URLs and shell)."""
    return random.RandomPassword(name, length=length, special=False,
                                 opts=pulumi.ResourceOptions(parent=parent)).result


def registry_secret_key(product: str) -> str:
    """``<product>_registry_auth``: a Docker ``config.json`` with the product's registry logins."""
    return f"{product}_registry_auth"


def registry_secrets(product: str, images: Sequence[str]) -> list:
    """The registry secret is required when an image comes from DigitalOcean's registry, which is
    always private; for GHCR it is optional (public packages pull without it)."""
    from components.dockerhost import image_registry
    from stacks.config import SecretKey

    if any(image_registry(i) == "registry.digitalocean.com" for i in images):
        return [SecretKey(key=registry_secret_key(product),
                          description="Docker config.json with the registry logins "
                          "(`doctl registry docker-config --read-write=false`)")]
    return []


def registry_auth(product: str, images: Sequence[str]) -> list:
    """The Docker provider's ``registry_auth`` for ``images``, from the product's optional secret."""
    from components.dockerhost import registry_auth as auth

    config = pulumi.Config("platform").get_secret(registry_secret_key(product))
    return auth(images, config)
