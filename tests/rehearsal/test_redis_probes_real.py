"""The live Redis TLS probes (``rehearsal.checks.datastores.redis_tls_checks``) against real
``redis-server`` s on loopback, each shown to pass and to fail:

- **good**: TLS only (``--port 0 --tls-port``), a certificate of the internal CA, a password: as
  Pencom's data node runs it (stacks/pencom/plan.py);
- **plaintext**: the same port answering without TLS: "plaintext is refused" (and "TLS with the
  stack's CA connects") must fail there;
- **another CA**: TLS only with a certificate of a CA the stack's client does not trust: "TLS
  with the stack's CA connects" and "TLS against another CA fails" must fail there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rehearsal.checks.datastores import container_urls, handed_checks, redis_tls_checks
from rehearsal.images import TestCA
from rehearsal.report import FAIL, NOT_PROVEN, PASS
from tests.conftest import require_tool
from tests.realtools import free_port, stop_all, wait_for_port

pytestmark = pytest.mark.realtool

LOOPBACK = "127.0.0.1"
NAME = "redis.data.internal"
PASSWORD = "lab-probe-redis-password"


def _write_key(path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    """{"good", "plaintext", "other": the port of each server, "own_ca", "other_ca"}."""
    server = require_tool("redis-server", "Debian package redis-server")
    require_tool("redis-cli", "Debian package redis-tools")
    workdir = tmp_path_factory.mktemp("redis")
    cas = {"own": TestCA(workdir / "own-ca"), "other": TestCA(workdir / "other-ca")}
    for name, ca in cas.items():
        (workdir / f"{name}-ca.crt").write_bytes(ca.cert_pem)
        issued = ca.issue([NAME, LOOPBACK])
        (workdir / f"{name}.crt").write_bytes(issued.cert_pem)
        _write_key(workdir / f"{name}.key", issued.key_pem)
    layouts = {"good": "own", "plaintext": None, "other": "other"}
    processes, ports = [], {}
    try:
        for label, ca in layouts.items():
            port = free_port()
            config = workdir / f"{label}.conf"
            # The password in a config file, never on a command line.
            tls = (f"port 0\ntls-port {port}\ntls-cert-file {workdir / f'{ca}.crt'}\n"
                   f"tls-key-file {workdir / f'{ca}.key'}\ntls-ca-cert-file {workdir / f'{ca}-ca.crt'}\n"
                   "tls-auth-clients no\n") if ca else f"port {port}\n"
            config.write_text(f"bind {LOOPBACK}\n{tls}requirepass {PASSWORD}\nsave \"\"\nappendonly no\ndir {workdir}\n")
            processes.append(subprocess.Popen([server, str(config)], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            wait_for_port(port, processes[-1])
            ports[label] = port
        yield {**ports, "own_ca": workdir / "own-ca.crt", "other_ca": workdir / "other-ca.crt"}
    finally:
        stop_all(processes)


def _statuses(redis, port: int) -> dict[str, str]:
    checks = redis_tls_checks((), "live redis", LOOPBACK, port, NAME, "default", PASSWORD,
                              redis["own_ca"], redis["other_ca"])
    return {c.name.split(": ", 1)[1]: c.status for c in checks}


def test_tls_only_redis_passes_every_probe(redis):
    assert _statuses(redis, redis["good"]) == {"TLS with the stack's CA connects": PASS,
                                               "TLS against another CA fails": PASS,
                                               "plaintext is refused": PASS}


def test_the_plaintext_probe_fails_where_redis_answers_without_tls(redis):
    assert _statuses(redis, redis["plaintext"]) == {"TLS with the stack's CA connects": FAIL,
                                                    "TLS against another CA fails": NOT_PROVEN,
                                                    "plaintext is refused": FAIL}


def test_the_ca_probes_fail_against_a_server_of_another_ca(redis):
    assert _statuses(redis, redis["other"]) == {"TLS with the stack's CA connects": FAIL,
                                                "TLS against another CA fails": FAIL,
                                                "plaintext is refused": NOT_PROVEN}


def test_a_closed_port_proves_nothing_but_the_failed_connection():
    checks = redis_tls_checks((), "live redis", LOOPBACK, free_port(), NAME, "default", PASSWORD,
                              Path("/nonexistent-ca.crt"), Path("/nonexistent-other.crt"))
    assert [c.status for c in checks] == [FAIL, NOT_PROVEN, NOT_PROVEN]


def test_a_wrong_password_does_not_connect_and_is_never_echoed(redis):
    checks = redis_tls_checks((), "live redis", LOOPBACK, redis["good"], NAME, "default", "not-the-password",
                              redis["own_ca"], redis["other_ca"])
    assert checks[0].status == FAIL
    assert all("not-the-password" not in c.detail and PASSWORD not in c.detail for c in checks)


def _lab_and_probes(tmp_path, url: str, ca_file):
    """A stand-in lab and LabProbes around one container handed ``url`` (the probes run from this
    machine: its site is ``env``, which runs the client as it is)."""
    from types import SimpleNamespace

    from rehearsal.checks.probes import BoxContainer

    client = BoxContainer(name="app-1", service="api", tier="app", pid=1, addresses={"net": (LOOPBACK, 8)},
                          env={"REDIS_URL": url, "NODE_EXTRA_CA_CERTS": "/run/platform/ca.crt"},
                          mounts={"/run/platform": str(ca_file.parent)})
    lab = SimpleNamespace(exec=lambda host, argv, timeout: subprocess.run(argv, capture_output=True))
    probes = SimpleNamespace(containers={"app-host": [client]}, container_site=lambda host, container: ("env",))
    return lab, probes


def test_the_checks_read_the_url_the_container_is_handed_and_its_ca(redis, tmp_path):
    mounted = tmp_path / "platform"
    mounted.mkdir()
    (mounted / "ca.crt").write_bytes(redis["own_ca"].read_bytes())
    url = f"rediss://default:{PASSWORD}@{LOOPBACK}:{redis['good']}"
    lab, probes = _lab_and_probes(tmp_path, url, mounted / "ca.crt")
    checks = handed_checks(container_urls(lab, probes, "app-host"), redis["other_ca"].read_bytes())
    assert [(c.name, c.status) for c in checks] == [
        (f"live redis from api REDIS_URL ({LOOPBACK}): TLS with the stack's CA connects", PASS),
        (f"live redis from api REDIS_URL ({LOOPBACK}): TLS against another CA fails", PASS),
        (f"live redis from api REDIS_URL ({LOOPBACK}): plaintext is refused", PASS)]
    # A plain redis:// stays on the container's own network (policy redis-tls): not tried.
    lab, probes = _lab_and_probes(tmp_path, f"redis://default:{PASSWORD}@redis:6379", mounted / "ca.crt")
    assert container_urls(lab, probes, "app-host") == []


def test_a_server_that_does_not_listen_fails_and_a_missing_ca_is_not_proven(redis, tmp_path):
    """No stand-in listening is a failure, never "not proven" (the managed databases have theirs:
    rehearsal/services/managed.py); only what cannot be tried (no CA file) is not proven."""
    mounted = tmp_path / "platform"
    mounted.mkdir()
    (mounted / "ca.crt").write_bytes(redis["own_ca"].read_bytes())
    url = f"rediss://default:{PASSWORD}@{LOOPBACK}:{free_port()}"
    lab, probes = _lab_and_probes(tmp_path, url, mounted / "ca.crt")
    assert [c.status for c in handed_checks(container_urls(lab, probes, "app-host"), b"")] == [FAIL, NOT_PROVEN, NOT_PROVEN]
    lab, probes = _lab_and_probes(tmp_path, url, tmp_path / "elsewhere" / "ca.crt")
    probes.containers["app-host"][0].env["NODE_EXTRA_CA_CERTS"] = "/etc/nowhere/ca.crt"
    [check] = handed_checks(container_urls(lab, probes, "app-host"), b"")
    assert check.status == NOT_PROVEN and "CA /etc/nowhere/ca.crt -> None" in check.detail
