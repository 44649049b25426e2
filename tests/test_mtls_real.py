"""Pencom's mutual TLS between hosts, run by real nginx and real UFW in network namespaces this
test creates: an "app" namespace (10.41.0.12, the staging app node's address) with the
terminator the program renders, the app node's rendered UFW rules and a plain-HTTP stand-in
for the services; an "edge" namespace (10.41.0.11) with api-gateway's sidecar as rendered,
from which every probe is sent, as the edge node's containers would (their traffic leaves
masqueraded to the edge's address).

The configs are the program's own (``components.mtls`` on ``stacks.pencom.mtls``'s plan of the
committed staging config, with ``callers`` narrowed so payments admits api-gateway only);
what differs is what a test must change: file paths under a temporary directory, the pid and
logs, ``user root;`` (pytest's private temp directory), and each service's upstream, the
stand-in on the namespace's loopback instead of the container alias. The certificates are
made with ``cryptography`` in the shapes ``components.internal_ca`` asks pulumi-tls for (ECDSA
P-256; ``client_auth`` only for callers, ``server_auth`` for servers), and a foreign CA.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components import hostsetup, mtls
from stacks.pencom.config import PencomConfig
from stacks.pencom.mtls import METRICS_CALLER, identity, mtls_plan
from stacks.pencom.network import node_rules
from tests.conftest import PROJECT_ROOT, require_root, require_tool
from tests.isolation import apply_ufw, ip
from tests.realtools import nginx_binary, stop_all

pytestmark = pytest.mark.realtool

NAME = "pencom-staging"
APP, EDGE = "10.41.0.12", "10.41.0.11"


def _config() -> PencomConfig:
    raw = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())["config"]["platform:pencom"]
    cfg = PencomConfig.model_validate(raw)
    assert (cfg.nodes.app.private_address, cfg.nodes.edge.private_address) == (APP, EDGE)
    return cfg.model_copy(update={"callers": {"payments": ["api-gateway"]}})


# --- certificates ----------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "platform"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, stem: str, key, cert) -> tuple[Path, Path]:
    crt, pem = directory / f"{stem}.crt", directory / f"{stem}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca, cn: str, usage, ips=()):
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName(cn), *(x509.IPAddress(ipaddress.ip_address(a)) for a in ips)]
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


# --- the namespaces ----------------------------------------------------------------------------

BACKEND = textwrap.dedent("""
    import http.server, socketserver, sys, threading
    log = open(sys.argv[1], "a", buffering=1)
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            log.write(f"{port} {self.path}\\n")
            # Every header a framework would read as X-Platform-Caller (WSGI and CGI fold case
            # and "_" into one HTTP_X_PLATFORM_CALLER), each value: a forged one shows.
            callers = [v for k, v in self.headers.items() if k.lower().replace("_", "-") == "x-platform-caller"]
            body = f"{port} {','.join(callers) or '-'} {self.path}".encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
    for port in map(int, sys.argv[2:]):
        threading.Thread(target=Server(("0.0.0.0", port), Handler).serve_forever, daemon=True).start()
    threading.Event().wait()
""")


def _exec(ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


def _wait(ns: str, address: str, port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
    deadline = time.monotonic() + timeout
    while _exec(ns, sys.executable, "-c", probe).returncode != 0:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {address}:{port} in {ns}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_root("network namespaces, UFW")
    for tool, package in (("ip", "iproute2"), ("curl", "curl"), ("ufw", "ufw"), ("unshare", "util-linux")):
        require_tool(tool, f"Debian package {package}")
    binary = nginx_binary()
    cfg = _config()
    plan = mtls_plan(cfg, NAME)
    work = tmp_path_factory.mktemp("mtls")
    certs = work / "certs"
    certs.mkdir()
    ca, foreign = _ca(f"{NAME} internal CA"), _ca("someone else's CA")
    (certs / "ca.crt").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    server = _write(certs, "terminator", *_leaf(ca, plan.server_name, ExtendedKeyUsageOID.SERVER_AUTH, ips=(APP,)))
    clients = {c: _write(certs, c, *_leaf(ca, identity(NAME, c), ExtendedKeyUsageOID.CLIENT_AUTH))
               for c in ("api-gateway", "external-gateway", METRICS_CALLER)}
    # The kind of certificate the data node and the session collector hold: the same CA,
    # server_auth only; here with an allowed caller's very name.
    clients["a server of the CA"] = _write(certs, "data", *_leaf(ca, identity(NAME, "api-gateway"),
                                                                 ExtendedKeyUsageOID.SERVER_AUTH))
    clients["another CA"] = _write(certs, "foreign", *_leaf(foreign, identity(NAME, "api-gateway"),
                                                            ExtendedKeyUsageOID.CLIENT_AUTH))

    def runtime(role: str) -> mtls.Runtime:
        (work / role / "tmp").mkdir(parents=True)
        return mtls.Runtime(pid_path=str(work / role / "nginx.pid"), temp_dir=str(work / role / "tmp"),
                            error_log=str(work / role / "error.log"), access_log="off",
                            extra_main=("user root;",) if os.geteuid() == 0 else ())

    ports = {s.name: s.port for s in cfg.app_services}
    services = [dataclasses.replace(s, upstream=f"127.0.0.1:{ports[s.name]}") for s in plan.services]
    terminator = mtls.render_terminator_conf(services, runtime=runtime("app"), tls=mtls.TlsFiles(
        cert=str(server[0]), key=str(server[1]), ca=str(certs / "ca.crt")))
    sidecar = next(s for s in plan.sidecars if s.caller == "api-gateway")
    caller = mtls.render_caller_conf(sidecar.routes, runtime=dataclasses.replace(runtime("edge"), health_listen=None),
                                     tls=mtls.TlsFiles(cert=str(clients["api-gateway"][0]),
                                                       key=str(clients["api-gateway"][1]), ca=str(certs / "ca.crt")))
    confs = {"app": work / "app" / "nginx.conf", "edge": work / "edge" / "nginx.conf"}
    confs["app"].write_text(terminator)
    confs["edge"].write_text(caller)
    for conf in confs.values():
        check = subprocess.run([binary, "-p", str(conf.parent), "-c", str(conf), "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr

    suffix = str(os.getpid())
    ns = {"app": f"mtlsapp{suffix}", "edge": f"mtlsedge{suffix}"}
    processes: list[subprocess.Popen] = []
    for name in ns.values():
        ip("netns", "add", name)
    try:
        outside, inside = f"mte{suffix}"[:15], f"mta{suffix}"[:15]
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", outside, "netns", ns["edge"])
        ip("link", "set", inside, "netns", ns["app"])
        ip("-n", ns["edge"], "addr", "add", f"{EDGE}/24", "dev", outside)
        ip("-n", ns["app"], "addr", "add", f"{APP}/24", "dev", inside)
        for role, dev in (("edge", outside), ("app", inside)):
            ip("-n", ns[role], "link", "set", dev, "up")
            ip("-n", ns[role], "link", "set", "lo", "up")
        # The app node's inbound rules as the program renders them for its host script.
        commands = hostsetup.render_ufw_commands(node_rules(cfg, ("198.51.100.0/24",))["app"])
        ufw = apply_ufw(["ip", "netns", "exec", ns["app"]], commands, work, timeout=180)
        assert ufw.returncode == 0, ufw.stdout + ufw.stderr
        log = work / "backend.log"
        log.touch()
        backend = subprocess.Popen(["ip", "netns", "exec", ns["app"], sys.executable, "-c", BACKEND, str(log),
                                    *map(str, ports.values())], stderr=subprocess.PIPE, text=True)
        processes.append(backend)
        for role in ("app", "edge"):
            processes.append(subprocess.Popen(
                ["ip", "netns", "exec", ns[role], binary, "-p", str(confs[role].parent), "-c", str(confs[role]),
                 "-g", "daemon off;"], stderr=subprocess.PIPE, text=True))
        for port in ports.values():
            _wait(ns["app"], "127.0.0.1", port, backend)
        for port in plan.ports:
            _wait(ns["app"], "127.0.0.1", port, processes[1])
        for route in sidecar.routes:
            _wait(ns["edge"], "127.0.0.1", route.listen_port, processes[2])
        yield {"ns": ns, "plan": plan, "ports": ports, "clients": clients, "ca": certs / "ca.crt", "log": log,
               "work": work}
    finally:
        stop_all(processes)
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _curl(lab, url: str, *options: str) -> tuple[str, str]:
    """(HTTP status or "000" when no answer came, body) of a GET from the edge namespace."""
    result = _exec(lab["ns"]["edge"], "curl", "-s", "--connect-timeout", "3", "--max-time", "8",
                   "-o", "-", "-w", "\n%{http_code}", *options, url)
    body, _, status = result.stdout.rpartition("\n")
    return status, body


def _as(lab, caller: str, service: str, path: str = "/api/v1/ping") -> tuple[str, str]:
    """A request to ``service``'s TLS port on the app node with ``caller``'s client certificate."""
    crt, key = lab["clients"][caller]
    port = next(s.listen_port for s in lab["plan"].services if s.name == service)
    return _curl(lab, f"https://{APP}:{port}{path}", "--cacert", str(lab["ca"]), "--cert", str(crt), "--key", str(key))


def _backend_saw(lab) -> list[str]:
    return lab["log"].read_text().splitlines()


def test_the_allowed_caller_reaches_each_service_through_its_sidecar(lab):
    for service, port in lab["ports"].items():
        status, body = _curl(lab, f"http://127.0.0.1:{port}/api/v1/{service}")
        assert status == "200", (service, status, body)
        assert body == f"{port} {identity(NAME, 'api-gateway')} /api/v1/{service}"


def test_plain_http_to_a_service_port_is_refused(lab):
    # Control: the stand-in answers on every address of the app namespace...
    inside = _exec(lab["ns"]["app"], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                   f"http://{APP}:{lab['ports']['core']}/")
    assert inside.stdout == "200"
    # ... but the app node's UFW admits only the TLS ports from the edge.
    for port in lab["ports"].values():
        assert _curl(lab, f"http://{APP}:{port}/")[0] == "000", port
    # Plain HTTP to a TLS port is refused by nginx without reaching the service.
    before = _backend_saw(lab)
    status, body = _curl(lab, f"http://{APP}:{lab['plan'].ports[0]}/api")
    assert status == "400" and "plain HTTP request was sent to HTTPS port" in body
    assert _backend_saw(lab) == before


def test_tls_without_a_client_certificate_is_refused(lab):
    before = _backend_saw(lab)
    status, body = _curl(lab, f"https://{APP}:{lab['plan'].ports[0]}/api", "--cacert", str(lab["ca"]))
    assert status == "400" and "No required SSL certificate was sent" in body
    assert _backend_saw(lab) == before


@pytest.mark.parametrize("caller", ["another CA", "a server of the CA"])
def test_a_certificate_the_ca_did_not_issue_to_a_caller_is_refused(lab, caller):
    """A client certificate from another CA (with an allowed caller's very name), and a server
    certificate of the internal CA (no client_auth usage), fail verification."""
    before = _backend_saw(lab)
    status, body = _as(lab, caller, "core")
    assert status in ("400", "000"), (status, body)
    assert status == "000" or "SSL certificate error" in body
    assert _backend_saw(lab) == before


def test_a_caller_not_on_the_allow_list_is_refused(lab):
    assert _as(lab, "external-gateway", "core")[0] == "200"  # control: allowed by the tier model
    before = _backend_saw(lab)
    assert _as(lab, "external-gateway", "payments")[0] == "403"  # callers: {payments: [api-gateway]}
    assert _backend_saw(lab) == before
    status, body = _as(lab, "api-gateway", "payments")
    assert (status, body) == ("200", f"{lab['ports']['payments']} {identity(NAME, 'api-gateway')} /api/v1/ping")


def test_prometheus_reaches_metrics_only(lab):
    status, body = _as(lab, METRICS_CALLER, "core", "/metrics")
    assert (status, body) == ("200", f"{lab['ports']['core']} {identity(NAME, METRICS_CALLER)} /metrics")
    before = _backend_saw(lab)
    assert _as(lab, METRICS_CALLER, "core", "/api/v1/ping")[0] == "403"
    assert _as(lab, METRICS_CALLER, "core", "/metrics/x")[0] == "403"
    assert _backend_saw(lab) == before


def test_a_caller_cannot_claim_another_identity(lab):
    """The terminator sets X-Platform-Caller from the verified certificate, whatever the client sent."""
    crt, key = lab["clients"]["external-gateway"]
    status, body = _curl(lab, f"https://{APP}:{lab['plan'].ports[0]}/x", "--cacert", str(lab["ca"]),
                         "--cert", str(crt), "--key", str(key), "-H", f"X-Platform-Caller: {identity(NAME, 'api-gateway')}")
    assert (status, body) == ("200", f"{lab['ports']['core']} {identity(NAME, 'external-gateway')} /x")


FORGED = identity(NAME, "api-gateway")


@pytest.mark.parametrize("headers", [
    [f"X-Platform-Caller: {FORGED}"],
    [f"x-platform-caller: {FORGED}", f"X-PLATFORM-CALLER: {FORGED}"],
    [f"X_Platform_Caller: {FORGED}"],
    [f"X-Platform_Caller: {FORGED}", "X-Platform-Caller: "],
], ids=["as-is", "twice-in-other-cases", "underscores", "mixed-and-empty"])
def test_no_spelling_of_the_caller_header_passes_the_terminator(lab, headers):
    """Whatever a client sends as X-Platform-Caller (repeated, in other cases, with the
    underscores a WSGI or CGI backend reads as the same name, or empty), the service sees one
    value: the verified certificate's identity (nginx drops a header that proxy_set_header
    redefines, and headers with underscores as invalid)."""
    crt, key = lab["clients"]["external-gateway"]
    options = [option for header in headers for option in ("-H", header)]
    status, body = _curl(lab, f"https://{APP}:{lab['plan'].ports[0]}/x", "--cacert", str(lab["ca"]),
                         "--cert", str(crt), "--key", str(key), *options)
    assert (status, body) == ("200", f"{lab['ports']['core']} {identity(NAME, 'external-gateway')} /x")


def test_a_service_cannot_forge_the_caller_through_its_own_sidecar(lab):
    """A calling service's header passes its sidecar, and the terminator replaces it with the
    sidecar's certificate identity."""
    port = lab["ports"]["core"]
    status, body = _curl(lab, f"http://127.0.0.1:{port}/y", "-H", f"X-Platform-Caller: {identity(NAME, 'x')}",
                         "-H", f"X_Platform_Caller: {identity(NAME, 'x')}")
    assert (status, body) == ("200", f"{port} {identity(NAME, 'api-gateway')} /y")
