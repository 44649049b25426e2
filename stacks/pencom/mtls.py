"""Pencom's mutual TLS between hosts (issue #22, part 1), as plain values.

The cross-host service calls are the edge node's: its services (api-gateway,
external-gateway) call the app node's services, and its Prometheus scrapes their metrics. The
app services call each other on the app node's own container network, which never leaves the
host. Every cross-host call goes through mutual TLS:

- on the app node, the terminator (``mtls-gateway``, nginx) publishes one TLS port per app
  service (``service port + MTLS_PORT_OFFSET``) on the node's private address, verifies the
  caller's certificate against the internal CA and its identity against the service's
  allow-list, and forwards to the service by its alias. The app services publish nothing.
- on the edge node, each calling identity has its own sidecar (``<caller>-mtls``, nginx) with
  its own client certificate: the caller sends plain HTTP to ``http://<caller>-mtls:<service
  port>`` on the edge's container network, and the sidecar forwards it over mutual TLS.

Who may call what comes from the tier model (edge reaches app), narrowed by ``callers`` in the
config; Prometheus (mgmt tier: metrics only) may reach ``/metrics`` of the services it scrapes,
nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from components import mtls
from components.containers import ContainerSpec, HealthCheck, PublishedPort
from components.ingress import NGINX_UID
from components.tiers import Tier
from stacks.pencom.config import PencomConfig

MTLS_PORT_OFFSET = 10000
"""An app service's TLS port on the app node is its own port plus this (core 4000 -> 14000)."""
TERMINATOR = "mtls-gateway"
METRICS_CALLER = "prometheus"
"""The identity of the edge's Prometheus, the only metrics-only caller."""
SIDECAR_SUFFIX = "-mtls"


def mtls_port(port: int) -> int:
    """The TLS port of an app service listening on ``port``."""
    return port + MTLS_PORT_OFFSET


def sidecar_name(caller: str) -> str:
    """The container of ``caller``'s sidecar on the edge node (also its alias)."""
    return f"{caller}{SIDECAR_SUFFIX}"


def identity(name: str, caller: str) -> str:
    """The CN (and only DNS name) of ``caller``'s client certificate in product ``name``."""
    return f"{caller}.{name}.internal"


def server_name(name: str) -> str:
    """The name on the terminator's certificate, which every sidecar verifies."""
    return f"mtls.{name}.internal"


def allowed_callers(cfg: PencomConfig) -> dict[str, tuple[str, ...]]:
    """App service -> the edge services that may call it, in ``edge_services`` order: the
    service's ``callers`` entry, else every edge service (the tier model: edge reaches app)."""
    edge = [s.name for s in cfg.edge_services]
    return {s.name: tuple(c for c in edge if c in cfg.callers.get(s.name, edge)) for s in cfg.app_services}


def callees(cfg: PencomConfig) -> dict[str, tuple[str, ...]]:
    """Edge service -> the app services it may call (the inverse of ``allowed_callers``)."""
    allowed = allowed_callers(cfg)
    return {e.name: tuple(s for s, callers in allowed.items() if e.name in callers) for e in cfg.edge_services}


def metrics_callees(cfg: PencomConfig) -> tuple[str, ...]:
    """The app services whose ``/metrics`` the edge's Prometheus scrapes through its sidecar."""
    return tuple(s.name for s in cfg.app_services if s.name in cfg.monitoring.metrics_services)


@dataclass(frozen=True)
class Sidecar:
    """One calling identity's sidecar on the edge node: ``caller`` (an edge service or
    Prometheus), its certificate's ``identity`` and one route per service it may call."""

    caller: str
    identity: str
    routes: tuple[mtls.CallerRoute, ...]

    @property
    def name(self) -> str:
        return sidecar_name(self.caller)


@dataclass(frozen=True)
class MtlsPlan:
    """The terminator on the app node (``address``, its certificate's ``server_name``, one
    ``TerminatedService`` per app service) and the edge's sidecars (callers with no route
    have none)."""

    server_name: str
    address: str
    services: tuple[mtls.TerminatedService, ...]
    sidecars: tuple[Sidecar, ...]

    @property
    def ports(self) -> tuple[int, ...]:
        """The terminator's TLS ports: the only app-node service ports another host reaches."""
        return tuple(s.listen_port for s in self.services)

    def url(self, caller: str, service: str, port: int) -> str:
        """What ``caller`` puts in its URL to reach ``service`` (plain HTTP to its sidecar)."""
        return f"http://{sidecar_name(caller)}:{port}"


def mtls_plan(cfg: PencomConfig, name: str) -> MtlsPlan:
    """The mutual-TLS plan of product ``name`` (``pencom-<stack>``). Every app service gets a
    TLS port, even one nobody calls (its allow-list is then empty and every caller gets 403),
    so the app node never publishes a plain service port."""
    allowed, metrics = allowed_callers(cfg), set(metrics_callees(cfg))
    address, sni = cfg.nodes.app.private_address, server_name(name)
    services = tuple(mtls.TerminatedService(
        name=s.name, listen_port=mtls_port(s.port), upstream=f"{s.name}:{s.port}",
        callers=tuple(identity(name, c) for c in allowed[s.name]),
        metrics_callers=(identity(name, METRICS_CALLER),) if s.name in metrics else ())
        for s in cfg.app_services)
    ports = {s.name: s.port for s in cfg.app_services}
    wanted = {**callees(cfg), METRICS_CALLER: tuple(sorted(metrics, key=list(ports).index))}
    sidecars = tuple(Sidecar(caller=caller, identity=identity(name, caller), routes=tuple(
        mtls.CallerRoute(name=s, listen_port=ports[s], target=f"{address}:{mtls_port(ports[s])}", server_name=sni)
        for s in targets)) for caller, targets in wanted.items() if targets)
    return MtlsPlan(server_name=sni, address=address, services=services, sidecars=sidecars)


def mtls_spec(name: str, image: str, publish: list[PublishedPort] | None = None) -> ContainerSpec:
    """The container of the terminator (``publish``: its TLS ports, on the app node's private
    address) or of a sidecar (nothing published): a non-root nginx on a read-only root, its
    config and certificates in ``components.mtls.CONF_DIR`` (delivered with a reload)."""
    return ContainerSpec(
        name=name, image=image, tier=Tier.APP if publish else Tier.EDGE, publish=publish or [],
        memory_mb=64, memory_reservation_mb=32, cpus=0.25, user=f"{NGINX_UID}:{NGINX_UID}", read_only_root=True,
        healthcheck=HealthCheck(command=["wget", "-q", "-O", "/dev/null", f"http://{mtls.HEALTH_LISTEN}/healthz"]),
        command=["nginx", "-c", mtls.CONF_PATH, "-g", "daemon off;"])
