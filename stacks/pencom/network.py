"""Pencom's network plan: each node's tier role and firewall rules, what its containers may
reach (egress locks, the peers on the internal network) and the flows it may never open, as
plain values from the config and the edge's SSH sources (the management network, and the
admin CIDRs only under break-glass: ``stacks.management.ssh_sources``). ``plan`` carries the result per node;
``provision`` hands it to ``OnPremVps``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components import egress, hostsetup, monitoring, tiers
from stacks.pencom.config import PORTS, PROXY_SERVICE, PencomConfig
from stacks.pencom.mtls import mtls_port

INTERNAL_NODES = ("app", "data", "storage")
EDGE_EXEMPT = (PROXY_SERVICE, "alertmanager", "blackbox")
"""The edge node's containers that reach the internet directly: the proxy for everyone, mail
and Slack for alerts, probes of the public hostnames. The others go through the proxy."""


def host_cidr(address: str) -> str:
    return f"{address}/32"


def proxy_routes(cfg: PencomConfig) -> list[egress.ProxyRoute]:
    routes = [egress.ProxyRoute(name=r.name, domains=tuple(r.domains), clients=tuple(r.services))
              for r in cfg.egress.https]
    routes.append(egress.ProxyRoute(name="nodes", domains=tuple(cfg.egress.host_domains),
                                    clients=(egress.HOST_ROUTE,)))
    return routes


@dataclass(frozen=True)
class NodeNetwork:
    """One node's network settings: its tier ``role``, the inbound rules beyond the tier model
    (``extra_rules``: the read waivers), its containers' ``egress`` lock and the outbound flows
    its host may never open (``denied_outbound``)."""

    role: tiers.HostRole
    extra_rules: tuple[tiers.InboundRule, ...]
    egress: egress.EgressLock
    denied_outbound: tuple[hostsetup.OutboundRule, ...]


def session_peer_name(name: str) -> str:
    """The name the session collector's certificate carries, which the nodes check."""
    return f"sessions.{name}.internal"


def direct_routes_denied(cfg: PencomConfig) -> tuple[hostsetup.OutboundRule, ...]:
    """The direct routes (Oracle ECRS) as flows a node other than the app node may never open:
    only the app node's services use them (through its containers' egress lock), and the edge
    host's own egress is otherwise open (it runs the proxy and certbot)."""
    return tuple(hostsetup.OutboundRule(c, r.port, "tcp", f"{r.name} is the app node's")
                 for r in cfg.egress.direct for c in r.cidrs)


def node_roles(cfg: PencomConfig, admin_cidrs: tuple[str, ...]
               ) -> dict[str, tuple[tiers.HostRole, list[tiers.InboundRule]]]:
    """Each node's tier role and its rules beyond the tier model (the read waivers), computed
    once so the UFW rules and the containers' egress to the peers agree."""
    n = cfg.nodes
    ports = egress.proxy_ports(proxy_routes(cfg))
    internal_nodes = [n.app.private_address, n.data.private_address, n.storage.private_address]
    # Internal nodes' own traffic (apt, image pulls, backups) leaves through the proxy port of
    # "hosts"; each app service has its own port.
    proxy_rule = tiers.InboundRule(
        (min(ports.values()), max(ports.values())), cidrs=tuple(host_cidr(a) for a in internal_nodes),
        reason="egress proxy")
    bastion_only = (host_cidr(n.edge.private_address),)
    # The monitoring stack runs on the edge node (mgmt tier): it alone reaches the exporters.
    metrics = {"metrics_cidrs": bastion_only,
               "metrics_ports": (monitoring.NODE_EXPORTER_PORT, monitoring.CADVISOR_PORT)}
    waiver_rules = [tiers.InboundRule(PORTS["postgres"], cidrs=(host_cidr(n.edge.private_address),),
                                      reason=f"{w.service} reads {w.database}") for w in cfg.read_waivers]
    return {
        # The session collector (rsyslog over TLS) takes the internal nodes' hosts' records.
        "edge": (tiers.HostRole(tier=tiers.Tier.EDGE, ssh_cidrs=tuple(admin_cidrs),
                                rules_beyond_tier=(proxy_rule, tiers.InboundRule(
                                    hostsetup.SESSION_LOG_PORT, cidrs=tuple(host_cidr(a) for a in internal_nodes),
                                    reason="session logs"))), []),
        "app": (tiers.HostRole(
            tier=tiers.Tier.APP, ssh_cidrs=bastion_only, **metrics,
            # Only the mutual-TLS terminator's ports: the services themselves publish nothing.
            service_ports=tuple(mtls_port(s.port) for s in cfg.app_services),
            peer_cidrs=(host_cidr(n.edge.private_address), host_cidr(n.app.private_address))), []),
        "data": (tiers.HostRole(
            tier=tiers.Tier.DATA, ssh_cidrs=bastion_only, **metrics,
            service_ports=(PORTS["postgres"], PORTS["mongodb"], PORTS["redis"]),
            peer_cidrs=(host_cidr(n.app.private_address),)), waiver_rules),
        "storage": (tiers.HostRole(
            tier=tiers.Tier.DATA, ssh_cidrs=bastion_only, **metrics, service_ports=(PORTS["minio"],),
            peer_cidrs=(host_cidr(n.app.private_address),)), []),
    }


def node_rules(cfg: PencomConfig, admin_cidrs: tuple[str, ...]) -> dict[str, list[tiers.InboundRule]]:
    """Each node's inbound rules (UFW), from the tier model plus the named waivers."""
    return {node: tiers.inbound_rules(role) + extra for node, (role, extra) in node_roles(cfg, admin_cidrs).items()}


def container_peers(cfg: PencomConfig, node: str, admin_cidrs: tuple[str, ...]
                    ) -> tuple[tuple[str, int | tuple[int, int]], ...]:
    """(address/32, port or range) that ``node``'s containers may open on the internal network:
    every other node's inbound rule that admits ``node``'s private address (the containers'
    traffic is masqueraded to it), except SSH, which only the operator's jumps through the
    bastion use, and the session collector, which only the hosts' rsyslog uses. Sorted, so the
    rules file is stable."""
    source = ipaddress.ip_address(getattr(cfg.nodes, node).private_address)
    pairs = set()
    for other, rules in node_rules(cfg, admin_cidrs).items():
        if other == node:
            continue
        target = host_cidr(getattr(cfg.nodes, other).private_address)
        for rule in rules:
            if rule.port in (tiers.SSH_PORT, hostsetup.SESSION_LOG_PORT) or rule.protocol != "tcp":
                continue
            if any(source.version == ipaddress.ip_network(c, strict=False).version
                   and source in ipaddress.ip_network(c, strict=False) for c in rule.cidrs):
                pairs.add((target, rule.port))
    return tuple(sorted(pairs, key=lambda p: (p[0], p[1] if isinstance(p[1], tuple) else (p[1], p[1]))))


def edge_egress(cfg: PencomConfig, admin_cidrs: tuple[str, ...]) -> egress.EgressLock:
    """The edge host keeps open egress (it runs the proxy, certbot, apt); its containers do not.
    On the internal network they reach only what the other nodes admit from the edge's address
    (``container_peers``), never SSH: the edge is the bastion, and its containers leave
    masqueraded to its address."""
    base = ipaddress.ip_network(cfg.egress.edge_subnet).network_address  # arithmetic, never .hosts()
    return egress.EgressLock(bridge="pencom-edge", internal_cidr=cfg.internal_cidr, subnet=cfg.egress.edge_subnet,
                             exempt=tuple((c, str(base + 10 + i)) for i, c in enumerate(EDGE_EXEMPT)),
                             internal_peers=container_peers(cfg, "edge", admin_cidrs))


def node_networks(cfg: PencomConfig, admin_cidrs: tuple[str, ...]) -> dict[str, NodeNetwork]:
    """Every node's ``NodeNetwork``. The internal nodes' containers reach the internal network
    (their peers' admitted ports), their resolvers, and the web through the edge's proxy; only
    the app node's reach the direct routes, which the other nodes' hosts may never open."""
    n = cfg.nodes
    roles = node_roles(cfg, admin_cidrs)
    ports = egress.proxy_ports(proxy_routes(cfg))
    direct = tuple(egress.DirectRoute(name=r.name, cidrs=tuple(r.cidrs), port=r.port, clients=tuple(r.services))
                   for r in cfg.egress.direct)
    denied = direct_routes_denied(cfg)
    out = {"edge": NodeNetwork(roles["edge"][0], tuple(roles["edge"][1]), edge_egress(cfg, admin_cidrs), denied)}
    for node in INTERNAL_NODES:
        role, extra = roles[node]
        lock = egress.EgressLock(
            bridge=f"pencom-{node}", internal_cidr=cfg.internal_cidr, resolvers=tuple(cfg.egress.resolvers),
            proxy_url=f"http://{n.edge.private_address}:{ports[egress.HOST_ROUTE]}",
            direct=direct if node == "app" else (), internal_peers=container_peers(cfg, node, admin_cidrs),
            subnet=getattr(cfg.egress.node_subnets, node))
        out[node] = NodeNetwork(role, tuple(extra), lock, () if node == "app" else denied)
    return out
