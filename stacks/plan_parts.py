"""What every product's plan holds the same way, as plan values (``stacks.plan``): the
DigitalOcean project and VPC, the monitoring stack of one host alerting to the environment's
destinations, the services' secret env maps, Postgres's readiness check and the off-host
archive of admin sessions."""

from __future__ import annotations

from typing import Mapping

from components import monitoring
from stacks.plan import Step, ref, step
from stacks.wiring import SESSION_ARCHIVE_LABEL, ConfigSecret, ServiceEnv, backup_bucket_name

# Over TCP: the postgres image's entrypoint runs initdb's temporary server on the Unix socket
# only and stops it before the real one starts, so a socket check can pass in between and the
# init then finds no server (seen on the rehearsal: "connection to server on socket ... failed").
PG_READY = "pg_isready -h 127.0.0.1 -U postgres -q"
"""The readiness check of a self-hosted Postgres before its init script runs."""


def foundation(name: str, *, label: str, production: bool, region: str, ip_range: str) -> tuple[Step, Step]:
    """The DigitalOcean project that lists a product's resources (``<name>-project``) and the
    product's own VPC (``<name>-vpc``)."""
    return (step("do.Project", f"{name}-project", name=f"{label} {name.split('-', 1)[1]}",
                 environment="Production" if production else "Staging", purpose="Web Application"),
            step("do.Vpc", f"{name}-vpc", name=name, region=region, ip_range=ip_range, protect=production))


def host_monitoring(environment, cfg: monitoring.MonitoringConfig, **where) -> monitoring.HostMonitoring:
    """The monitoring stack on one host (``monitoring.single_host``), alerting to the
    environment's destinations; its secrets are references."""
    alerts = environment.alerts
    return monitoring.single_host(
        cfg, emails=alerts.emails, slack_channel=alerts.slack_channel,
        smtp_password=ConfigSecret(cfg.smtp_password_secret) if cfg.smtp_password_secret else None,
        slack_url=ConfigSecret("alerts_slack_webhook_url") if alerts.slack_channel else None, **where)


def service_secret_env(env: Mapping[str, ServiceEnv]) -> dict[str, dict]:
    """Each service's secret env values (references), for the services that have any."""
    return {s: dict(service.secret) for s, service in env.items() if service.secret}


def session_archive(stack: str, backup, host: str, *, protect: bool) -> Step:
    """The product's admin-session records, from ``host`` (the step of the host that collects
    them, or of its only host), archived to the R2 bucket ``<backup.bucket>-sessions`` in the
    backups' account and location, each object locked for ``backup.retention_days``
    (``components.session_archive``)."""
    return step("session_archive", f"{stack}-session-archive", account_id=backup.cloudflare_account_id,
                bucket_name=backup_bucket_name(backup.bucket, SESSION_ARCHIVE_LABEL), host=ref(host, "ssh"),
                prefix=host, retention_days=backup.retention_days, location=backup.location,
                host_ready=ref(host, "files_delivered"), protect=protect)
