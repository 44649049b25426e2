"""Measure the MinIO mirror backup and its restore test on this machine.

    python -m benchmarks.mirror [--objects N] [--size-kib K] [--changed-percent P]

Starts an S3 server on loopback standing in for both MinIO and R2 (as the tests do), fills a
bucket with ``N`` objects of ``K`` KiB, then times the rendered mirror backup (first, full run),
a second run after ``P`` percent of the objects changed (the daily case), and the restore test
(download everything, compare with the manifest). Prints one Markdown table row for the README.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.backupscripts import (BackupJob, connection_environment, render_backup_script,
                                      render_restore_test_script)
from tests.realtools import S3Server


def _timed(script: str, env: dict[str, str], path: Path) -> float:
    path.write_text(script)
    started = time.perf_counter()
    result = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size-kib", type=int, default=50)
    parser.add_argument("--changed-percent", type=float, default=1.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="platform-bench-mirror-"))
    s3 = S3Server().start()
    try:
        (base / "password").write_text("benchmark\n")
        env = {**os.environ, **s3.rclone_env(),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "RESTIC_REPOSITORY": f"s3:http://127.0.0.1:{s3.port}/vault",
               "RESTIC_PASSWORD_FILE": str(base / "password"),
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "STATE_DIRECTORY": str(base / "state"), "TEXTFILE_DIR": str(base / "metrics"),
               **connection_environment("minio", f"http://test:test@127.0.0.1:{s3.port}/files"),
               "RCLONE_CONFIG_SRC_PROVIDER": "Other", "RCLONE_CONFIG_SRC_FORCE_PATH_STYLE": "true"}
        local = base / "objects"
        for i in range(args.objects):
            folder = local / ("CERTIFICATES" if i % 2 else "PFC_UPLOADS") / f"{i % 40:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"object-{i:06d}.bin").write_bytes(os.urandom(args.size_kib * 1024))
        subprocess.run(["rclone", "mkdir", "r2:files"], env=env, check=True)
        subprocess.run(["rclone", "copy", str(local), "r2:files", "--transfers", "16"], env=env, check=True)
        job = BackupJob(job="bench-files", kind="minio", retention_days=7, mode="host")
        full = _timed(render_backup_script(job), env, base / "backup.sh")
        changed = max(1, int(args.objects * args.changed_percent / 100))
        for i in range(changed):
            target = f"r2:files/CERTIFICATES/{(2 * i + 1) % 40:02d}/object-{2 * i + 1:06d}.bin"
            subprocess.run(["rclone", "rcat", target], env=env, input=os.urandom(args.size_kib * 1024), check=True)
        time.sleep(1.1)  # a new stamp for the second run
        daily = _timed(render_backup_script(job), env, base / "backup.sh")
        added = next(line for line in (base / "metrics" / "backup-bench-files.prom").read_text().splitlines()
                     if line.startswith("platform_backup_last_added_bytes")).rsplit(" ", 1)[1]
        restore = _timed(render_restore_test_script(job), env, base / "restore.sh")
        total_mib = args.objects * args.size_kib / 1024
        print("| objects | bucket size | first mirror | daily mirror (changed objects): time, uploaded | restore test |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {args.objects:,} | {total_mib:.0f} MiB | {full:.1f} s | {daily:.1f} s ({changed}), "
              f"{int(float(added)) / 2**20:.1f} MiB | {restore:.1f} s |")
        return 0
    finally:
        s3.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    sys.exit(main())
