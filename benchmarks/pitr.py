"""Measure WAL archiving under a steady write load and the effective RPO it gives.

    python -m benchmarks.pitr [--seconds 60] [--rpo-minutes 1]

PostgreSQL and moto (standing in for R2) on loopback; the rendered WAL receiver runs while
pgbench writes (2 clients); the rendered ship script runs every half RPO, as its timer does.
Reports pg_receivewal's flush lag (pg_stat_replication), each ship run's duration, the
effective RPO = ship interval + the slowest ship run, and the point-in-time restore test's time
to a target in the middle of the load (written to ``benchmarks/results.json`` as ``pitr``).
Prints Markdown for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from components.backupscripts import BackupJob, connection_environment, scripts, ship_interval_seconds
from tests.realtools import PostgresServer, S3Server


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rpo-minutes", type=int, default=1)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    base.chmod(0o711)
    source = PostgresServer(base / "source").start()
    s3 = S3Server().start()
    receiver = None
    try:
        (base / "password").write_text("benchmark\n")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "RESTIC_REPOSITORY": f"s3:http://127.0.0.1:{s3.port}/pitr",
               "RESTIC_PASSWORD_FILE": str(base / "password"),
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "STATE_DIRECTORY": str(base / "s"), "TEXTFILE_DIR": str(base / "metrics"),
               **connection_environment("pitr", f"{source.uri}/postgres")}
        job = BackupJob(job="bench-wal", kind="pitr", retention_days=7, mode="host", rpo_minutes=args.rpo_minutes)
        paths = {}
        for name, text in scripts(job).items():
            paths[name] = base / name
            paths[name].write_text(text)
        subprocess.run(["pgbench", "-i", "-s", "10", "-q", f"{source.uri}/postgres"], check=True, capture_output=True)
        receiver = subprocess.Popen(["bash", str(paths["platform-wal-receive-bench-wal"])], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(3)
        base_backup = subprocess.run(["bash", str(paths["platform-base-backup-bench-wal"])], env=env,
                                     capture_output=True, text=True)
        if base_backup.returncode != 0:
            raise SystemExit(base_backup.stderr)
        load_started = time.monotonic()
        target = None
        load = subprocess.Popen(["pgbench", "-c", "2", "-T", str(args.seconds), "-R", "200", f"{source.uri}/postgres"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        interval = ship_interval_seconds(args.rpo_minutes)
        ships, lags = [], []
        next_ship = time.monotonic()
        while load.poll() is None:
            lag = source.sql("postgres", "SELECT coalesce(extract(epoch FROM max(flush_lag)), 0) FROM pg_stat_replication")
            lags.append(float(lag))
            if target is None and time.monotonic() - load_started > args.seconds / 2:
                target = source.sql("postgres", "SELECT to_char(now() AT TIME ZONE 'UTC', "
                                                "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
            if time.monotonic() >= next_ship:
                next_ship += interval
                started = time.perf_counter()
                result = subprocess.run(["bash", str(paths["platform-wal-ship-bench-wal"])], env=env,
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    raise SystemExit(result.stderr)
                ships.append(time.perf_counter() - started)
            time.sleep(1)
        final = subprocess.run(["bash", str(paths["platform-wal-ship-bench-wal"])], env=env,
                               capture_output=True, text=True)
        if final.returncode != 0:
            raise SystemExit(final.stderr)
        started = time.perf_counter()
        pitr = subprocess.run(["bash", str(paths["platform-pitr-test-bench-wal"])],
                              env={**env, "PITR_TARGET_TIME": target}, capture_output=True, text=True)
        restore = time.perf_counter() - started
        if pitr.returncode != 0:
            raise SystemExit(pitr.stderr + pitr.stdout)
        worst = max(ships)
        print("| write load | pg_receivewal flush lag (max) | ship runs | ship run (median / max) | ship interval | effective RPO | declared RPO | PITR test (to mid-load) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        ships_sorted = sorted(ships)
        print(f"| pgbench 2 clients, 200 tps, {args.seconds} s | {max(lags) * 1000:.0f} ms | {len(ships)} | "
              f"{ships_sorted[len(ships) // 2]:.1f} s / {worst:.1f} s | {interval} s | {interval + worst:.0f} s | "
              f"{args.rpo_minutes * 60} s | {restore:.1f} s |")
        results = Path(__file__).parent / "results.json"
        data = json.loads(results.read_text()) if results.exists() else {"restore_seconds": {}}
        data["restore_seconds"]["pitr"] = round(restore, 1)
        data.setdefault("notes", {})["pitr"] = (f"pgbench scale 10, {args.seconds} s of load, "
                                                "point-in-time restore test to mid-load")
        results.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return 0
    finally:
        if receiver is not None:
            os.killpg(receiver.pid, signal.SIGTERM)
            receiver.wait(timeout=30)
        s3.stop()
        source.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
