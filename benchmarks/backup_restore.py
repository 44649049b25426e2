"""Measure the backup and the restore test end to end on this machine.

    python -m benchmarks.backup_restore [--rows N]

Starts PostgreSQL and an S3 server on loopback (as the tests do), loads ``N`` rows, then times
the rendered backup script (dump, checksums, rclone crypt upload) and the restore-test script
(download, verify, pg_restore, row counts). Prints one Markdown table row for the README.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.backupscripts import BackupJob, render_backup_script, render_restore_test_script
from tests.realtools import PostgresServer, S3Server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    base.chmod(0o711)
    source = PostgresServer(base / "source").start()
    scratch = PostgresServer(base / "scratch").start()
    s3 = S3Server().start()
    try:
        source.sql("postgres", "CREATE DATABASE bench")
        source.sql("bench", "CREATE TABLE events (id bigserial PRIMARY KEY, user_id int, "
                            "amount numeric(12,2), note text, created timestamptz DEFAULT now())")
        source.sql("bench", f"INSERT INTO events (user_id, amount, note) SELECT g % 9973, g * 0.37, "
                            f"md5(g::text) FROM generate_series(1, {args.rows}) g")
        size = int(source.sql("bench", "SELECT pg_database_size('bench')"))
        env = {**os.environ, **s3.rclone_env(),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "BACKUP_PASSPHRASE": "benchmark", "BACKUP_BUCKET": "bench",
               "BACKUP_SOURCE_URI": f"{source.uri}/bench", "RESTORE_SERVER_URI": scratch.uri,
               "TEXTFILE_DIR": str(base / "metrics")}
        subprocess.run(["rclone", "mkdir", "r2:bench"], env=env, check=True)
        job = BackupJob(job="bench", kind="postgres", retention_days=7, mode="host")
        timings = {}
        for role, script in (("backup", render_backup_script(job)),
                             ("restore", render_restore_test_script(job))):
            path = base / f"{role}.sh"
            path.write_text(script)
            started = time.perf_counter()
            result = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True)
            timings[role] = time.perf_counter() - started
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
        dump_size = next(line for line in (base / "metrics" / "backup-bench.prom").read_text().splitlines()
                         if line.startswith("platform_backup_last_size_bytes")).rsplit(" ", 1)[1]
        print("| rows | database size | dump size | backup (dump + encrypt + upload) | restore test (download + verify + restore + compare) |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {args.rows:,} | {size / 2**20:.0f} MiB | {int(dump_size) / 2**20:.0f} MiB | "
              f"{timings['backup']:.1f} s | {timings['restore']:.1f} s |")
        return 0
    finally:
        s3.stop()
        source.stop()
        scratch.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
