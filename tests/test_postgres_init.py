"""The rendered Postgres init against a real PostgreSQL on loopback."""

from __future__ import annotations

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
