"""Pencom's mutual TLS between hosts, as planned and as captured: every cross-host service call
goes through the terminator's TLS ports with a client certificate, each allow-list holds only
the callers the tier model (narrowed by ``callers``) allows, and the tier rules admit the TLS
ports only. The real nginx run is ``tests/test_mtls_real.py``."""

from __future__ import annotations

import dataclasses
import ipaddress
from urllib.parse import urlsplit

import crossplane
import pytest
import yaml

from components import monitoring, mtls, tiers
from components.backupscripts import TEXTFILE_DIR
from stacks.pencom.config import PencomConfig
from stacks.pencom.mtls import (METRICS_CALLER, MTLS_PORT_OFFSET, TERMINATOR, allowed_callers, identity,
                                mtls_plan, sidecar_name)
from stacks.pencom.network import node_rules
from stacks.pencom.plan import service_urls
from synth.engine import PROJECT_ROOT
from synth.state import State
from tests.conftest import synth_once
from tests.test_pencom import _pencom_only

pytestmark = pytest.mark.fast

CONTAINER, COMMAND = "docker:index/container:Container", "command:remote:Command"


def _config(stack: str, **update) -> PencomConfig:
    raw = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["platform:pencom"]
    return PencomConfig.model_validate(raw).model_copy(update=update)


@pytest.fixture(scope="module", params=["staging", "prod"])
def captured(request):
    stack = request.param
    return stack, State(synth_once(stack, document=_pencom_only(stack), reveal_secrets=True))


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_allow_list_holds_exactly_the_allowed_callers(stack):
    cfg = _config(stack)
    name = f"pencom-{stack}"
    plan = mtls_plan(cfg, name)
    edge = [s.name for s in cfg.edge_services]
    assert [s.name for s in plan.services] == [s.name for s in cfg.app_services]
    for service in plan.services:
        # The tier model: edge reaches app; no app, data or mgmt container is a full caller.
        assert service.callers == tuple(identity(name, c) for c in edge), service
        assert service.metrics_callers == ((identity(name, METRICS_CALLER),)
                                           if service.name in cfg.monitoring.metrics_services else ())
        assert service.listen_port == next(s.port for s in cfg.app_services if s.name == service.name) \
            + MTLS_PORT_OFFSET
    # One sidecar per calling identity, each with a route to exactly the services that admit it.
    by_caller = {s.caller: s for s in plan.sidecars}
    assert sorted(by_caller) == sorted([*edge, METRICS_CALLER])
    for caller, sidecar in by_caller.items():
        assert sidecar.identity == identity(name, caller)
        admitted = {s.name for s in plan.services if sidecar.identity in (*s.callers, *s.metrics_callers)}
        assert {r.name for r in sidecar.routes} == admitted
        for route in sidecar.routes:
            assert route.target == f"{cfg.nodes.app.private_address}:{route.listen_port + MTLS_PORT_OFFSET}"
            assert route.server_name == plan.server_name


def test_callers_narrow_the_allow_list_and_the_urls():
    cfg = _config("staging", callers={"payments": ["api-gateway"], "audit": []})
    assert allowed_callers(cfg)["payments"] == ("api-gateway",) and allowed_callers(cfg)["audit"] == ()
    assert allowed_callers(cfg)["core"] == ("api-gateway", "external-gateway")
    plan = mtls_plan(cfg, "pencom-staging")
    services = {s.name: s for s in plan.services}
    assert services["payments"].callers == (identity("pencom-staging", "api-gateway"),)
    # Nobody calls audit, but it still gets a TLS port (every caller gets 403), never a plain one.
    assert services["audit"].callers == () and services["audit"].listen_port == 19000
    assert "PAYMENTS_SERVICE_URL" not in service_urls(cfg, "external-gateway")
    assert "AUDIT_SERVICE_URL" not in service_urls(cfg, "api-gateway")
    assert service_urls(cfg, "api-gateway")["PAYMENTS_SERVICE_URL"] == "http://api-gateway-mtls:5000"
    conf = mtls.render_terminator_conf(plan.services)
    payments = conf.split("map $mtls_caller $mtls_allow_payments {", 1)[1].split("}", 1)[0]
    assert '"api-gateway.pencom-staging.internal" full;' in payments
    assert "external-gateway" not in payments


def test_the_app_node_admits_the_tls_ports_only_for_service_traffic():
    for stack in ("staging", "prod"):
        cfg = _config(stack)
        plan = mtls_plan(cfg, f"pencom-{stack}")
        rules = node_rules(cfg, ("198.51.100.0/24",))["app"]
        service_rules = {r.port: set(r.cidrs) for r in rules if r.reason == "app service"}
        assert sorted(service_rules) == sorted(plan.ports)
        edge = f"{cfg.nodes.edge.private_address}/32"
        assert all(edge in cidrs for cidrs in service_rules.values())
        plain = {s.port for s in cfg.app_services}
        assert not plain & {r.port for r in rules}, "no app service's own port is open to another host"
        assert {r.port for r in rules} == set(plan.ports) | {tiers.SSH_PORT, monitoring.NODE_EXPORTER_PORT,
                                                             monitoring.CADVISOR_PORT}


def _conf_of(state: State, name: str, node: str, service: str) -> str:
    script = state.named(f"{name}-{node}-files-{service}", COMMAND)["inputs"]["stdin"]
    return script.split(f"{mtls.CONF_PATH} 0444 root:root <<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1] \
        .split("PLATFORM_EOF", 1)[0]


def test_every_cross_host_service_call_goes_through_mutual_tls(captured):
    stack, state = captured
    name = f"pencom-{stack}"
    cfg = _config(stack)
    addresses = {n: ipaddress.ip_address(getattr(cfg.nodes, n).private_address)
                 for n in ("edge", "app", "data", "storage")}
    containers = [c for c in state.of_type(CONTAINER) if c["name"].startswith(name)]
    app_ports = {s.port for s in cfg.app_services}
    for container in containers:
        node = container["name"].split("-")[2]
        # Nothing on the app node publishes a plain service port; the terminator publishes the TLS ones.
        for port in container["inputs"].get("ports", []) if node == "app" else []:
            assert port["external"] not in app_ports, container["name"]
            if port["external"] not in (monitoring.NODE_EXPORTER_PORT, monitoring.CADVISOR_PORT):
                assert container["name"] == f"{name}-app-{TERMINATOR}", container["name"]
        # No service URL names another node: a caller's URL is its sidecar on its own network.
        for env in container["inputs"].get("envs", []):
            key, _, value = env.partition("=")
            if key.endswith("_SERVICE_URL"):
                url = urlsplit(value)
                assert url.scheme == "http" and url.hostname == sidecar_name(container["name"].split("-edge-")[1]), env
            elif value.startswith("http://") and not key.endswith("_PROXY"):
                host = urlsplit(value).hostname
                assert host not in {str(a) for a in addresses.values()}, env
    # Every sidecar forwards over TLS with its client certificate, verifying the terminator.
    plan = mtls_plan(cfg, name)
    for sidecar in plan.sidecars:
        conf = _conf_of(state, name, "edge", sidecar.name)
        assert conf == mtls.render_caller_conf(sidecar.routes)
        for route in sidecar.routes:
            block = conf.split(f"listen {route.listen_port};", 1)[1].split("  }\n", 1)[0]
            assert f"proxy_pass https://{route.target};" in block
            assert "proxy_ssl_certificate /etc/nginx/mtls/tls/tls.crt;" in block
            assert "proxy_ssl_verify on;" in block and f"proxy_ssl_name {plan.server_name};" in block
    terminator = _conf_of(state, name, "app", TERMINATOR)
    assert terminator == mtls.render_terminator_conf(plan.services)
    assert "  ssl_verify_client on;\n" in terminator and "  ssl_verify_depth 1;\n" in terminator


def test_certificates_are_issued_per_caller_for_client_auth_only(captured):
    stack, state = captured
    name = f"pencom-{stack}"
    plan = mtls_plan(_config(stack), name)
    for sidecar in plan.sidecars:
        csr = state.named(f"{name}-ca-client-{sidecar.caller}-csr", "tls:index/certRequest:CertRequest")
        assert csr["inputs"]["subject"]["commonName"] == sidecar.identity
        assert csr["inputs"]["dnsNames"] == [sidecar.identity]
        cert = state.named(f"{name}-ca-client-{sidecar.caller}-cert", "tls:index/locallySignedCert:LocallySignedCert")
        assert cert["inputs"]["allowedUses"] == ["digital_signature", "client_auth"]
    server = state.named(f"{name}-ca-mtls-cert", "tls:index/locallySignedCert:LocallySignedCert")
    assert "client_auth" not in server["inputs"]["allowedUses"]
    # Rotation: the leaves are re-issued 30 days before they expire; their delivery checks the
    # config in the container, reloads nginx, and reports each certificate's expiry for the alert.
    assert server["inputs"]["earlyRenewalHours"] == 30 * 24
    for node, service in (("app", TERMINATOR), *(("edge", s.name) for s in plan.sidecars)):
        for kind in ("files", "secrets"):
            script = state.named(f"{name}-{node}-{kind}-{service}", COMMAND)["inputs"]["stdin"]
            assert "docker exec \"$cid\" nginx -t -q -c /etc/nginx/mtls/nginx.conf" in script
            assert "docker kill -s HUP \"$cid\"" in script
        # A leaf travels with its key: delivered apart, the first half fails `nginx -t` against the other.
        # The CA beside them in tls/ goes with them too (components.service_files.delivery_groups),
        # and that delivery reports the certificates' expiry.
        files = state.named(f"{name}-{node}-files-{service}", COMMAND)["inputs"]["stdin"]
        secrets = state.named(f"{name}-{node}-secrets-{service}", COMMAND)["inputs"]["stdin"]
        assert "/tls/ca.crt 0" not in files and "/tls/tls.crt 0" not in files and "/tls/tls.key 0" not in files
        assert "/tls/ca.crt 0444" in secrets and "/tls/tls.crt 0" in secrets and "/tls/tls.key 0" in secrets
        assert f"certificate_metrics {TEXTFILE_DIR}/certificates-{name}-{node}-secrets-{service}.prom" in secrets


def test_the_terminator_config_parses_and_admits_each_caller_where_allowed():
    plan = mtls_plan(_config("prod"), "pencom-prod")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nginx.conf"
        path.write_text(mtls.render_terminator_conf(plan.services))
        parsed = crossplane.parse(str(path), single=True)
    assert parsed["status"] == "ok", parsed["errors"]
    http = next(d["block"] for d in parsed["config"][0]["parsed"] if d["directive"] == "http")
    servers = [d["block"] for d in http if d["directive"] == "server"]
    listens = sorted(int(s[0]["args"][0]) for s in servers if s[0]["args"][-1] == "ssl")
    assert listens == sorted(plan.ports)


@pytest.mark.parametrize("services,message", [
    ((), "terminator: no services"),
    ((mtls.TerminatedService("a", 14000, "a:4000", ("x.internal",)),
      mtls.TerminatedService("a", 15000, "a:5000", ("x.internal",))), "services named twice: \\['a'\\]"),
    ((mtls.TerminatedService("a", 14000, "a:4000", ("x.internal",)),
      mtls.TerminatedService("b", 14000, "b:5000", ("x.internal",))), "ports listened on twice: \\[14000\\]"),
    ((mtls.TerminatedService("a", 14000, "a:4000", ('x"; } default full; {',)),),
     "identities must be lower-case DNS names"),
])
def test_the_terminator_renderer_refuses_what_nginx_would_misread(services, message):
    with pytest.raises(ValueError, match=message):
        mtls.render_terminator_conf(services)


def test_the_caller_renderer_refuses_a_port_twice():
    route = mtls.CallerRoute("a", 4000, "10.0.0.2:14000", "mtls.x.internal")
    with pytest.raises(ValueError, match="ports listened on twice"):
        mtls.render_caller_conf([route, dataclasses.replace(route, name="b")])
