"""KRO's config rules: what the models alone cannot check (names, references, env keys, the
DNS zone), each finding naming its key path."""

from __future__ import annotations

import ipaddress
from typing import Iterator

from components import monitoring, tiers
from components.ingress import Ingress
from stacks.collisions import DOCKER_DEFAULT_BRIDGE, duplicates, program_containers, readable, reserved_names
from stacks.kro.config import KroConfig, database_subnet
from stacks.secret_keys import secret_key_findings
from stacks.shared_config import (alert_email_findings, backup_bucket_findings, derived_buckets,
                                  egress_allow_findings, egress_subnet_findings, hosts_in_zone, injected_env_findings,
                                  monitoring_findings)
from validation.provider_lists import droplet_capacity
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
    overlaps = list(egress_subnet_findings(cfg.egress, [(ctx.where("vpc_ip_range"), cfg.vpc_ip_range)]))
    yield from overlaps
    if overlaps:  # one error for the subnet: moving it moves the database network too
        return
    own = ipaddress.ip_network(database_subnet(cfg.egress.subnet))
    others = (cfg.vpc_ip_range, DOCKER_DEFAULT_BRIDGE)
    if not own.is_private or any(own.overlaps(ipaddress.ip_network(o, strict=False)) for o in others):
        yield Finding(("egress", "subnet"), f"the database service's own network takes the /28 below it, {own}, "
                      f"which must be private and outside vpc_ip_range ({cfg.vpc_ip_range}) and docker0's "
                      f"{DOCKER_DEFAULT_BRIDGE}; move the subnet")


@rule(KroConfig)
def _fits_the_droplet(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each service's limits within the droplet, and the memory limits of every container on it
    (the services, the ingress, the monitoring stack) within its memory: memory limits are hard,
    so more than the droplet has ends in the kernel's OOM killer. CPU limits are CFS quotas, a
    share the containers take turns at, so only each one is bounded (the committed staging
    droplet, 1 vCPU, runs limits adding up to 1.7)."""
    capacity = droplet_capacity(cfg.droplet.size)
    if capacity is None:
        return
    vcpus, memory = capacity
    size = f"{ctx.where('droplet', 'size')} {cfg.droplet.size}: {vcpus:g} vCPU, {memory} MiB"
    over = False
    for i, spec in each(cfg.services):
        if spec.memory_mb > memory:
            over = True
            yield Finding(("services", i, "memory_mb"), f"{spec.memory_mb} MiB is more than the droplet has "
                          f"({size}); lower it or grow the droplet")
        if spec.cpus > vcpus:
            over = True
            yield Finding(("services", i, "cpus"), f"{spec.cpus:g} is more than the droplet's {vcpus:g} vCPU "
                          f"({size}); lower it or grow the droplet")
    if over:
        return
    parts = [(ctx.where("services", i, "memory_mb"), s.memory_mb) for i, s in each(cfg.services)]
    parts += [("the ingress", Ingress.memory_mb)]
    if cfg.monitoring is not None:
        parts += [("the monitoring stack", sum(s.memory_mb for s in [*monitoring.server_specs(cfg.monitoring, "/x"),
                                                                     *monitoring.exporter_specs(cfg.monitoring, publish=False)]))]
    total = sum(v for _, v in parts)
    if total > memory:
        yield Finding(("services",), f"memory limits add up to {total} MiB ({', '.join(f'{w} {v}' for w, v in parts)}) "
                      f"but the droplet has {memory} MiB ({size}); lower the limits or grow the droplet")


@rule(KroConfig)
def _backup_bucket(cfg: KroConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from backup_bucket_findings(cfg.backup, [""])


def claims(cfg: KroConfig) -> dict:
    return {"hostnames": [(("routes", i, "host"), r.host) for i, r in each(cfg.routes)],
            "buckets": derived_buckets(cfg.backup, [""]),
            "networks": readable([(("vpc_ip_range",), lambda: cfg.vpc_ip_range),
                                  (("egress", "subnet"), lambda: cfg.egress.subnet),
                                  (("egress", "subnet"), lambda: database_subnet(cfg.egress.subnet))])}
