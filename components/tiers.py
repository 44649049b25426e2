"""The tier model, as pure functions: which tier may reach which, and on which ports.

| tier | who may reach it                        | on which ports            |
|------|-----------------------------------------|---------------------------|
| edge | the internet                            | 80, 443 only              |
| app  | edge, app                               | service ports             |
| data | app (and mgmt for backups, metrics)     | database/cache/store ports|
| mgmt | admin CIDRs / VPN only                  | 22, metrics               |

Internal on-prem nodes take SSH only from the bastion (the edge node), on 22 alone.

Everything that opens a port (DigitalOcean Firewalls, DatabaseFirewall trusted sources, UFW
rules, container port bindings) is computed here. The policy pack re-derives reachability from
the rules the resources actually carry, independently of this module, so a bug in one is caught
by the other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable


class Tier(str, Enum):
    EDGE = "edge"
    APP = "app"
    DATA = "data"
    MGMT = "mgmt"


INTERNET = "internet"
ADMIN = "admin"
BASTION = "bastion"
"""The edge node as SSH jump host: the only way to the internal nodes, on 22 alone."""
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
WEB_PORTS = (80, 443)
SSH_PORT = 22
WIREGUARD_REASON = "wireguard"
"""The reason on a management endpoint's UDP rule (``components.wireguard``): the one port
besides 80/443 an entry host opens to the internet, for the management network itself."""
NODE_EXPORTER_PORT = 9100

# Source -> tiers it may open connections to. "admin" is the admin CIDRs / VPN.
_MAY_REACH: dict[str, frozenset[Tier]] = {
    INTERNET: frozenset({Tier.EDGE}),
    Tier.EDGE.value: frozenset({Tier.EDGE, Tier.APP}),
    Tier.APP.value: frozenset({Tier.APP, Tier.DATA}),
    Tier.DATA.value: frozenset({Tier.DATA}),
    Tier.MGMT.value: frozenset({Tier.DATA, Tier.APP, Tier.EDGE, Tier.MGMT}),
    ADMIN: frozenset({Tier.MGMT, Tier.EDGE}),
    BASTION: frozenset({Tier.APP, Tier.DATA, Tier.MGMT}),
}


def may_reach(source: str | Tier, target: Tier, port: int | None = None) -> bool:
    """Whether the tier model lets ``source`` open a connection to ``target`` (on ``port``).

    From the internet only 80/443 on the edge. Admins reach the edge only on SSH (22), which is
    how they jump to the internal hosts.
    """
    key = source.value if isinstance(source, Tier) else source
    if target not in _MAY_REACH.get(key, frozenset()):
        return False
    if key == INTERNET:
        return port is None or port in WEB_PORTS
    if key == ADMIN and target is Tier.EDGE or key == BASTION:
        return port is None or port == SSH_PORT
    return True


def is_world(cidr: str) -> bool:
    """True for a CIDR that is effectively the whole internet (/0 or any /1-/7 block)."""
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen < 8
    except ValueError:
        return False


@dataclass(frozen=True)
class InboundRule:
    """One allowed inbound flow to a host: a port (or range) from a set of sources."""

    port: int | tuple[int, int]
    protocol: str = "tcp"
    cidrs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    reason: str = ""

    @property
    def port_range(self) -> str:
        if isinstance(self.port, tuple):
            return f"{self.port[0]}-{self.port[1]}"
        return str(self.port)


@dataclass(frozen=True)
class HostRole:
    """What a host runs, so its inbound rules can be derived.

    ``service_ports`` are opened to ``peer_cidrs``/``peer_tags`` (the tiers allowed to call it);
    edge hosts also get 80/443 from the world; every host gets SSH from ``ssh_cidrs`` only.
    """

    tier: Tier
    ssh_cidrs: tuple[str, ...]
    service_ports: tuple[int, ...] = ()
    peer_cidrs: tuple[str, ...] = ()
    peer_tags: tuple[str, ...] = ()
    metrics_cidrs: tuple[str, ...] = ()
    metrics_ports: tuple[int, ...] = (NODE_EXPORTER_PORT,)
    rules_beyond_tier: tuple[InboundRule, ...] = field(default_factory=tuple)
    """Allow-rules this host needs outside its tier's (each with its reason), such as the edge
    proxy's port for the internal nodes."""


def inbound_rules(role: HostRole) -> list[InboundRule]:
    """Inbound allow-rules for a host; everything else is denied by default."""
    if not role.ssh_cidrs:
        raise ValueError("a host needs at least one SSH source (admin CIDRs or a bastion)")
    for cidr in role.ssh_cidrs + role.metrics_cidrs:
        if is_world(cidr):
            raise ValueError(f"SSH and metrics are never open to the world, got {cidr}")
    rules: list[InboundRule] = []
    if role.tier is Tier.EDGE:
        rules += [InboundRule(port, cidrs=WORLD_CIDRS, reason="public web") for port in WEB_PORTS]
    rules.append(InboundRule(SSH_PORT, cidrs=tuple(role.ssh_cidrs), reason="ssh from mgmt"))
    if role.metrics_cidrs:
        rules += [InboundRule(port, cidrs=tuple(role.metrics_cidrs), reason="metrics from monitoring")
                  for port in role.metrics_ports]
    has_peers = bool(role.peer_cidrs or role.peer_tags)
    if role.service_ports and not has_peers:
        raise ValueError(f"{role.tier.value} service ports need their allowed peers")
    if any(is_world(cidr) for cidr in role.peer_cidrs):
        raise ValueError(f"{role.tier.value} service ports are never open to the world")
    rules += [InboundRule(port, cidrs=tuple(role.peer_cidrs), tags=tuple(role.peer_tags),
                          reason=f"{role.tier.value} service") for port in role.service_ports]
    rules += list(role.rules_beyond_tier)
    return rules


def digitalocean_inbound(rules: Iterable[InboundRule]) -> list[dict]:
    """``digitalocean.FirewallInboundRuleArgs`` keyword arguments for each rule."""
    out = []
    for rule in rules:
        args: dict = {"protocol": rule.protocol, "port_range": rule.port_range}
        if rule.cidrs:
            args["source_addresses"] = list(rule.cidrs)
        if rule.tags:
            args["source_tags"] = list(rule.tags)
        out.append(args)
    return out


# Outbound: DigitalOcean Firewalls filter by address, not hostname, so the provider allow-list
# (payments, email, R2) is enforced per service in application config; the host may make
# outbound TCP connections, DNS and NTP. Without outbound rules DO blocks all egress.
DIGITALOCEAN_OUTBOUND: list[dict] = [
    {"protocol": "tcp", "port_range": "1-65535", "destination_addresses": list(WORLD_CIDRS)},
    {"protocol": "udp", "port_range": "53", "destination_addresses": list(WORLD_CIDRS)},
    {"protocol": "udp", "port_range": "123", "destination_addresses": list(WORLD_CIDRS)},
    {"protocol": "icmp", "destination_addresses": list(WORLD_CIDRS)},
]


def check_trusted_source(kind: str, value: object, tier: Tier) -> None:
    """A database client must be of a known kind, in a tier that may reach data, and never the
    world (an output value is checked by the policy pack once it is known)."""
    if kind not in {"droplet", "app", "tag", "ip_addr", "k8s"}:
        raise ValueError(f"unknown trusted source type {kind}")
    if not may_reach(tier, Tier.DATA):
        raise ValueError(f"the {tier.value} tier may not reach the data tier")
    if kind == "ip_addr" and isinstance(value, str) and is_world(value):
        raise ValueError("a database is never open to the world")


def container_bind_address(tier: Tier, private_address: str | None = None) -> str:
    """Where a container's published port listens. Docker-published ports bypass UFW, so only
    edge containers listen on all interfaces; the others on loopback or the private interface."""
    if tier is Tier.EDGE:
        return "0.0.0.0"
    return private_address or "127.0.0.1"
