"""KRO's config rules: what the models alone cannot check (names, references, env keys, the
DNS zone), each finding naming its key path."""

from __future__ import annotations

import ipaddress
from typing import Iterator

from components import tiers
from stacks.collisions import DOCKER_DEFAULT_BRIDGE, duplicates, program_containers, readable, reserved_names
from stacks.kro.config import KroConfig, database_subnet
from stacks.secret_keys import secret_key_findings
from stacks.shared_config import (alert_email_findings, backup_bucket_findings, derived_buckets,
                                  egress_allow_findings, hosts_in_zone, injected_env_findings,
                                  monitoring_findings)
from validation.rules import Finding, RuleContext, each, rule


@rule(KroConfig)
def _services(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Unique names, none a container the program adds; app tier, published by the ingress only."""
    yield from duplicates(((("services", i, "name"), s.name) for i, s in each(cfg.services)), "service name",
                          ctx.where)
    yield from reserved_names(cfg.services, "services", program_containers(monitoring=True))
    for index, spec in each(cfg.services):
        if spec.publish:
            yield Finding(("services", index, "publish"), "only the ingress publishes ports; remove publish "
                                                          "and add a route")
        if spec.tier is not tiers.Tier.APP:
            yield Finding(("services", index, "tier"), f"KRO services are app tier, got {spec.tier.value}")
    yield from secret_key_findings("kro", "services", cfg.services)


@rule(KroConfig)
def _routes(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each route names a service with a port; each hostname once, inside the DNS zone."""
    by_name = {s.name: (i, s) for i, s in each(cfg.services)}
    for index, route in each(cfg.routes):
        if route.service not in by_name:
            yield Finding(("routes", index, "service"), f"{route.service} is not a service "
                          f"(services: {', '.join(sorted(by_name))})")
        elif by_name[route.service][1].port is None:
            yield Finding(("routes", index, "service"), f"{route.service} has no port to route to; set "
                          f"{ctx.where('services', by_name[route.service][0], 'port')}")
    yield from duplicates(((("routes", i, "host"), r.host) for i, r in each(cfg.routes)), "hostname", ctx.where)


@rule(KroConfig)
def _routes_in_zone(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from hosts_in_zone([(("routes", i, "host"), r.host) for i, r in each(cfg.routes)], cfg.dns.zone)


@rule(KroConfig)
def _database_service(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    names = {s.name for _, s in each(cfg.services)}
    if cfg.database_service not in names:
        yield Finding(("database_service",), f"{cfg.database_service} is not a service "
                      f"(services: {', '.join(sorted(names))})")
    yield from injected_env_findings("services", cfg.services, {
        cfg.database_service: {"DATABASE_URL": "the managed database's URL"}})


@rule(KroConfig)
def _monitoring(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from monitoring_findings(cfg.monitoring, "kro", {s.name: s for _, s in each(cfg.services)},
                                   where=lambda n: ctx.where("services", next(i for i, s in each(cfg.services)
                                                                              if s.name == n), "port"))
    yield from alert_email_findings(cfg.monitoring, ctx)


@rule(KroConfig)
def _adopt_domain(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    if cfg.adopt.domain and cfg.dns.provider != "digitalocean":
        yield Finding(("adopt", "domain"), f"only a DigitalOcean DNS zone can be adopted; dns.provider is "
                      f"{cfg.dns.provider} (set adopt.domain false)")


@rule(KroConfig)
def _egress(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from egress_allow_findings(cfg.egress, [s.name for _, s in each(cfg.services)])
    own = ipaddress.ip_network(database_subnet(cfg.egress.subnet))
    others = (cfg.vpc_ip_range, DOCKER_DEFAULT_BRIDGE)
    if not own.is_private or any(own.overlaps(ipaddress.ip_network(o, strict=False)) for o in others):
        yield Finding(("egress", "subnet"), f"the database service's own network takes the /28 below it, {own}, "
                      f"which must be private and outside vpc_ip_range ({cfg.vpc_ip_range}) and docker0's "
                      f"{DOCKER_DEFAULT_BRIDGE}; move the subnet")


@rule(KroConfig)
def _backup_bucket(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, [""])


def claims(cfg: KroConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, [""]),
            "networks": readable([(("vpc_ip_range",), lambda: cfg.vpc_ip_range),
                                  (("egress", "subnet"), lambda: cfg.egress.subnet),
                                  (("egress", "subnet"), lambda: database_subnet(cfg.egress.subnet))])}
