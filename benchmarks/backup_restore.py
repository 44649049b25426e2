"""Measure the restic backup and restore test end to end on this machine, beside the old
pipeline (a whole ``pg_dump -Fc`` file uploaded every day) as the baseline.

    python -m benchmarks.backup_restore [--rows N]

Starts PostgreSQL and an S3 server (moto, standing in for R2) on loopback, loads ``N`` rows,
times the rendered backup script (day 1), changes 1% of the rows, times day 2 and reads how many
bytes restic added, then times the restore test (restic dump, pg_restore into a scratch server,
counts). Prints Markdown rows for the README and writes ``benchmarks/results.json`` (the
restore time the synth reports next to each datastore's RPO).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.backupscripts import BackupJob, connection_environment, render_backup_script, render_restore_test_script
from tests.realtools import PostgresServer, S3Server


def _stored_bytes(port: int, bucket: str) -> int:
    """Bytes the repository's bucket holds: what restic actually uploaded (compressed and
    encrypted), which its ``data_added`` (uncompressed, in restic 0.14) is not."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    return sum(o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in page.get("Contents", []))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    base.chmod(0o711)
    source = PostgresServer(base / "source").start()
    s3 = S3Server().start()
    try:
        source.sql("postgres", "CREATE DATABASE bench")
        source.sql("bench", "CREATE TABLE events (id bigserial PRIMARY KEY, user_id int, "
                            "amount numeric(12,2), note text, created timestamptz DEFAULT now())")
        source.sql("bench", f"INSERT INTO events (user_id, amount, note) SELECT g % 9973, g * 0.37, "
                            f"md5(g::text) FROM generate_series(1, {args.rows}) g")
        size = int(source.sql("bench", "SELECT pg_database_size('bench')"))
        (base / "password").write_text("benchmark\n")
        env = {**os.environ, **s3.rclone_env(),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "RESTIC_REPOSITORY": f"s3:http://127.0.0.1:{s3.port}/bench",
               "RESTIC_PASSWORD_FILE": str(base / "password"),
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "STATE_DIRECTORY": str(base / "s"), "TEXTFILE_DIR": str(base / "metrics"),
               **connection_environment("postgres", f"{source.uri}/bench")}
        job = BackupJob(job="bench", kind="postgres", retention_days=7, mode="host")

        def timed(script: str) -> float:
            path = base / "run.sh"
            path.write_text(script)
            started = time.perf_counter()
            result = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            return time.perf_counter() - started

        # Baseline: the old pipeline's shape, a whole custom-format dump uploaded every day.
        subprocess.run(["rclone", "mkdir", "r2:baseline"], env=env, check=True)
        started = time.perf_counter()
        subprocess.run(["pg_dump", "-Fc", "-f", str(base / "bench.dump"), f"{source.uri}/bench"], check=True)
        subprocess.run(["rclone", "copy", str(base / "bench.dump"), "r2:baseline"], env=env, check=True)
        baseline_backup = time.perf_counter() - started
        dump_size = (base / "bench.dump").stat().st_size

        day1 = timed(render_backup_script(job))
        day1_added = _stored_bytes(s3.port, "bench")
        # Day 2: 1% of the rows changed where a day's changes usually are (the newest rows);
        # day 3: 1% changed spread evenly over the table (every 100th row), the worst case.
        source.sql("bench", f"UPDATE events SET amount = amount + 1 WHERE id > {args.rows - args.rows // 100}")
        day2 = timed(render_backup_script(job))
        day2_added = _stored_bytes(s3.port, "bench") - day1_added
        source.sql("bench", "UPDATE events SET amount = amount + 1 WHERE id % 100 = 0")
        day3 = timed(render_backup_script(job))
        day3_added = _stored_bytes(s3.port, "bench") - day1_added - day2_added
        restore = timed(render_restore_test_script(job))

        print("| rows | database size | `pg_dump -Fc` (baseline) | baseline: dump + upload, every day | restic day 1: time, uploaded | day 2, newest 1% changed: uploaded (vs baseline) | day 3, every 100th row changed: uploaded (vs baseline) | restore test |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {args.rows:,} | {size / 2**20:.0f} MiB | {dump_size / 2**20:.1f} MiB | {baseline_backup:.1f} s | "
              f"{day1:.1f} s, {day1_added / 2**20:.1f} MiB | {day2_added / 2**20:.2f} MiB ({day2_added / dump_size:.1%}), {day2:.1f} s | "
              f"{day3_added / 2**20:.2f} MiB ({day3_added / dump_size:.1%}), {day3:.1f} s | {restore:.1f} s |")
        results = Path(__file__).parent / "results.json"
        data = json.loads(results.read_text()) if results.exists() else {"restore_seconds": {}}
        data["restore_seconds"]["postgres"] = round(restore, 1)
        data.setdefault("notes", {})["postgres"] = f"{args.rows} rows, restore test on a 2-core build machine"
        results.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return 0
    finally:
        s3.stop()
        source.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
