"""Config sections several products share (routes, DNS, off-site backups) and the cross-field
rules products run on their own sections (alert e-mail, metrics services, injected env,
bootstrap user, derived R2 bucket names)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Iterator, Literal, Mapping, Sequence

from pydantic import AfterValidator, Field

from components.hostsetup import DEPLOY_USER
from stacks.collisions import DOCKER_DEFAULT_BRIDGE, r2_bucket_problem
from stacks.environment import is_production_name
from stacks.wiring import SESSION_ARCHIVE_LABEL
from validation.fields import ADMIN_PREFIX_MIN, Cidr, Hostname, ResourceName, StrictModel, docker_subnet
from validation.formats import at_most_hourly, calendar_in_utc, check_calendar
from validation.rules import Finding, RuleContext, Skip, each, rule


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
    schedule: Annotated[str, AfterValidator(check_calendar), AfterValidator(at_most_hourly),
                        AfterValidator(calendar_in_utc)] | None = Field(
        default=None, description="when dump and mirror backups run: a systemd calendar event "
        "(OnCalendar=, systemd.time(7)), at most hourly, read as UTC unless it names a time zone; by default daily at 03:MM UTC, the minute derived from "
        "the job's name so a host's jobs do not start together. Point-in-time recovery base "
        "backups are always weekly (Saturday)")
    restore_test_schedule: Annotated[str, AfterValidator(check_calendar),
                                     AfterValidator(calendar_in_utc)] | None = Field(
        default=None, description="when the newest backup is restore-tested: a systemd calendar "
        "event, read as UTC unless it names a time zone; by default weekly on Sunday at 05:MM UTC, the minute derived from the job's name")


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
    """The R2 buckets a product derives from ``backup.bucket`` (``<bucket>-<label>``, and the
    session archive's ``<bucket>-sessions``): each must be a valid R2 name (3-63 characters,
    https://developers.cloudflare.com/r2/buckets/create-buckets/)."""
    for label in [*labels, SESSION_ARCHIVE_LABEL]:
        name = f"{backup.bucket}-{label.replace('_', '-')}" if label else backup.bucket
        problem = r2_bucket_problem(name)
        if problem:
            what = ("the admin-session archive" if label == SESSION_ARCHIVE_LABEL
                    else f"the {label or 'backup'} backup")
            yield Finding((field, "bucket"), f"{problem} (derived for {what})")


def derived_buckets(backup: Any, labels: Sequence[str], field: str = "backup") -> list:
    """(key path, (account, bucket)) of every R2 bucket a product derives, the session archive's
    included, for the collision checks."""
    return [((field, "bucket"), (backup.cloudflare_account_id,
                                 f"{backup.bucket}-{label.replace('_', '-')}" if label else backup.bucket))
            for label in [*labels, SESSION_ARCHIVE_LABEL]]


def _one_site(cidr: str) -> str:
    import ipaddress

    network = ipaddress.ip_network(cidr)
    if network.prefixlen < ADMIN_PREFIX_MIN[network.version]:
        raise ValueError(f"{cidr} is broader than /{ADMIN_PREFIX_MIN[network.version]}: an allow-list entry "
                         "that wide is an open door; list the destination's own addresses")
    return cidr


class AllowedDestination(StrictModel):
    """One destination of a single-host product's egress allow-list, by address: the host
    filters container traffic by address and port (DOCKER-USER), not by name."""

    name: ResourceName = Field(description="destination, e.g. paystack-api")
    cidrs: list[Annotated[Cidr, AfterValidator(_one_site)]] = Field(
        min_length=1, description="its addresses: at most one site wide (IPv4 /24, IPv6 /48), since a broader "
                                  "destination defeats the allow-list")
    port: int = Field(gt=0, lt=65536, description="TCP port, e.g. 443")
    services: list[ResourceName] = Field(min_length=1, description="containers that may open it (each gets a "
                                         "fixed address on the host's network, which the rule matches)")


HOST_SUBNET = docker_subnet(26, "the containers' fixed addresses start at its tenth address and stay in its "
                            "lower half, Docker assigns the upper half, and KRO's database network is the /28 "
                            "just below it (a /26 keeps that /28 aligned)")


class ContainerEgressConfig(StrictModel):
    """Where a single-host product's containers may open connections. By default nowhere but
    their own network (the tier model: app and data egress goes to an allow-list); Alertmanager
    and the blackbox prober, which must reach mail, Slack and the public hostnames, are the
    program's exemptions."""

    allow: list[AllowedDestination] = Field(default_factory=list,
                                            description="destinations by address and port, per service; "
                                                        "default none")
    subnet: HOST_SUBNET = Field(default="172.31.251.0/24", description="subnet of the host's Docker network, private IPv4, a /26 "
                                "or larger: fixed addresses for the containers named here and the exemptions in its lower "
                                "half, Docker assigns the upper half (KRO: its database service's network is the /28 just "
                                "below it); apart from the host's VPC and docker0; changing it replaces the network and its containers")


def egress_allow_findings(egress: ContainerEgressConfig | None, services: Sequence[str],
                          prefix: tuple = ("egress",)) -> Iterator[Finding]:
    """Every service an allow-list entry names is deployed on the host, and none is one of the
    program's exemptions (``MONITORING_EGRESS``), which reach the internet directly already: the
    same rule for every product, whether its host lists them among its containers (GIV's ops
    droplet runs only the monitoring stack) or not (KRO, V-EdFinance: their services)."""
    if egress is None:
        return
    known = set(services)
    for i, entry in each(egress.allow):
        for j, service in enumerate(entry.services):
            if service in MONITORING_EGRESS:
                yield Finding((*prefix, "allow", i, "services", j),
                              f"{service} is one of the program's exemptions: it reaches the internet directly "
                              "already (Alertmanager: mail and Slack; blackbox: the probed hostnames); remove it here")
            elif service not in known:
                yield Finding((*prefix, "allow", i, "services", j),
                              f"{service} is not a container of this host (containers: {', '.join(sorted(known))})")
    # Fixed addresses run from the subnet's tenth to the end of its lower half (workload_lock).
    named = {s for entry in egress.allow for s in entry.services} | set(MONITORING_EGRESS)
    room = ipaddress.ip_network(egress.subnet).num_addresses // 2 - 10
    if len(named) > room:
        yield Finding((*prefix, "subnet"), f"{egress.subnet} has {room} fixed addresses in its lower half (from its "
                      f"tenth) for {len(named)} containers (the allow-list's and {', '.join(MONITORING_EGRESS)}); "
                      "use a larger subnet")


def egress_subnet_findings(egress: ContainerEgressConfig, private: Sequence[tuple[str, str]] = ()
                           ) -> Iterator[Finding]:
    """The host's Docker subnet apart from the networks the host must still reach or has already:
    ``private`` ((its key path as shown, CIDR): the product's VPC) and docker0's. An overlap routes that range
    into the Docker bridge (a VPC peer's replies never leave the host)."""
    subnet = ipaddress.ip_network(egress.subnet)
    for what, cidr in [*private,
                       ("docker0's default subnet on every host", DOCKER_DEFAULT_BRIDGE)]:
        if subnet.overlaps(ipaddress.ip_network(cidr)):
            yield Finding(("egress", "subnet"), f"{egress.subnet} overlaps {what} ({cidr}): the host would route "
                          "that range into its Docker bridge; choose a private range apart from it, such as "
                          "172.31.251.0/24")


MONITORING_EGRESS = ("alertmanager", "blackbox")
"""The program's containers that reach the internet directly on a single host: Alertmanager
(mail, Slack) and the blackbox prober (the public hostnames)."""


def container_egress_lock(egress_cfg: ContainerEgressConfig, *, bridge: str, containers: Sequence[str],
                          internal_cidr: str | None = None,
                          internal_peers: Sequence[tuple[str, int]] = (),
                          extra: Sequence[tuple[str, str, int]] = (), own_networks: Sequence = ()):
    """The host's ``egress.EgressLock``: the monitoring exemptions among ``containers``, the
    config's allow-list and the program's own ``extra`` (container, CIDR, port) flows; the
    ``egress.OwnNetwork`` containers' flows match their network's subnet."""
    from components import egress

    allowed = [(service, cidr, entry.port) for entry in egress_cfg.allow for service in entry.services
               for cidr in entry.cidrs] + list(extra)
    return egress.workload_lock(bridge=bridge, subnet=egress_cfg.subnet, internal_cidr=internal_cidr,
                                exempt=[c for c in MONITORING_EGRESS if c in containers],
                                allowed=allowed, internal_peers=internal_peers, own_networks=own_networks)
