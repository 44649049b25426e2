"""Pieces every product module uses: its top-level component and shared config shapes."""

from __future__ import annotations

import re
from typing import Annotated, Any, Iterator, Literal, Mapping, Sequence

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random
from pydantic import AfterValidator, Field

from components import monitoring
from components.containers import ContainerSpec
from components import dockerhost
from components.hostsetup import DEPLOY_USER
from stacks.collisions import r2_bucket_problem
from stacks.definition import SecretKey
from stacks.environment import is_production_name
from validation.rules import Finding, RuleContext, Skip, each, rule
from validation.formats import check_calendar
from validation.fields import Hostname, ResourceName, StrictModel

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


@rule(DnsConfig)
def _zone_id_for_cloudflare(dns, ctx: RuleContext) -> Iterator[Finding]:
    if dns.provider == "cloudflare" and not dns.cloudflare_zone_id:
        yield Finding(("cloudflare_zone_id",), "is required when provider is cloudflare")
    if dns.provider == "digitalocean" and dns.cloudflare_zone_id:
        yield Finding(("cloudflare_zone_id",), "is set but provider is digitalocean; remove it")


def hosts_in_zone(claims: Sequence[tuple[tuple, str]], zone: str) -> Iterator[Finding]:
    """A finding at each hostname outside ``zone`` (the records could not be created)."""
    for loc, host in claims:
        if host is not None and host != zone and not host.endswith(f".{zone}"):
            yield Finding(loc, f"{host} is outside the DNS zone {zone}")


def secret_key_findings(product: str, field: str, services: Sequence[Any]) -> Iterator[Finding]:
    """Secret keys a product's services name: lower_snake_case, prefixed with the product."""
    for index, spec in each(services):
        try:
            secret_env = spec.secret_env
        except Skip:
            continue
        for env_name, key in secret_env.items():
            if not re.match(SECRET_KEY_PATTERN, key) or not key.startswith(f"{product}_"):
                yield Finding((field, index, "secret_env", env_name),
                              f"secret key {key!r} must be lower_snake_case (3-63 characters) and start "
                              f"with {product}_")


def injected_env_findings(field: str, services: Sequence[Any], injected: Mapping[str, Mapping[str, str]]
                          ) -> Iterator[Finding]:
    """A service's own env or secret_env key that the program sets for it would be overwritten
    (secret) or clash (plain): ``injected`` maps service -> {env key: what sets it}."""
    for index, spec in each(services):
        for env_field in ("env", "secret_env"):
            try:
                keys = getattr(spec, env_field)
            except Skip:
                continue
            for key in keys:
                source = injected.get(spec.name, {}).get(key)
                if source:
                    yield Finding((field, index, env_field, key),
                                  f"{key} is set by the program for this service ({source}); remove it here")


def alert_email_findings(monitoring_cfg: Any, ctx: RuleContext, field: str = "monitoring") -> Iterator[Finding]:
    """Alertmanager sends environment.alerts.emails with the SMTP password secret."""
    if monitoring_cfg is None:
        return
    emails = ctx.env("alerts").emails
    if emails and not monitoring_cfg.smtp_password_secret:
        yield Finding((field, "smtp_password_secret"), "is required: environment.alerts.emails are "
                      "sent by Alertmanager with this SMTP password (a secret key such as <product>_alerts_smtp_password)")


def monitoring_findings(cfg: Any, product: str, services: Mapping[str, Any], field: str = "monitoring",
                        where: Any = None) -> Iterator[Finding]:
    """metrics_services name services with a port; the SMTP secret key carries the product prefix."""
    if cfg is None:
        return
    for index, name in enumerate(cfg.metrics_services):
        if name not in services:
            yield Finding((field, "metrics_services", index), f"{name} is not a service of this host "
                          f"(services: {', '.join(sorted(services)) or 'none'})")
        elif getattr(services[name], "port", 0) is None:
            yield Finding((field, "metrics_services", index), f"{name} has no port to scrape; set "
                          f"{where(name) if where else 'its port'}")
    if cfg.smtp_password_secret and not cfg.smtp_password_secret.startswith(f"{product}_"):
        yield Finding((field, "smtp_password_secret"), f"secret keys start with {product}_")


def bootstrap_user_problem(value: str | None) -> str | None:
    if value in ("root", DEPLOY_USER):
        return (f"{value!r}: use an existing sudo user other than root (the baseline closes root login) "
                f"and other than the deploy user {DEPLOY_USER!r} (the one it creates)")
    return None


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
    schedule: Annotated[str, AfterValidator(check_calendar)] | None = Field(
        default=None, description="when dump and mirror backups run: a systemd calendar event "
        "(OnCalendar=, systemd.time(7)); by default daily at 03:MM UTC, the minute derived from "
        "the job's name so a host's jobs do not start together. Point-in-time recovery base "
        "backups are always weekly (Saturday)")
    restore_test_schedule: Annotated[str, AfterValidator(check_calendar)] | None = Field(
        default=None, description="when the newest backup is restore-tested: a systemd calendar "
        "event; by default weekly on Sunday at 05:MM UTC, the minute derived from the job's name")


def is_production(ctx: RuleContext) -> bool:
    """The environment's production flag, or what its name implies."""
    production = ctx.env("production")
    return is_production_name(ctx.env("name")) if production is None else production


@rule(BackupConfig)
def _retention_floor(backup, ctx: RuleContext) -> Iterator[Finding]:
    """At least 30 days of backups in production and 7 elsewhere."""
    production = is_production(ctx)
    floor = 30 if production else 7
    if backup.retention_days < floor:
        yield Finding(("retention_days",), f"is {backup.retention_days}; a "
                      f"{'production' if production else 'non-production'} environment keeps backups "
                      f"at least {floor} days")


@rule(BackupConfig)
def _lock_within_retention(backup, ctx: RuleContext) -> Iterator[Finding]:
    if backup.lock_days is not None and backup.lock_days > backup.retention_days:
        yield Finding(("lock_days",), f"({backup.lock_days}) cannot exceed retention_days "
                      f"({backup.retention_days}): locked objects could not be pruned")


def backup_bucket_findings(backup: Any, labels: Sequence[str], field: str = "backup"
                           ) -> Iterator[tuple[tuple, tuple[str, str]] | Finding]:
    """The R2 buckets a product derives from ``backup.bucket`` (``<bucket>-<label>``): each must be
    a valid R2 name (3-63 characters, https://developers.cloudflare.com/r2/buckets/create-buckets/)."""
    for label in labels:
        name = f"{backup.bucket}-{label.replace('_', '-')}" if label else backup.bucket
        problem = r2_bucket_problem(name)
        if problem:
            yield Finding((field, "bucket"), f"{problem} (derived for the {label or 'backup'} backup)")


def derived_buckets(backup: Any, labels: Sequence[str], field: str = "backup") -> list:
    return [((field, "bucket"), (backup.cloudflare_account_id,
                                 f"{backup.bucket}-{label.replace('_', '-')}" if label else backup.bucket))
            for label in labels]


def host_monitoring(ctx, cfg: monitoring.MonitoringConfig, **where) -> monitoring.HostMonitoring:
    """The monitoring stack on one host, alerting to the environment's destinations."""
    alerts = ctx.environment.alerts
    return monitoring.single_host(
        cfg, emails=alerts.emails, slack_channel=alerts.slack_channel,
        smtp_password=ctx.secret(cfg.smtp_password_secret) if cfg.smtp_password_secret else None,
        slack_url=ctx.secret("alerts_slack_webhook_url") if alerts.slack_channel else None, **where)


def monitoring_secrets(cfg: monitoring.MonitoringConfig | None) -> list:
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
    if any(dockerhost.image_registry(i) == "registry.digitalocean.com" for i in images):
        return [SecretKey(key=registry_secret_key(product),
                          description="Docker config.json with the registry logins "
                          "(`doctl registry docker-config --read-write=false`)")]
    return []


def registry_auth(product: str, images: Sequence[str]) -> list:
    """The Docker provider's ``registry_auth`` for ``images``, from the product's optional secret."""
    config = pulumi.Config("platform").get_secret(registry_secret_key(product))
    return dockerhost.registry_auth(images, config)
