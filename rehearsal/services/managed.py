"""Stand-ins for the DigitalOcean managed databases a stack talks to, as real servers that speak
TLS the way the managed ones do (issue #16, "Data-tier TLS"), run as processes in the lab's
namespace at :data:`rehearsal.netns.SERVICE_ADDRESS` (where the overlay puts every VPC range and
the lab's DNS and the boxes' ``/etc/hosts`` put every cluster's host names).

- **PostgreSQL** (this machine's, Debian's ``postgresql``) on :data:`PG_PORT` (DigitalOcean's
  25060): ``ssl=on`` with a certificate of the lab's CA (the CA the capture's ``getDatabaseCa``
  answers) naming every cluster host, ``pg_hba.conf`` with ``hostssl`` lines only (a plaintext
  client meets "no pg_hba.conf entry ... no encryption", as on a managed cluster), SCRAM
  passwords; each cluster's admin (``doadmin``), its ``DatabaseUser`` s and ``DatabaseDb`` s.
  One server holds every ``pg`` cluster of the stack: they share the lab's one address and port.
- **Valkey/Redis** (Debian's ``redis-server``) on :data:`REDIS_PORT` (25061): TLS only (``port
  0``), the same certificate, user ``default`` with each ``valkey``/``redis`` cluster's admin
  password (an ACL user may hold several).
- **MongoDB**: none (no MongoDB server here); its clients stay "not proven".

The passwords are the mock engine's answers (``synth.mockdata.RESOURCE_OUTPUTS``), which is what
the capture handed the clients; they go to the servers through files (0600) and psql's stdin,
never a command line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from rehearsal.netns import Cleanup, stop_pid
from rehearsal.services.plan import ServicesError
from rehearsal.services.tools import tool

PG_PORT, REDIS_PORT = 25060, 25061
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
USER = "digitalocean:index/databaseUser:DatabaseUser"
DB = "digitalocean:index/databaseDb:DatabaseDb"
SERVED = {"pg": "postgres", "valkey": "redis", "redis": "redis"}
"""Engine -> the stand-in that serves it (MongoDB: none)."""


@dataclass(frozen=True)
class ManagedDatabase:
    """One managed cluster of a capture: ``names`` its public and private host names,
    ``users`` (name, password) its admin first, ``databases`` its ``DatabaseDb`` names."""

    cluster: str
    engine: str
    names: tuple[str, ...]
    port: int
    users: tuple[tuple[str, str], ...]
    databases: tuple[str, ...] = ()


def managed_databases(state: Mapping[str, Any]) -> list[ManagedDatabase]:
    """Every ``DatabaseCluster`` of a synth capture (``state``: the ``--json`` document) with the
    outputs the mock engine gave it and its users and databases (matched by ``clusterId``, the
    mock id ``<cluster name>-id``)."""
    from synth import mockdata

    resources = state.get("resources") or []
    out = []
    for r in sorted((r for r in resources if r["type"] == CLUSTER), key=lambda r: r["name"]):
        inputs = r.get("inputs") or {}
        outputs = mockdata.RESOURCE_OUTPUTS[CLUSTER](r["name"], inputs)
        cluster_id = mockdata.mock_id(CLUSTER, r["name"])
        mine = [u for u in resources if u["type"] in (USER, DB) and (u.get("inputs") or {}).get("clusterId") == cluster_id]
        users = [(str(outputs["user"]), str(outputs["password"]))]
        users += [(str(u["inputs"]["name"]), str(mockdata.RESOURCE_OUTPUTS[USER](u["name"], u["inputs"])["password"]))
                  for u in sorted(mine, key=lambda u: u["name"]) if u["type"] == USER]
        out.append(ManagedDatabase(r["name"], str(inputs.get("engine") or "pg"),
                                   (str(outputs["host"]), str(outputs["privateHost"])), int(outputs["port"]),
                                   tuple(users), tuple(sorted({str(d["inputs"]["name"]) for d in mine if d["type"] == DB}))))
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def postgres_setup_sql(databases: Sequence[ManagedDatabase]) -> str:
    """The SQL (psql's stdin) that creates every ``pg`` cluster's roles and databases; a role
    two clusters name keeps the first cluster's password."""
    lines, roles = [], set()
    for db in databases:
        if SERVED.get(db.engine) != "postgres":
            continue
        for user, password in db.users:
            if user not in roles:
                roles.add(user)
                lines.append(f"CREATE ROLE {_ident(user)} LOGIN PASSWORD {_literal(password)};")
        for name in db.databases:
            lines.append(f"CREATE DATABASE {_ident(name)} OWNER {_ident(db.users[0][0])};")
    return "SET password_encryption = 'scram-sha-256';\n" + "\n".join(lines) + "\n"


def redis_config(databases: Sequence[ManagedDatabase], address: str, crt: Path, key: Path, workdir: Path) -> str:
    """redis.conf of the Valkey stand-in: TLS only on :data:`REDIS_PORT`, user ``default`` with
    every valkey/redis cluster's admin password."""
    passwords = sorted({db.users[0][1] for db in databases if SERVED.get(db.engine) == "redis"})
    return (f"bind {address}\nport 0\ntls-port {REDIS_PORT}\ntls-cert-file {crt}\ntls-key-file {key}\n"
            "tls-auth-clients no\nsave \"\"\nappendonly no\n"
            f"dir {workdir}\nuser default on {' '.join('>' + p for p in passwords)} ~* &* +@all\n")


class ManagedStandIns:
    """The stand-ins of ``databases`` (a context manager): started by :meth:`start` (waits until
    each accepts TCP; raises ServicesError naming the server, with its log, after undoing what it
    did), stopped by :meth:`close`. ``ca``: the ``rehearsal.lab_ca.TestCA`` that signs their
    certificate; ``prefix``: the argv prefix that enters the namespace (``nsenter --net=...``;
    ``()``: this one); ``address``: where they listen."""

    def __init__(self, databases: Sequence[ManagedDatabase], *, ca, address: str,
                 prefix: Sequence[str] = (), timeout: float = 60.0):
        self.databases = list(databases)
        self.ca, self.address, self.prefix, self.timeout = ca, address, tuple(prefix), timeout
        self.engines = {SERVED[d.engine] for d in self.databases if d.engine in SERVED}
        self.workdir: Optional[Path] = None
        self._cleanup = Cleanup()

    def __enter__(self) -> "ManagedStandIns":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> list[str]:
        """Stops the servers and removes their directory; returns what could not be undone."""
        return self._cleanup.run()

    def start(self) -> None:
        if not self.engines:
            return
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="rehearsal-managed-"))
            self._cleanup.push("remove the managed stand-ins' directory",
                               lambda: shutil.rmtree(self.workdir, ignore_errors=True))
            names = sorted({n for d in self.databases for n in d.names} | {self.address})
            issued = self.ca.issue(names)
            owner = pwd.getpwnam("postgres") if os.geteuid() == 0 and "postgres" in self.engines else None
            if owner is not None:
                os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
            crt, key = self.workdir / "server.crt", self.workdir / "server.key"
            crt.write_bytes(issued.cert_pem + self.ca.cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(issued.key_pem)
            if owner is not None:
                for path in (crt, key):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            if "postgres" in self.engines:
                self._postgres(crt, key, owner)
            if "redis" in self.engines:
                self._redis(crt, key)
        except BaseException:
            self.close()
            raise

    def _as(self, owner) -> list[str]:
        return ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups"] if owner else []

    def _spawn(self, name: str, argv: Sequence[str]) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([*self.prefix, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

        def stop() -> None:
            stop_pid(proc.pid, timeout=10)
            proc.wait(timeout=5)

        self._cleanup.push(f"stop the managed {name} stand-in (pid {proc.pid})", stop)
        return proc, log

    def _wait(self, name: str, proc: subprocess.Popen, log: Path, port: int) -> None:
        deadline = time.monotonic() + self.timeout
        probe = [*self.prefix, "nc", "-z", "-n", "-w", "2", self.address, str(port)]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServicesError(f"the managed {name} stand-in exited {proc.returncode}: {_tail(log)}")
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return
            time.sleep(0.2)
        raise ServicesError(f"the managed {name} stand-in did not listen on {self.address}:{port} "
                            f"within {self.timeout:.0f}s: {_tail(log)}")

    def _postgres(self, crt: Path, key: Path, owner) -> None:
        def binary(name: str) -> str:
            found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
            if not found:
                raise ServicesError(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
            return str(found[0])

        data = self.workdir / "pgdata"
        init = subprocess.run([*self._as(owner), binary("initdb"), "-D", str(data), "-U", "postgres",
                               "--auth-local=peer", "--auth-host=reject", "--no-sync"],
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise ServicesError(f"initdb for the managed PostgreSQL stand-in: {init.stderr[-400:]}")
        # TCP over TLS only, as a managed cluster; the local socket (a 0700 directory) is peer.
        (data / "pg_hba.conf").write_text("local all postgres peer\n"
                                          "hostssl all all 0.0.0.0/0 scram-sha-256\n"
                                          "hostssl all all ::/0 scram-sha-256\n")
        proc, log = self._spawn("postgres", [
            *self._as(owner), binary("postgres"), "-D", str(data), "-c", f"listen_addresses={self.address}",
            "-c", f"port={PG_PORT}", "-c", f"unix_socket_directories={self.workdir}", "-c", "ssl=on",
            "-c", f"ssl_cert_file={crt}", "-c", f"ssl_key_file={key}", "-c", "ssl_min_protocol_version=TLSv1.2",
            "-c", "fsync=off"])
        self._wait("postgres", proc, log, PG_PORT)
        setup = subprocess.run([*self._as(owner), "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.workdir),
                                "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres"],
                               input=postgres_setup_sql(self.databases), capture_output=True, text=True, timeout=120)
        if setup.returncode != 0:
            raise ServicesError(f"the managed PostgreSQL stand-in's roles and databases: {setup.stderr[-400:]}")

    def _redis(self, crt: Path, key: Path) -> None:
        config = self.workdir / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(redis_config(self.databases, self.address, crt, key, self.workdir))
        proc, log = self._spawn("redis", [tool("redis-server", "Debian package redis-server"), str(config)])
        self._wait("redis", proc, log, REDIS_PORT)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
