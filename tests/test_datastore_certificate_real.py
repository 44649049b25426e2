"""A re-issued internal-CA leaf certificate reaches the running datastores the way the program
delivers it, and a verify-full client sees the new serial; nothing written before is lost.

Debian's PostgreSQL and Redis run as processes on loopback, from a temporary directory, started
with the stack's own captured command lines (Pencom's data node: TLS only, ``ssl=on``, its
pg_hba.conf, Redis' ``--appendonly yes``) with the container paths turned into the host
directories that ``service_mounts`` mounts there. The certificate, its key, the CA and
pg_hba.conf are the data node's files (``stacks/pencom/steps.py``), split into the
program's delivery groups and delivered by the program's rendered scripts (``bash``), both of a
service's scripts started at once. Only Docker is a stand-in: ``docker`` on PATH is a script
that treats each server process as its container (``restart``: SIGTERM, then the same command
line again; ``inspect``: the process alive, and healthy once ``pg_isready`` or ``PING``
answers; ``logs``: the server's log), so the restart and the health wait are the rendered
ones. Docker's own restart and health are proven by tests/test_service_files_restart_docker.py
and on the rehearsal (tests/rehearsal/test_drills.py).

A certificate that does not match the delivered key stops the server at its start: the step
fails with the server's own words, the previous pair is back and served, and the data is there.
"""

from __future__ import annotations

import datetime
import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.postgres_init import HBA_PATH, render_pg_hba
from components.service_files import HostFile, delivery_groups, reload_for, render_service_script, service_mounts
from stacks.pencom.config import CA_PATH, TLS_DIR
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.realtool

STACK = "pencom-staging-data"
PASSWORD = "drill-password-only-in-env"
KEPT = "written before the rotation"

# Each server process stands for its container: ps names it while it was started, restart stops
# it (SIGTERM, as docker restart) and starts the same command again without waiting for it (as
# Docker returns once the process runs), inspect reports it alive and, once its health command
# answers, healthy.
STUB = r"""#!/bin/bash
set -u
S="$STUB_STATE"
case "$1" in
  ps) svc="${*: -1}"; svc="${svc##*=}"; [ -e "$S/$svc.pid" ] && echo "$svc"; exit 0 ;;
  restart)
    pid="$(cat "$S/$2.pid")"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { echo "$2 did not stop" >&2; exit 1; }
    bash "$S/$2.start" || exit 1
    exit 0 ;;
  logs) tail -n 20 "$S/${*: -1}.log"; exit 0 ;;
  inspect)
    format="$3"; svc="$4"; started="$(cat "$S/$svc.started")"
    case "$format" in
      *Health.Log*) exit 0 ;;
      '{{.State.StartedAt}}') echo "$started"; exit 0 ;;
    esac
    if ! kill -0 "$(cat "$S/$svc.pid")" 2>/dev/null; then echo "exited starting $started"
    elif bash "$S/$svc.health" >/dev/null 2>&1; then echo "running healthy $started"
    else echo "running starting $started"; fi
    exit 0 ;;
esac
echo "stub docker: unexpected $*" >&2
exit 3
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ca:
    """An internal CA as ``components.internal_ca`` issues it: ECDSA P-256, a leaf for
    ``localhost`` and 127.0.0.1 (the data node's names on loopback) for server auth."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drill internal CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, key=None) -> tuple[str, str, int]:
        """(certificate PEM, key PEM, serial) of a new leaf; ``key``: reuse that private key."""
        import ipaddress

        key = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem, cert.serial_number


def _captured(service: str) -> tuple[list[str], str]:
    """The stack's own command line and image of ``service`` on Pencom's staging data node."""
    from synth.state import State
    from tests.conftest import synth_once

    for c in State(synth_once("staging")).of_type("docker:index/container:Container"):
        if c["name"] == f"{STACK}-{service}":
            return list(c["inputs"]["command"]), c["inputs"]["image"]
    raise AssertionError(f"{STACK}-{service} is not in the staging capture")


class Datastores:
    """The two servers, their directories, the stub and the program's delivery."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "srv"
        self.state = root / "docker-state"
        self.state.mkdir()
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").write_text(STUB)
        (bin_dir / "docker").chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_STATE": str(self.state)}
        self.ports = {"postgres": _free_port(), "redis": _free_port()}
        self.users = {"postgres": pwd.getpwnam("postgres"), "redis": pwd.getpwnam("redis")}
        self.ca_host = str(self.data / "files" / "postgres" / CA_PATH.lstrip("/"))

    def files(self, service: str, cert: str, key: str, ca: str) -> list[HostFile]:
        """The data node's files of ``service`` (stacks/pencom/steps.py), the key owned by
        the local server user instead of the image's uid."""
        user = self.users[service]
        owner = f"{user.pw_uid}:{user.pw_gid}"
        key_path = f"{TLS_DIR}/server.key" if service == "postgres" else f"{TLS_DIR}/redis.key"
        files = [HostFile(f"{TLS_DIR}/server.crt", cert), HostFile(key_path, key, mode="0600", owner=owner),
                 HostFile(CA_PATH, ca)]
        if service == "postgres":
            files.append(HostFile(HBA_PATH, render_pg_hba()))
        return files

    def deliver(self, service: str, files: list[HostFile]) -> list[subprocess.CompletedProcess]:
        """Every delivery script of ``service``, rendered as the program renders it and run at once."""
        _, image = _captured(service)
        procs = []
        for kind, group in delivery_groups(files).items():
            script = render_service_script("lab", str(self.data), service, group, [f.content for f in group],
                                           reload_for(image), textfile_dir=str(self.root / "textfile"))
            path = self.root / f"{kind}-{service}.sh"
            path.write_text(script)
            procs.append(subprocess.Popen(["bash", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=self.env))
        done = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done

    def host_argv(self, service: str, argv: list[str]) -> list[str]:
        """The captured command with each mounted container directory turned into its host one."""
        mounts = service_mounts(str(self.data), service, self.files(service, "", "", ""))
        text = shlex.join(argv)
        for m in sorted(mounts, key=lambda m: -len(m.container_path)):
            text = text.replace(m.container_path + "/", m.host_path + "/")
        return shlex.split(text)

    def start(self, service: str) -> None:
        """Write the start command (the stub's restart runs it too) and run it."""
        argv, _ = _captured(service)
        argv = self.host_argv(service, argv)
        user = self.users[service]
        work = self.root / service
        if service == "postgres":
            assert argv[0] == "postgres", argv
            argv = [f"{_pg_bin()}/postgres", *[a.replace("listen_addresses=*", "listen_addresses=127.0.0.1")
                                               for a in argv[1:]],
                    "-D", str(work / "data"), "-p", str(self.ports["postgres"]), "-k", str(work)]
            health = f"{_pg_bin()}/pg_isready -q -h 127.0.0.1 -p {self.ports['postgres']}"
        else:
            assert argv[:2] == ["sh", "-c"] and "--tls-port 6379 " in argv[2], argv
            argv = ["sh", "-c", argv[2].replace("--tls-port 6379 ", f"--tls-port {self.ports['redis']} ")
                    + f" --bind 127.0.0.1 --dir {work}"]
            health = (f"REDISCLI_AUTH={shlex.quote(PASSWORD)} redis-cli --tls --cacert {self.ca_host} "
                      f"-h 127.0.0.1 -p {self.ports['redis']} PING | grep -qx PONG")
        start = self.state / f"{service}.start"
        start.write_text("\n".join([
            f"cd {work}",
            f"REDIS_PASSWORD={shlex.quote(PASSWORD)} setsid setpriv --reuid={user.pw_uid} --regid={user.pw_gid} "
            # A container holds none of the delivery's descriptors (its lock is fd 8).
            f"--init-groups {shlex.join(argv)} </dev/null >>{self.state}/{service}.log 2>&1 8>&- &",
            f"echo $! >{self.state}/{service}.pid",
            f"date +%s%N >{self.state}/{service}.started", ""]))
        (self.state / f"{service}.health").write_text(health + "\n")
        subprocess.run(["bash", str(start)], check=True, env=self.env)
        assert _until(lambda: subprocess.run(["bash", str(self.state / f"{service}.health")]).returncode == 0), \
            (self.state / f"{service}.log").read_text()

    def stop(self) -> None:
        for pid_file in self.state.glob("*.pid"):
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, 9)

    # --- the verify-full client --------------------------------------------------------------

    def served_serial(self, service: str) -> int:
        """The serial the server presents to a client that verifies the chain to the delivered
        CA and the address it dialled (127.0.0.1), as verify-full does."""
        starttls = ["-starttls", "postgres"] if service == "postgres" else []
        probe = subprocess.run(["openssl", "s_client", *starttls, "-connect", f"127.0.0.1:{self.ports[service]}",
                                "-CAfile", self.ca_host, "-verify_ip", "127.0.0.1", "-verify_return_error"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0 and "Verify return code: 0 (ok)" in probe.stdout, probe.stdout[-1500:] + probe.stderr
        pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", probe.stdout, re.S).group(0)
        return x509.load_pem_x509_certificate(pem.encode()).serial_number

    def sql(self, statement: str) -> str:
        dsn = (f"host=127.0.0.1 port={self.ports['postgres']} user=postgres dbname=postgres "
               f"sslmode=verify-full sslrootcert={self.ca_host}")
        done = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-Atc", statement, dsn], capture_output=True,
                              text=True, env={**os.environ, "PGPASSWORD": PASSWORD}, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def redis(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "--tls", "--cacert", self.ca_host, "-h", "127.0.0.1",
                               "-p", str(self.ports["redis"]), *args], capture_output=True, text=True,
                              env={**os.environ, "REDISCLI_AUTH": PASSWORD}, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    assert found, "Debian's postgresql package is not installed"
    return str(Path(found[-1]).parent)


def _until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def _changes(out: str) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", out).group(1))


@pytest.fixture
def datastores():
    require_root("the servers run as their own users; put_file sets owners")
    for tool, why in (("psql", "Debian package postgresql-client"), ("redis-server", "Debian package redis-server"),
                      ("redis-cli", "Debian package redis-tools"), ("openssl", "Debian package openssl"),
                      ("setpriv", "util-linux"), ("flock", "util-linux"), ("bash", "Debian package bash")):
        require_tool(tool, why)
    _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="datastore-cert-", dir="/var/tmp"))
    root.chmod(0o755)
    stores = Datastores(root)
    try:
        yield stores
    finally:
        stores.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_reissued_leaf_reaches_running_postgres_and_redis_and_nothing_written_is_lost(datastores):
    ds = datastores
    ca = Ca()
    cert1, key1, serial1 = ca.issue()
    for service in ("postgres", "redis"):
        first = ds.deliver(service, ds.files(service, cert1, key1, ca.pem))
        assert all(p.returncode == 0 for p in first), [p.stderr for p in first]
    pg, redis = ds.users["postgres"], ds.users["redis"]
    (ds.root / "postgres" / "data").mkdir(parents=True)
    (ds.root / "redis").mkdir()
    for service, user in (("postgres", pg), ("redis", redis)):
        shutil.chown(ds.root / service, user.pw_uid, user.pw_gid)
    shutil.chown(ds.root / "postgres" / "data", pg.pw_uid, pg.pw_gid)
    initdb = subprocess.run(["setpriv", f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}", "--init-groups",
                             f"{_pg_bin()}/initdb", "-D", str(ds.root / "postgres" / "data"), "-U", "postgres",
                             "--auth=trust"], capture_output=True, text=True, cwd=ds.root)
    assert initdb.returncode == 0, initdb.stderr
    ds.start("postgres")
    # The stack's pg_hba.conf admits TCP over TLS with a SCRAM password only; the socket trusts.
    # (The password travels on psql's stdin, not its command line.)
    altered = subprocess.run(["psql", "-X", "-h", str(ds.root / "postgres"), "-p", str(ds.ports["postgres"]),
                              "-U", "postgres", "-v", "ON_ERROR_STOP=1"],
                             input=f"ALTER ROLE postgres PASSWORD '{PASSWORD}';\n", capture_output=True, text=True)
    assert altered.returncode == 0, altered.stderr
    ds.start("redis")
    assert ds.served_serial("postgres") == serial1 and ds.served_serial("redis") == serial1
    ds.sql(f"CREATE TABLE kept (v text); INSERT INTO kept VALUES ('{KEPT}')")
    assert ds.redis("SET", "kept", KEPT) == "OK"
    pg_pid = (ds.state / "postgres.pid").read_text()

    # The CA re-issues the leaf (a new key and serial), and a converge delivers it.
    cert2, key2, serial2 = ca.issue()
    for service in ("postgres", "redis"):
        runs = ds.deliver(service, ds.files(service, cert2, key2, ca.pem))
        assert all(p.returncode == 0 for p in runs), [p.stdout + p.stderr for p in runs]
        # The pair changed in one commit: one script restarted the server, the other had nothing.
        assert sorted(_changes(p.stdout) for p in runs) == [0, 3], [p.stdout for p in runs]
        assert ds.served_serial(service) == serial2
    assert (ds.state / "postgres.pid").read_text() != pg_pid, "postgres was not restarted onto the new pair"
    assert ds.sql("SELECT v FROM kept") == KEPT
    assert ds.redis("GET", "kept") == KEPT
    again = [p for s in ("postgres", "redis") for p in ds.deliver(s, ds.files(s, cert2, key2, ca.pem))]
    assert all(p.returncode == 0 and _changes(p.stdout) == 0 for p in again), [p.stdout for p in again]

    # A certificate that is not the delivered key's: the server refuses it at its start, the
    # step fails with the server's own words, and the previous pair is back and served.
    cert3, _, serial3 = ca.issue()
    for service, refusal in (("postgres", "private key"), ("redis", "TLS")):
        runs = ds.deliver(service, ds.files(service, cert3, key2, ca.pem))
        failed = [p for p in runs if p.returncode != 0]
        assert len(failed) == 1, [p.stdout + p.stderr for p in runs]
        said = failed[0].stderr
        assert f"container {service} is not back after its restart or reload" in said, said
        assert refusal in said, said
        assert "the previous version is back in place and applied" in said, said
        assert ds.served_serial(service) == serial2 != serial3
    assert ds.sql("SELECT v FROM kept") == KEPT
    assert ds.redis("GET", "kept") == KEPT
    # The next run tries again (the files are not taken as current), and fails the same way.
    retried = ds.deliver("postgres", ds.files("postgres", cert3, key2, ca.pem))
    assert any(p.returncode != 0 and "is not back" in p.stderr for p in retried)
