"""The rendered KRO ingress config, run by a real nginx on loopback with stub backends."""

from __future__ import annotations

import http.client
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import warnings

import yaml

import pytest

from components.nginx import Certificate, IngressConfig, Route, render_nginx_conf
from stacks.kro import KroConfig
from tests.conftest import PROJECT_ROOT
from tests.realtools import free_port, nginx_binary, self_signed, wait_for_port

pytestmark = pytest.mark.realtool


class _StubBackend(socketserver.ThreadingTCPServer):
    """Answers with its own name, the Host and path it saw; 101 to a WebSocket upgrade."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, label: str):
        self.label = label
        self.seen: list[dict] = []
        super().__init__(("127.0.0.1", 0), _StubHandler)


class _StubHandler(socketserver.StreamRequestHandler):
    def handle(self):
        request_line = self.rfile.readline().decode().strip()
        headers = {}
        while True:
            line = self.rfile.readline().decode()
            if line in ("\r\n", "\n", ""):
                break
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        self.server.seen.append({"line": request_line, "headers": headers})
        if headers.get("upgrade", "").lower() == "websocket" and "upgrade" in headers.get("connection", "").lower():
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
            return
        body = f"{self.server.label} {headers.get('host')} {request_line.split(' ')[1]}".encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)


@pytest.fixture(scope="module")
def ingress(tmp_path_factory):
    """nginx running the config rendered for the committed prod routes."""
    routes = KroConfig.model_validate(yaml.safe_load(
        (PROJECT_ROOT / "Pulumi.prod.yaml").read_text())["config"]["platform:kro"]).routes
    workdir = tmp_path_factory.mktemp("nginx")
    (workdir / "logs").mkdir()
    (workdir / "tmp").mkdir()
    acme = workdir / "acme" / ".well-known" / "acme-challenge"
    acme.mkdir(parents=True)
    (acme / "token-123").write_text("token-123.key-authorization")
    hosts = [r.host for r in routes]
    cert, key = self_signed(workdir, hosts)
    backends = {name: _StubBackend(name) for name in {r.service for r in routes}}
    for server in backends.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    http_port, https_port = free_port(), free_port()
    conf = render_nginx_conf(IngressConfig(
        routes=[Route(host=r.host, upstream=f"127.0.0.1:{backends[r.service].server_address[1]}",
                      websocket=r.websocket) for r in routes],
        certificate=Certificate(fullchain=str(cert), private_key=str(key)),
        acme_webroot=str(workdir / "acme"),
        http_port=http_port, https_port=https_port, resolver=None,
        pid_path=str(workdir / "nginx.pid"), temp_dir=str(workdir / "tmp"),
        error_log=str(workdir / "logs" / "error.log"), access_log="off",
        mime_types=None, health_listen=None, worker_processes="1",
        # As root, workers would drop to nobody, who cannot read pytest's private temp dir.
        extra_main=("user root;",) if os.geteuid() == 0 else (),
    ))
    (workdir / "nginx.conf").write_text(conf)
    binary = nginx_binary()
    check = subprocess.run([binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-t"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        wait_for_port(https_port, process)
        wait_for_port(http_port, process)
        yield {"http": http_port, "https": https_port, "cert": cert, "routes": routes,
               "backends": backends}
    finally:
        process.terminate()
        process.wait(timeout=10)
        for server in backends.values():
            server.shutdown()


def _tls_context(cert, minimum=ssl.TLSVersion.TLSv1_2, maximum=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def _https(ingress, host: str, path: str = "/", headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", ingress["https"], timeout=5)
    # SNI and certificate verification use the public hostname, as a browser's would.
    sock = socket.create_connection(("127.0.0.1", ingress["https"]), timeout=5)
    connection.sock = _tls_context(ingress["cert"]).wrap_socket(sock, server_hostname=host)
    connection.request("GET", path, headers={"Host": host, **(headers or {})})
    return connection.getresponse()


def test_http_redirects_to_https_keeping_host_and_path(ingress):
    for route in ingress["routes"]:
        connection = http.client.HTTPConnection("127.0.0.1", ingress["http"], timeout=5)
        connection.request("GET", "/some/path?q=1", headers={"Host": route.host})
        response = connection.getresponse()
        assert response.status == 301
        assert response.getheader("Location") == f"https://{route.host}/some/path?q=1"


def test_acme_challenge_is_served_over_http(ingress):
    connection = http.client.HTTPConnection("127.0.0.1", ingress["http"], timeout=5)
    connection.request("GET", "/.well-known/acme-challenge/token-123",
                       headers={"Host": "api.krotrust.com"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.read() == b"token-123.key-authorization"


def test_each_host_reaches_its_upstream_with_hsts(ingress):
    for route in ingress["routes"]:
        response = _https(ingress, route.host, "/hello")
        body = response.read().decode()
        assert response.status == 200, body
        assert body == f"{route.service} {route.host} /hello"
        hsts = response.getheader("Strict-Transport-Security")
        assert hsts is not None and "max-age=63072000" in hsts


def test_websocket_upgrade_only_where_routed(ingress):
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for route in ingress["routes"]:
        response = _https(ingress, route.host, "/socket.io/", upgrade)
        if route.websocket:
            assert response.status == 101, route.host
        else:
            assert response.status == 200, route.host
    assert any(r.websocket for r in ingress["routes"]), "prod routes api with WebSocket upgrade"


def _handshake(ingress, version: ssl.TLSVersion, port: int | None = None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = version
        context.maximum_version = version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port or ingress["https"]), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="api.krotrust.com") as tls:
            return tls.version()


def test_tls_1_1_refused_and_1_2_accepted(ingress, tmp_path):
    # Control: this client really can speak TLS 1.1, so nginx's refusal is not the client's.
    cert, key = self_signed(tmp_path, ["control.test"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    control_port = listener.getsockname()[1]

    def accept_once():
        conn, _ = listener.accept()
        try:
            server.wrap_socket(conn, server_side=True).close()
        except ssl.SSLError:
            conn.close()

    threading.Thread(target=accept_once, daemon=True).start()
    assert _handshake(ingress, ssl.TLSVersion.TLSv1_1, control_port) == "TLSv1.1"
    listener.close()

    with pytest.raises(ssl.SSLError):
        _handshake(ingress, ssl.TLSVersion.TLSv1_1)
    assert _handshake(ingress, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(ingress, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def test_unknown_host_is_refused_at_the_handshake(ingress):
    sock = socket.create_connection(("127.0.0.1", ingress["https"]), timeout=5)
    with pytest.raises(ssl.SSLError):
        _tls_context(ingress["cert"]).wrap_socket(sock, server_hostname="evil.example.com")
    sock.close()
