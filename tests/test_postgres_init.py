"""The rendered Postgres init against a real PostgreSQL on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components.postgres_init import render_init_sql
from tests.conftest import require_tool
from tests.realtools import PostgresServer

DATABASES = {"vedfinance_dev": "vedfinance_dev", "vedfinance_staging": "vedfinance_staging",
             "pencom_payments": "payments"}
PASSWORDS = {"vedfinance_dev": "dev-pass", "vedfinance_staging": "stag'ing-pass", "payments": "pay"}


@pytest.fixture(scope="module")
def server():
    require_tool("psql", "Debian package postgresql-client")
    base = Path(tempfile.mkdtemp(prefix="platform-pg-"))
    base.chmod(0o711)
    pg = PostgresServer(base / "init").start()
    # Password authentication over TCP, so the test proves what a service's role can reach.
    hba = base / "init" / "data" / "pg_hba.conf"
    subprocess.run(["runuser", "-u", "postgres", "--", "sh", "-c",
                    f"printf 'local all all trust\\nhost all postgres 127.0.0.1/32 trust\\n"
                    f"host all all 127.0.0.1/32 scram-sha-256\\n' > {hba}"] if pg.as_root else
                   ["sh", "-c", f"printf 'local all all trust\\nhost all postgres 127.0.0.1/32 trust\\n"
                    f"host all all 127.0.0.1/32 scram-sha-256\\n' > {hba}"], check=True)
    pg.sql("postgres", "SELECT pg_reload_conf()")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _apply(server, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "--no-psqlrc", "-q", f"{server.uri}/postgres"], input=sql,
                          capture_output=True, text=True, timeout=60)


def _connect(server, role, password, database) -> subprocess.CompletedProcess:
    uri = f"postgresql://{role}@127.0.0.1:{server.port}/{database}"
    return subprocess.run(["psql", "--no-psqlrc", "-At", uri, "-c", "SELECT current_database()"],
                          capture_output=True, text=True, timeout=30, env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"})


@pytest.mark.realtool
def test_init_creates_every_database_and_role_and_is_idempotent(server):
    sql = render_init_sql(DATABASES, PASSWORDS)
    first = _apply(server, sql)
    assert first.returncode == 0, first.stderr
    second = _apply(server, sql)
    assert second.returncode == 0, second.stderr
    databases = set(server.sql("postgres", "SELECT datname FROM pg_database").split())
    assert set(DATABASES) <= databases
    roles = set(server.sql("postgres", "SELECT rolname FROM pg_roles").split())
    assert set(PASSWORDS) <= roles
    assert server.sql("postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = 'payments'") == "f"


@pytest.mark.realtool
def test_each_role_reaches_only_its_own_database(server):
    assert _apply(server, render_init_sql(DATABASES, PASSWORDS)).returncode == 0
    for database, role in DATABASES.items():
        own = _connect(server, role, PASSWORDS[role], database)
        assert own.returncode == 0 and own.stdout.strip() == database, own.stderr
        for other in set(DATABASES) - {database}:
            denied = _connect(server, role, PASSWORDS[role], other)
            assert denied.returncode != 0 and "permission denied" in denied.stderr, (role, other)
    wrong = _connect(server, "payments", "not-the-password", "pencom_payments")
    assert wrong.returncode != 0


@pytest.mark.fast
def test_identifiers_are_checked():
    with pytest.raises(ValueError, match="not a plain identifier"):
        render_init_sql({"db; DROP TABLE x": "r"}, {"r": "p"})
    with pytest.raises(ValueError, match="no password for roles"):
        render_init_sql({"db": "r"}, {})


@pytest.mark.realtool
def test_a_reader_role_reads_but_cannot_write_or_reach_other_databases(server):
    databases = {"pencom_compliance": "compliance", "pencom_payments": "payments"}
    passwords = {"compliance": "c-pass", "payments": "pay", "external_gateway_ro": "gw-pass"}
    sql = render_init_sql(databases, passwords, readers={"pencom_compliance": ["external_gateway_ro"]})
    assert _apply(server, sql).returncode == 0
    owner = f"postgresql://compliance@127.0.0.1:{server.port}/pencom_compliance"
    made_later = subprocess.run(["psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", owner, "-c",
                                 "CREATE TABLE contributions (id int); INSERT INTO contributions VALUES (1), (2)"],
                                env={"PGPASSWORD": "c-pass", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert made_later.returncode == 0, made_later.stderr

    def as_reader(database, statement):
        uri = f"postgresql://external_gateway_ro@127.0.0.1:{server.port}/{database}"
        return subprocess.run(["psql", "--no-psqlrc", "-At", "-v", "ON_ERROR_STOP=1", uri, "-c", statement],
                              env={"PGPASSWORD": "gw-pass", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)

    read = as_reader("pencom_compliance", "SELECT count(*) FROM contributions")
    assert read.returncode == 0 and read.stdout.strip() == "2", read.stderr
    write = as_reader("pencom_compliance", "INSERT INTO contributions VALUES (3)")
    assert write.returncode != 0 and "permission denied" in write.stderr
    other = as_reader("pencom_payments", "SELECT 1")
    assert other.returncode != 0 and "permission denied" in other.stderr
    assert _apply(server, sql).returncode == 0, "idempotent with readers too"


@pytest.mark.realtool
def test_the_pencom_stack_init_gives_each_service_url_its_own_database_only(server, tmp_path):
    """The SQL and the connection URLs the committed Pencom stack deploys, taken from the synth:
    every URL's credentials reach its database and no other; the waiver's URL only reads."""
    from urllib.parse import urlsplit

    from synth.state import State
    from tests.conftest import synth_once
    from tests.test_pencom import _pencom_only

    state = State(synth_once("prod", document=_pencom_only("prod"), reveal_secrets=True))
    script = state.named("pencom-prod-postgres-init", "command:remote:Command")["inputs"]["stdin"]
    sql = script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
    applied = _apply(server, sql)
    assert applied.returncode == 0, applied.stderr
    urls = {}
    for container in state.of_type("docker:index/container:Container"):
        if container["name"].startswith("pencom-prod-") and isinstance(container["inputs"]["envs"], list):
            for entry in container["inputs"]["envs"]:
                key, _, value = entry.partition("=")
                if value.startswith("postgresql://"):
                    urls[(container["name"], key)] = urlsplit(value)
    assert len(urls) == 6  # five owners and the external-gateway waiver
    databases = {u.path.lstrip("/") for u in urls.values()}
    for (service, key), url in urls.items():
        for database in databases:
            result = _connect(server, url.username, url.password, database)
            if database == url.path.lstrip("/"):
                assert result.returncode == 0, (service, result.stderr)
            else:
                assert result.returncode != 0 and "permission denied" in result.stderr, (service, database)
    reader = urls[("pencom-prod-edge-external-gateway", "COMPLIANCE_DATABASE_URL")]
    uri = f"postgresql://{reader.username}@127.0.0.1:{server.port}/pencom_compliance"
    write = subprocess.run(["psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", uri, "-c", "CREATE TABLE t (id int)"],
                           env={"PGPASSWORD": reader.password, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert write.returncode != 0 and "permission denied" in write.stderr


@pytest.fixture(scope="module")
def tls_server():
    """A server with the stacks' TLS settings and the program's own pg_hba.conf (hba_file)."""
    require_tool("psql", "Debian package postgresql-client")
    require_tool("openssl", "Debian package openssl")
    from components.postgres_init import render_pg_hba
    from tests.realtools import _postgres_bin, self_signed

    base = Path(tempfile.mkdtemp(prefix="platform-pg-tls-"))
    base.chmod(0o711)
    pg = PostgresServer(base / "tls").start()
    pg.sql("postgres", "CREATE ROLE app LOGIN PASSWORD 'app-pass'; "
                       "CREATE ROLE wal LOGIN REPLICATION PASSWORD 'wal-pass'")
    pg.stop()
    conf = base / "tls" / "conf"
    conf.mkdir()
    cert, key = self_signed(conf, ["127.0.0.1"])
    key.chmod(0o600)
    (conf / "pg_hba.conf").write_text(render_pg_hba())
    if pg.owner is not None:
        for path in (conf, cert, key, conf / "pg_hba.conf"):
            os.chown(path, pg.owner.pw_uid, pg.owner.pw_gid)
    result = pg._run(_postgres_bin("pg_ctl"), "-D", str(pg.data), "-w", "-l", str(pg.base / "server.log"),
                     "-o", f"-p {pg.port} -k {pg.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                     f"-c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} "
                     f"-c ssl_min_protocol_version=TLSv1.2 -c hba_file={conf / 'pg_hba.conf'}", "start")
    assert result.returncode == 0, result.stderr + (pg.base / "server.log").read_text()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _tcp(server, role: str, password: str, sslmode: str, *extra: str) -> subprocess.CompletedProcess:
    uri = f"postgresql://{role}@127.0.0.1:{server.port}/postgres?sslmode={sslmode}"
    return subprocess.run(["psql", "--no-psqlrc", "-At", uri, "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", *extra],
                          capture_output=True, text=True, timeout=30,
                          env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"})


@pytest.mark.realtool
@pytest.mark.parametrize("role,password", [("app", "app-pass"), ("postgres", "")])
def test_plaintext_is_rejected_and_tls_is_required(tls_server, role, password):
    """The staging matrix's finding: V-EdFinance's Postgres accepted ``sslmode=disable``. With
    the program's pg_hba.conf every TCP connection needs TLS, the superuser's too."""
    plain = _tcp(tls_server, role, password, "disable")
    assert plain.returncode != 0 and "no encryption" in plain.stderr, plain.stdout + plain.stderr
    if role == "app":
        over_tls = _tcp(tls_server, role, password, "require")
        assert over_tls.returncode == 0 and over_tls.stdout.strip() == "t", over_tls.stderr
        wrong = _tcp(tls_server, role, "not-the-password", "require")
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr


@pytest.mark.realtool
def test_replication_needs_tls_too(tls_server):
    """pg_receivewal's connection (the WAL archive) is a replication connection: its own lines."""
    uri = f"postgresql://wal@127.0.0.1:{tls_server.port}/postgres?replication=database"
    for sslmode, works in (("disable", False), ("require", True)):
        result = subprocess.run(["psql", "--no-psqlrc", "-At", f"{uri}&sslmode={sslmode}", "-c", "IDENTIFY_SYSTEM"],
                                capture_output=True, text=True, timeout=30,
                                env={"PGPASSWORD": "wal-pass", "PATH": "/usr/bin:/bin"})
        assert (result.returncode == 0) == works, (sslmode, result.stderr)
