"""Pencom's port rules: each node's published address:port once, sshd on a free port, and the
datastores on the ports the program sets; each finding naming its key path."""

from __future__ import annotations

from typing import Iterator

from components import monitoring, tiers
from stacks.collisions import duplicates
from stacks.pencom.config import PORTS, PencomConfig
from stacks.pencom.mtls import MTLS_PORT_OFFSET, mtls_port
from validation.rules import Finding, RuleContext, each, rule, whole


@rule(PencomConfig)
def _published(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Each node's published address:port once: the app services' mutual-TLS ports (their own
    plus ``MTLS_PORT_OFFSET``, below 65536) on the app node's private address with
    node-exporter and cAdvisor, and sshd on every node; and each service port once."""
    app_address = cfg.nodes.app.private_address
    program = {cfg.nodes.app.ssh_port: "sshd", monitoring.NODE_EXPORTER_PORT: "node-exporter",
               monitoring.CADVISOR_PORT: "cadvisor"}
    own = [(("app_services", i, "port"), s.port) for i, s in each(cfg.app_services) if s.port]
    for loc, port in own:
        tls_port = mtls_port(port)
        if tls_port > 65535:
            yield Finding(loc, f"{port} would be served over mutual TLS on {tls_port} (port + {MTLS_PORT_OFFSET}), "
                               f"which is no port; choose a port up to {65535 - MTLS_PORT_OFFSET}")
        elif tls_port in program:
            yield Finding(loc, f"its mutual-TLS port {app_address}:{tls_port} (port + {MTLS_PORT_OFFSET}) is "
                               f"already published by {program[tls_port]} on the app node; choose another port")
    yield from duplicates([(loc, (app_address, mtls_port(port))) for loc, port in own],
                          "published address:port", ctx.where)


@rule(PencomConfig)
def _ssh_ports(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """Every node's ssh_port is free on that node: not a port its firewall opens to a service
    (the edge's 80/443 and proxy ports, the datastores, MinIO) nor an exporter's."""
    from stacks.pencom.network import node_rules  # network imports this package's config only

    whole(cfg.app_services, cfg.read_waivers, cfg.egress.https)
    if any(s.port is None for s in cfg.app_services):
        return  # `_tiers` reports the missing port; the node's rules need every one
    rules = node_rules(cfg, ("192.0.2.1/32",))  # the ports do not depend on the admin sources
    exporters = {monitoring.NODE_EXPORTER_PORT: "node-exporter", monitoring.CADVISOR_PORT: "cadvisor"}
    for node in ("edge", "app", "data", "storage"):
        port = getattr(cfg.nodes, node).ssh_port
        used = dict(exporters)
        for r in rules[node]:
            low, high = r.port if isinstance(r.port, tuple) else (r.port, r.port)
            if r.port != tiers.SSH_PORT and low <= port <= high:
                used[port] = r.reason or f"the {node} node's {r.port_range}/{r.protocol} rule"
        if port in used:
            yield Finding(("nodes", node, "ssh_port"), f"port {port} is used on the {node} node by "
                          f"{used[port]}; choose a free port for sshd (22, or e.g. 2222)")


@rule(PencomConfig)
def _datastore_ports(cfg: PencomConfig, ctx: RuleContext) -> Iterator[Finding]:
    """The datastores listen where the program puts them (``PORTS``): the firewall, the TLS
    setup and every connection URL use those ports, so another value would be ignored."""
    for name, port in PORTS.items():
        spec = getattr(cfg, name)
        if spec.port is not None and spec.port != port:
            yield Finding((name, "port"), f"is {spec.port}, but the program sets the {name} port to "
                          f"{port} (firewall, TLS and connection URLs); write {port} or remove it")
