"""Session logging: the audit rules, the rsyslog drop-ins, and the path from a host to the
monitoring host's collector over TLS, with the real rsyslogd on loopback.

What is not run here: auditd itself. Loading audit rules changes the machine's kernel for every
process on it (a shared test machine), so the rules are checked as text; the lab is where
they run."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import hostsetup
from tests.conftest import require_root, require_tool

RECORD = ('type=EXECVE msg=audit(1764559800.123:4242): argc=2 a0="cat" a1="/etc/shadow" '
          'key="platform-session"')


def _ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, dns_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rsyslogd() -> str:
    return require_tool("rsyslogd", "Debian packages rsyslog and rsyslog-gnutls")


def _check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_rsyslogd(), "-N1", "-f", str(config)], capture_output=True, text=True)


class Rsyslogd:
    def __init__(self, directory: Path, body: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "rsyslog.conf"
        self.config.write_text(f'global(workDirectory="{directory}")\n' + body)
        checked = _check(self.config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self.process = subprocess.Popen([_rsyslogd(), "-n", "-f", str(self.config), "-i",
                                         str(directory / "rsyslogd.pid")],
                                        stdout=subprocess.DEVNULL, stderr=(directory / "stderr").open("w"))

    def stop(self) -> None:
        stop_process(self.process)


def _wait_for(predicate, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def collector_tls(tls: Path):
    """A test CA and the collector's files in ``tls`` (ca.pem, collector.pem, and collector.key
    with mode 0600), for sessions.test and 127.0.0.1. Returns (``tls``, the CA's certificate)."""
    ca_key, ca_cert = _ca("session-log test CA")
    key, cert = _leaf(ca_key, ca_cert, "sessions.test")
    tls.mkdir()
    (tls / "ca.pem").write_bytes(_pem(ca_cert))
    (tls / "collector.pem").write_bytes(_pem(cert))
    (tls / "collector.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    (tls / "collector.key").chmod(0o600)
    return tls, ca_cert


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: a test's server is gone when its test ends."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _ship(tmp_path: Path, *, client_ca: bytes | None, peer_name: str) -> tuple[Path, Path]:
    """A collector with a certificate for sessions.test from the test CA, and a host's rsyslog
    with the platform's forwarding drop-in trusting ``client_ca`` (None: the test CA); a record
    logged on the host as audisp-syslog does, and a line that is not a session's.
    Returns (the collector's log directory, the host's socket)."""
    require_root("rsyslogd writes its queue and binds as root")
    tls, ca_cert = collector_tls(tmp_path / "collector-tls")
    port = _free_port()
    logs = tmp_path / "sessions"
    collector = Rsyslogd(tmp_path / "collector", hostsetup.render_session_collector(
        "127.0.0.1", port=port, log_dir=str(logs), tls_dir=str(tls)))
    assert _wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0), \
        (tmp_path / "collector" / "stderr").read_text()
    (tmp_path / "client-ca.pem").write_bytes(client_ca or _pem(ca_cert))
    sock = tmp_path / "host-log.sock"
    host = Rsyslogd(tmp_path / "host", "\n".join([
        'module(load="imuxsock" SysSock.Use="off")',
        f'input(type="imuxsock" Socket="{sock}" CreatePath="on")',
        hostsetup.render_session_forwarding("127.0.0.1", peer_name, port=port,
                                            ca_file=str(tmp_path / "client-ca.pem"),
                                            queue_name="test-sessions")]))
    try:
        assert _wait_for(sock.exists)
        subprocess.run(["logger", "-u", str(sock), "-p", f"{hostsetup.SESSION_LOG_FACILITY}.info",
                        "-t", "audisp-syslog", RECORD], check=True)
        subprocess.run(["logger", "-u", str(sock), "-p", "user.info", "-t", "cron", "not a session"],
                       check=True)
        _wait_for(lambda: any(logs.glob("*.log")) and RECORD.split()[3] in (logs / "127.0.0.1.log").read_text(),
                  seconds=10)
    finally:
        host.stop()
        collector.stop()
    return logs, sock


@pytest.mark.realtool
def test_a_session_record_reaches_the_collector_over_tls_and_nothing_else_does(tmp_path):
    logs, _ = _ship(tmp_path, client_ca=None, peer_name="sessions.test")
    text = (logs / "127.0.0.1.log").read_text()
    assert 'a0="cat" a1="/etc/shadow"' in text
    assert "not a session" not in text


@pytest.mark.realtool
def test_a_collector_the_host_cannot_verify_gets_nothing(tmp_path):
    _, other_ca = _ca("another CA")
    logs, _ = _ship(tmp_path, client_ca=_pem(other_ca), peer_name="sessions.test")
    assert not any(logs.glob("*.log")) or "/etc/shadow" not in (logs / "127.0.0.1.log").read_text()


@pytest.mark.realtool
def test_a_collector_with_another_name_gets_nothing(tmp_path):
    logs, _ = _ship(tmp_path, client_ca=None, peer_name="impostor.test")
    assert not any(logs.glob("*.log")) or "/etc/shadow" not in (logs / "127.0.0.1.log").read_text()


@pytest.mark.realtool
@pytest.mark.parametrize("rendered", [
    hostsetup.render_session_forwarding("10.40.0.11", "sessions.pencom-prod.internal"),
    hostsetup.render_session_collector("10.40.0.11"),
])
def test_the_drop_ins_pass_rsyslogd_n1(rendered, tmp_path):
    config = tmp_path / "rsyslog.conf"
    config.write_text(f'global(workDirectory="{tmp_path}")\n' + rendered)
    result = _check(config)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.realtool
def test_rsyslogd_n1_is_a_real_oracle(tmp_path):
    config = tmp_path / "rsyslog.conf"
    config.write_text('action(type="omfwd" target="x" StreamDriverMode="seven")\n')
    assert _check(config).returncode != 0


@pytest.mark.fast
def test_the_audit_rules_record_every_exec_of_the_admin_login_uid():
    rules = hostsetup.render_session_audit_rules("ops").splitlines()
    assert rules == [
        "-a always,exit -F arch=b64 -S execve,execveat -F auid=ops -F key=platform-session",
        "-a always,exit -F arch=b32 -S execve,execveat -F auid=ops -F key=platform-session",
    ]


@pytest.mark.fast
def test_the_section_skips_auditd_where_the_kernel_refuses_audit():
    section = hostsetup.session_logging_section()
    assert "if auditctl -s >/dev/null 2>&1; then\n  ensure_service_enabled auditd" in section
    assert 'echo "skipped: auditd' in section
    assert "60-platform-sessions.conf" not in section


@pytest.mark.fast
@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_pencom_nodes_ship_their_sessions_to_the_edge_and_only_it_admits_them(stack):
    from synth.state import State
    from tests.conftest import synth_once

    state = State(synth_once(stack))
    scripts = {c["name"]: c["inputs"]["stdin"] for c in state.of_type("command:remote:Command")}
    edge = f"pencom-{stack}-edge"
    collector = scripts[f"{edge}-session-collector"]
    assert collector == "[secret]"  # it carries the collector's private key
    for node in ("app", "data", "storage"):
        shipping = scripts[f"pencom-{stack}-{node}-session-shipping"]
        assert f'target="{state.named(edge)["inputs"]["privateAddress"]}" port="6514"' in shipping
        assert f'StreamDriverPermittedPeers="sessions.pencom-{stack}.internal"' in shipping
        assert "auid=ops" in scripts[f"pencom-{stack}-{node}-setup-sessions"]
    ufw = scripts[f"{edge}-setup-ufw"]
    sources = set(re.findall(r"^ufw allow proto tcp from (\S+) to any port 6514 ", ufw, re.M))
    nodes = {state.named(f"pencom-{stack}-{n}")["inputs"]["privateAddress"] + "/32" for n in ("app", "data", "storage")}
    assert sources == nodes
