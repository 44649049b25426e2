"""V-EdFinance's config rules: what the models alone cannot check (names, references, env
keys, limits that must fit the host), each finding naming its key path."""

from __future__ import annotations

from typing import Iterator

from components import monitoring, tiers
from components.containers import ContainerSpec
from components.monitoring import MonitoringConfig
from stacks.collisions import duplicates, program_containers, readable, reserved_names, wal_collision
from stacks.secret_keys import secret_key_findings
from stacks.shared_config import (alert_email_findings, backup_bucket_findings, derived_buckets,
                                  egress_allow_findings, egress_subnet_findings, hosts_in_zone, injected_env_findings,
                                  monitoring_findings)
from stacks.vedfinance.config import BACKUP_REDIS_LABEL, VedfinanceConfig
from stacks.wiring import SESSION_ARCHIVE_LABEL, SESSION_LABEL_TAKEN, WAL_LABEL
from validation.rules import Finding, RuleContext, each, rule


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
        elif db.name.replace("_", "-") == SESSION_ARCHIVE_LABEL:
            yield Finding(("databases", index, "name"), SESSION_LABEL_TAKEN)
        elif db.name == WAL_LABEL:
            yield Finding(("databases", index, "name"), wal_collision(ctx.where("postgres_service")))
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
    yield from egress_subnet_findings(cfg.egress)
    yield from egress_allow_findings(cfg.egress, [s.name for _, s in each(cfg.services)])


@rule(VedfinanceConfig)
def _backup_buckets(cfg: VedfinanceConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, [d.name for _, d in each(cfg.databases)] + [BACKUP_REDIS_LABEL])


def claims(cfg: VedfinanceConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, [d.name for _, d in each(cfg.databases)] + [BACKUP_REDIS_LABEL,
                                                                                               WAL_LABEL]),
            "ingress_addresses": [(("host", "address"), cfg.host.address)],
            "networks": readable([(("egress", "subnet"), lambda: cfg.egress.subnet)])}


def monitoring_specs(cfg: MonitoringConfig, data_dir: str) -> list[ContainerSpec]:
    """The whole monitoring stack on the one VPS; nothing is published but Grafana on loopback."""
    return [*monitoring.server_specs(cfg, data_dir), *monitoring.exporter_specs(cfg, publish=False)]
