"""GIV's config rules: what the models alone cannot check (names, domains, engine versions,
env keys the program sets), each finding naming its key path."""

from __future__ import annotations

from typing import Iterator

from components import monitoring
from stacks.collisions import duplicates, readable
from stacks.giv.config import BACKEND_ENV, BACKUP_LABELS, GivConfig
from stacks.secret_keys import secret_key_findings
from stacks.shared_config import (alert_email_findings, backup_bucket_findings, derived_buckets,
                                  egress_allow_findings, egress_subnet_findings, hosts_in_zone, injected_env_findings,
                                  monitoring_findings)
from validation.provider_lists import check_version
from validation.rules import Finding, RuleContext, each, rule


@rule(GivConfig)
def _components(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from duplicates(((("components", i, "name"), c.name) for i, c in each(cfg.components)),
                          "component name", ctx.where)
    yield from duplicates(((("components", i, "domain"), c.domain) for i, c in each(cfg.components)),
                          "domain", ctx.where)
    yield from secret_key_findings("giv", "components", cfg.components)


@rule(GivConfig)
def _backend(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    by_name = {c.name: c for _, c in each(cfg.components)}
    if cfg.backend not in by_name or by_name[cfg.backend].kind != "service":
        yield Finding(("backend",), f"{cfg.backend} must be a service among the components "
                      f"({', '.join(n for n, c in by_name.items() if c.kind == 'service') or 'none'})")
    yield from injected_env_findings("components", cfg.components, {cfg.backend: BACKEND_ENV})


@rule(GivConfig)
def _domains_in_zone(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from hosts_in_zone([(("components", i, "domain"), c.domain) for i, c in each(cfg.components)], cfg.zone)


@rule(GivConfig)
def _versions(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    for field, engine in (("postgres", "pg"), ("mongodb", "mongodb"), ("cache", "valkey")):
        try:
            check_version(engine, getattr(cfg, field).version)
        except ValueError as exc:
            yield Finding((field, "version"), str(exc))


@rule(GivConfig)
def _monitoring(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    if cfg.monitoring and cfg.monitoring.metrics_services:
        yield Finding(("monitoring", "metrics_services"), "the ops droplet runs no services; App Platform "
                      "has its own metrics (remove it)")
    elif cfg.monitoring:
        yield from monitoring_findings(cfg.monitoring, "giv", {})
    yield from alert_email_findings(cfg.monitoring, ctx)


@rule(GivConfig)
def _egress(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from egress_subnet_findings(cfg.egress, [(ctx.where("vpc_ip_range"), cfg.vpc_ip_range)])
    yield from egress_allow_findings(cfg.egress, [s.name for s in monitoring.server_specs(cfg.monitoring, "")]
                                     if cfg.monitoring else [])


@rule(GivConfig)
def _backup_buckets(cfg: GivConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, BACKUP_LABELS)


def claims(cfg: GivConfig) -> dict:
    return {"hostnames": [(("components", i, "domain"), c.domain) for i, c in each(cfg.components) if c.domain],
            "buckets": derived_buckets(cfg.backup, BACKUP_LABELS),
            "apps": readable([(("app_name",), lambda: cfg.app_name)]),
            "spaces_buckets": readable([(("media_bucket", "name"), lambda: cfg.media_bucket.name)]),
            "networks": readable([(("vpc_ip_range",), lambda: cfg.vpc_ip_range),
                                  (("egress", "subnet"), lambda: cfg.egress.subnet)])}
