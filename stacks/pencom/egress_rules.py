"""Pencom's egress rules: the proxy's domains, the containers' subnets on every node (apart
from each other and from what they must reach) and the direct routes, each finding naming its
key path. Registered after ``rules`` (``stacks.pencom`` imports both)."""

from __future__ import annotations

import ipaddress
from typing import Iterator

from components import egress
from stacks.collisions import duplicates
from stacks.pencom.config import DOCKER_DEFAULT_BRIDGE, PencomConfig
from stacks.pencom.network import EDGE_EXEMPT
from validation.rules import Finding, RuleContext, each, rule


@rule(PencomConfig)
def _egress(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Domains well formed and once per route; the edge subnet private, apart from the internal
    network, and large enough for the fixed addresses of the containers that leave directly."""
    for i, route in each(cfg.egress.https):
        try:
            egress.check_domains(route.domains)
        except ValueError as exc:
            yield Finding(("egress", "https", i, "domains"), str(exc))
    try:
        egress.check_domains(cfg.egress.host_domains)
    except ValueError as exc:
        yield Finding(("egress", "host_domains"), str(exc))
    yield from duplicates(((("egress", "https", i, "name"), r.name) for i, r in each(cfg.egress.https)),
                          "route name", ctx.where)
    subnet = ipaddress.ip_network(cfg.egress.edge_subnet)
    needed = 9 + len(EDGE_EXEMPT)
    hosts = list(subnet.hosts()) if subnet.num_addresses <= 65536 else None
    lower = list(subnet.subnets())[0] if subnet.prefixlen < subnet.max_prefixlen else subnet
    if hosts is not None and (len(hosts) < needed or hosts[needed - 1] not in lower):
        yield Finding(("egress", "edge_subnet"), f"{subnet} is too small: {', '.join(EDGE_EXEMPT)} get fixed "
                      f"addresses .{10}-.{needed} in its lower half; use a /27 or larger")


@rule(PencomConfig)
def _edge_subnet_apart(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    if ipaddress.ip_network(cfg.egress.edge_subnet).overlaps(ipaddress.ip_network(cfg.internal_cidr)):
        yield Finding(("egress", "edge_subnet"), f"overlaps internal_cidr {cfg.internal_cidr}; containers "
                      "could not reach the internal network")


@rule(PencomConfig)
def _node_subnets_apart(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each node's container subnet apart from the others', the internal network, docker0, the
    resolvers and the direct routes: an overlap sends that traffic into a bridge instead."""
    claims = [(("egress", "edge_subnet"), cfg.egress.edge_subnet),
              *((("egress", "node_subnets", node), getattr(cfg.egress.node_subnets, node))
                for node in ("app", "data", "storage"))]
    others = [("internal_cidr", cfg.internal_cidr), ("docker0's default subnet", DOCKER_DEFAULT_BRIDGE),
              *((f"egress.resolvers[{i}]", r) for i, r in each(cfg.egress.resolvers)),
              *((f"egress.direct[{i}] ({d.name}).cidrs", c) for i, d in each(cfg.egress.direct) for c in d.cidrs)]
    for index, (loc, cidr) in enumerate(claims):
        network = ipaddress.ip_network(cidr)
        for earlier, other in claims[:index]:
            if network.overlaps(ipaddress.ip_network(other)):
                yield Finding(loc, f"{cidr} overlaps {ctx.where(*earlier)} ({other}): each node's containers need "
                                   "addresses of their own; choose another private /24")
        for what, other in others:
            if loc != ("egress", "edge_subnet") or what != "internal_cidr":  # _edge_subnet_apart says it
                if network.overlaps(ipaddress.ip_network(other, strict=False)):
                    yield Finding(loc, f"{cidr} overlaps {what} ({other}); choose another private /24")


@rule(PencomConfig)
def _direct_routes(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    yield from duplicates(((("egress", "direct", i, "name"), r.name) for i, r in each(cfg.egress.direct)),
                          "route name", ctx.where)
