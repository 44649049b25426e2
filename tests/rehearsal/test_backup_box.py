"""The backup, restore-test and point-in-time-recovery units run for real on a converged box
(docs/backup-rehearsal.md, steps 3 to 7).

V-EdFinance's staging VPS in the shared staging lab (``staging_rehearsal``,
tests/rehearsal/conftest.py): PostgreSQL 17 with two databases, Redis and the WAL job, all
installed by the stack's own scripts, with the lab's S3 server (moto over TLS) standing in for
R2 at the R2 endpoint the scripts name. Once both converge runs and the checks are done, the
drill starts every backup unit with ``systemctl start`` as its timer would, while a sampler in
the box reads every ``/proc/*/cmdline`` every 10 ms looking for any secret of the jobs'
environment files; then every restore test alone, all of them at once, the PITR drill (WAL
receiver, base backup, ``recovery_target_time`` between two rows), and finally a backup and a
WAL ship with the S3 server stopped; S3 is started again afterwards (empty, as moto keeps its
buckets in memory) for the drills after it. The drill records what it saw; the tests below
judge it. Marker ``rehearsal``; nothing is skipped under ``CI=true``.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import traceback
from typing import Callable

import pytest

pytestmark = pytest.mark.rehearsal

BOX = "vedfinance-staging"
PITR_JOB = f"{BOX}-wal"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PROBE_DATABASE = "vedfinance_staging"

# Runs in the box (its own python3): every 10 ms, every process's command line is compared
# with every secret of /etc/platform-backup (values of the env files' secret keys, restic
# passwords) and with the shape of a URI carrying a password. Prints a JSON summary at the end
# with the secrets redacted: programs seen, samples taken, offending command lines.
SAMPLER = r"""
import json, os, re, sys, time
stop = sys.argv[1]
secrets = set()
for name in os.listdir("/etc/platform-backup"):
    path = os.path.join("/etc/platform-backup", name)
    text = open(path).read()
    if name.endswith(".restic-password"):
        secrets.add(text.strip())
        continue
    for line in text.splitlines():
        key, _, value = line.partition("=")
        value = value.strip().strip('"').replace('\\"', '"').replace("\\\\", "\\")
        if key in ("PGPASSWORD", "REDISCLI_AUTH", "AWS_SECRET_ACCESS_KEY", "MONGO_URI",
                   "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY") and value:
            secrets.add(value)
uri = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
seen, hits, samples = set(), set(), 0
while not os.path.exists(stop):
    samples += 1
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if not cmd:
            continue
        seen.add(os.path.basename(cmd.split(" ")[0]))
        if any(s in cmd for s in secrets) or uri.search(cmd):
            for s in secrets:
                cmd = cmd.replace(s, "<secret>")
            hits.add(cmd)
    time.sleep(0.01)
print(json.dumps({"samples": samples, "secrets": len(secrets), "programs": sorted(seen),
                  "hits": sorted(hits)}))
"""


class Drill:
    """The drill on one converged box. ``execute(argv, input=None, timeout=None)`` runs a
    command in the box as root (``lab.exec``); ``stop_s3()`` stops the lab's S3 server;
    ``bucket_objects()`` returns every object of every bucket as bytes (read from the S3
    server inside the lab namespace). Every step records into ``self.seen``; a step that
    raises records its traceback under ``errors`` and the drill goes on where it can."""

    def __init__(self, execute: Callable, stop_s3: Callable[[], None],
                 bucket_objects: Callable[[], dict[str, bytes]]):
        self.execute, self.stop_s3, self.bucket_objects = execute, stop_s3, bucket_objects
        self.seen: dict = {"errors": {}, "units": 0, "timings": {}}

    # --- helpers -----------------------------------------------------------------------------
    def sh(self, script: str, timeout: float = 900, check: bool = True) -> str:
        done = self.execute(["bash", "-c", script], timeout=timeout)
        out = done.stdout.decode(errors="replace")
        if check and done.returncode != 0:
            raise AssertionError(f"{script[:300]}\nexit {done.returncode}\n{out[-2000:]}"
                                 f"\n{done.stderr.decode(errors='replace')[-3000:]}")
        return out

    def restic(self, job: str, args: str) -> str:
        return self.sh(f"set -a; . /etc/platform-backup/{job}.env; set +a; restic {args}", timeout=300)

    def start_unit(self, unit: str, timeout: float = 1200) -> dict:
        """``systemctl start UNIT`` (a oneshot: returns when it ends); its Result, exit status,
        duration and journal of this run."""
        self.seen["units"] += 1
        cursor = self.sh("journalctl -n 0 --show-cursor -q | sed -n 's/^-- cursor: //p'", check=False).strip()
        started = time.monotonic()
        done = self.execute(["systemctl", "start", unit], timeout=timeout)
        seconds = round(time.monotonic() - started, 1)
        return {"start_exit": done.returncode, "seconds": seconds, **self.unit_state(unit, cursor)}

    def unit_state(self, unit: str, cursor: str = "") -> dict:
        result = self.sh(f"systemctl show -p Result --value {unit}").strip()
        after = f"--after-cursor={shlex.quote(cursor)}" if cursor else ""
        journal = self.sh(f"journalctl -u {unit} {after} -o cat --no-pager | tail -n 60", check=False)
        return {"result": result, "journal": journal}

    def metrics(self, name: str) -> dict[str, float]:
        """A textfile metric file as node-exporter's user reads it: {series: value}."""
        text = self.sh(f"runuser -u nobody -- cat {TEXTFILE_DIR}/{name}")
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line}

    def step(self, name: str, fn: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            fn()
        except Exception:  # noqa: BLE001 - recorded; the test of this step reports it
            self.seen["errors"][name] = traceback.format_exc()[-4000:]
        self.seen["timings"][name] = round(time.monotonic() - started, 1)

    def container(self, service: str) -> str:
        cid = self.sh(f"docker ps -q --filter label=platform.service={service} | head -n 1").strip()
        assert cid, f"no running container labelled platform.service={service}"
        return cid

    def _psql(self, database: str, sql: str) -> str:
        done = self.execute(["docker", "exec", "-i", "-u", "postgres", self.pg, "psql", "-v", "ON_ERROR_STOP=1",
                             "-At", "-d", database], input=sql.encode(), timeout=120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode().strip()

    # --- the drill ---------------------------------------------------------------------------
    def run(self) -> dict:
        self.step("setup", self.setup)
        if "setup" in self.seen["errors"]:
            return self.seen
        self.sh("rm -f /run/backup-drill.stop; nohup python3 -c " + shlex.quote(SAMPLER)
                + " /run/backup-drill.stop >/run/backup-drill.sampler 2>&1 </dev/null &")
        self.step("backup", self.backups)
        self.step("restore", self.restores)
        self.step("restore_all_at_once", self.restores_at_once)
        self.step("pitr", self.pitr)
        self.step("sampler", self.stop_sampler)
        self.step("bucket", self.scan_bucket)
        self.step("scraped", self.scraped)
        self.step("s3_down", self.s3_down)
        self.step("alert", self.alert)
        return self.seen

    def prometheus(self, query: str) -> list:
        """The result of an instant query to the box's own Prometheus (the stack's container,
        on its Docker network only: asked from inside it)."""
        from urllib.parse import quote

        out = self.sh(f"docker exec {self.container('prometheus')} wget -qO- "
                      f"'http://127.0.0.1:9090/api/v1/query?query={quote(query)}'")
        return json.loads(out)["data"]["result"]

    def wait_prometheus(self, query: str, timeout: float = 180) -> tuple[list, float]:
        started = time.monotonic()
        while True:
            result = self.prometheus(query)
            if result or time.monotonic() - started > timeout:
                return result, round(time.monotonic() - started, 1)
            time.sleep(5)

    def scraped(self) -> None:
        """The WAL ship's and a backup's textfile metrics, as the stack's Prometheus scraped
        them from the stack's node-exporter."""
        newest = self.seen["pitr"]["wal_metrics"][
            f'platform_wal_archive_newest_segment_timestamp_seconds{{job="{PITR_JOB}"}}']
        wal, wal_s = self.wait_prometheus(
            f'platform_wal_archive_newest_segment_timestamp_seconds{{job="{PITR_JOB}"}} >= {newest}')
        backup, _ = self.wait_prometheus('platform_backup_success{job=~"' + BOX + '-.*"} == 1', timeout=60)
        rules = json.loads(self.sh(f"docker exec {self.container('prometheus')} wget -qO- "
                                   "http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
        self.seen["scraped"] = {"wal": wal, "wal_seconds": wal_s, "backup": backup, "newest": newest,
                                "rules": sorted(r["name"] for g in rules for r in g["rules"])}

    def alert(self) -> None:
        """After the failed backup: the stack's own rules turn it into a firing BackupFailed."""
        job = self.seen["s3_down"]["job"]
        firing, seconds = self.wait_prometheus(
            f'ALERTS{{alertname="BackupFailed",alertstate="firing",job="{job}"}}', timeout=240)
        self.seen["alert"] = {"firing": firing, "seconds": seconds}

    def tmp_listing(self) -> str:
        """/tmp and the daemon's tmp, less runc's files of the drill's own ``docker exec``."""
        return self.sh("ls -A /tmp /var/lib/docker/tmp 2>/dev/null | grep -v '^runc-process' || true")

    def setup(self) -> None:
        jobs = self.sh("cd /etc/platform-backup && ls *.env | sed 's/\\.env$//'").split()
        self.seen["jobs"] = jobs
        self.dumps = [j for j in jobs if j != PITR_JOB]
        self.pg, self.redis = self.container("postgres"), self.container("redis")
        self.token = f"probe{int(time.time())}x{id(self) % 9973}"
        self.seen["token"] = self.token
        # The application's role owns its tables (its migrations create them); the backup
        # dumps as that role.
        self._psql(PROBE_DATABASE, f"SET ROLE {PROBE_DATABASE}; CREATE TABLE IF NOT EXISTS backup_probe (id serial PRIMARY KEY, note text);"
                   f"INSERT INTO backup_probe (note) SELECT '{self.token}-' || g FROM generate_series(1, 500) g;")
        self.sh(f"docker exec {self.redis} sh -c 'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli --no-auth-warning "
                f"SET backup:probe {self.token} >/dev/null'")
        self.seen["tmp_before"] = self.tmp_listing()

    def backups(self) -> None:
        self.seen["backup"] = {}
        for job in self.dumps:
            run = self.start_unit(f"platform-backup-{job}.service")
            run["snapshots"] = json.loads(self.restic(job, f"snapshots --json --host {job}"))
            run["state_dir"] = self.sh(f"ls -A /var/lib/platform-backup/{job}").split()
            run["metrics"] = self.metrics(f"backup-{job}.prom")
            self.seen["backup"][job] = run
        self.seen["textfile_mode"] = self.sh(f"stat -c %a {TEXTFILE_DIR}").strip()
        self.seen["tmp_after"] = self.tmp_listing()

    def restores(self) -> None:
        self.seen["restore"] = {}
        for job in self.dumps:
            run = self.start_unit(f"platform-restore-test-{job}.service")
            run["metrics"] = self.metrics(f"restore-test-{job}.prom")
            self.seen["restore"][job] = run

    def restores_at_once(self) -> None:
        units = [f"platform-restore-test-{job}.service" for job in self.dumps]
        self.seen["units"] += len(units)
        cursor = self.sh("journalctl -n 0 --show-cursor -q | sed -n 's/^-- cursor: //p'", check=False).strip()
        started = time.monotonic()
        self.sh("systemctl start --no-block " + " ".join(units))
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            states = self.sh("systemctl is-active " + " ".join(units), check=False).split()
            if all(s in ("inactive", "failed") for s in states):
                break
            time.sleep(3)
        self.seen["restore_all"] = {"seconds": round(time.monotonic() - started, 1),
                                    "units": {u: self.unit_state(u, cursor) for u in units}}

    def pitr(self) -> None:
        job = PITR_JOB
        seen = self.seen["pitr"] = {}
        seen["receiver"] = self.sh(f"systemctl is-active platform-wal-receive-{job}.service", check=False).strip()
        seen["slot"] = self._psql("postgres", "SELECT slot_name || ':' || active FROM pg_replication_slots")
        seen["base"] = self.start_unit(f"platform-base-backup-{job}.service")
        self._psql(PROBE_DATABASE, f"SET ROLE {PROBE_DATABASE}; CREATE TABLE IF NOT EXISTS pitr_probe (id serial PRIMARY KEY, note text);"
                   "INSERT INTO pitr_probe (note) VALUES ('before');")
        target = self._psql(PROBE_DATABASE, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        seen["target"] = target
        time.sleep(2)
        self._psql(PROBE_DATABASE, f"SET ROLE {PROBE_DATABASE}; INSERT INTO pitr_probe (note) VALUES ('after');")
        time.sleep(2)  # pg_receivewal --synchronous flushes within its status interval
        seen["ship"] = self.start_unit(f"platform-wal-ship-{job}.service")
        seen["wal_metrics"] = self.metrics(f"wal-{job}.prom")
        seen["wal_metrics_read_at"] = time.time()
        self.sh(f"systemctl set-environment PITR_TARGET_TIME={shlex.quote(target)} "
                f"PITR_PROBE_DATABASE={PROBE_DATABASE} "
                + shlex.quote("PITR_PROBE_SQL=SELECT string_agg(note, ',' ORDER BY id) FROM pitr_probe"))
        try:
            seen["test"] = self.start_unit(f"platform-pitr-test-{job}.service")
        finally:
            self.sh("systemctl unset-environment PITR_TARGET_TIME PITR_PROBE_DATABASE PITR_PROBE_SQL")
        seen["test"]["metrics"] = self.metrics(f"pitr-test-{job}.prom")

    def stop_sampler(self) -> None:
        self.sh("touch /run/backup-drill.stop; for _ in $(seq 1 100); do "
                "[ -s /run/backup-drill.sampler ] && break; sleep 0.2; done")
        self.seen["sampler"] = json.loads(self.sh("cat /run/backup-drill.sampler"))

    def scan_bucket(self) -> None:
        objects = self.bucket_objects()
        self.seen["bucket"] = {"objects": len(objects), "bytes": sum(len(v) for v in objects.values()),
                               "with_token": sorted(k for k, v in objects.items() if self.token.encode() in v)}

    def s3_down(self) -> None:
        job = next(j for j in self.dumps if j.endswith(PROBE_DATABASE.replace("_", "-")))
        before = self.metrics(f"backup-{job}.prom")
        wal_before = self.metrics(f"wal-{PITR_JOB}.prom")
        self.stop_s3()
        run = self.start_unit(f"platform-backup-{job}.service", timeout=3600)
        run["metrics_before"], run["metrics"] = before, self.metrics(f"backup-{job}.prom")
        ship = self.start_unit(f"platform-wal-ship-{PITR_JOB}.service", timeout=3600)
        ship["metrics_before"], ship["metrics"] = wal_before, self.metrics(f"wal-{PITR_JOB}.prom")
        self.seen["s3_down"] = {"job": job, "backup": run, "ship": ship}


def moto_objects(lab, address: str) -> dict[str, bytes]:
    """Every object of every bucket on the lab's S3 server (moto), read with boto3 inside the
    lab namespace (the server's certificate is the lab CA's; not verified: only bytes matter)."""
    import subprocess
    import sys

    script = ("import boto3, json, base64, urllib3; urllib3.disable_warnings();"
              f"s3 = boto3.client('s3', endpoint_url='https://{address}', aws_access_key_id='x',"
              "aws_secret_access_key='x', region_name='auto', verify=False);"
              "out = {};\n"
              "for b in s3.list_buckets()['Buckets']:\n"
              "  for page in s3.get_paginator('list_objects_v2').paginate(Bucket=b['Name']):\n"
              "    for o in page.get('Contents', []):\n"
              "      out[b['Name'] + '/' + o['Key']] = base64.b64encode("
              "s3.get_object(Bucket=b['Name'], Key=o['Key'])['Body'].read()).decode()\n"
              "print(json.dumps(out))")
    import base64

    done = subprocess.run(lab.netns_argv([sys.executable, "-c", script]), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return {k: base64.b64decode(v) for k, v in json.loads(done.stdout).items()}


@pytest.fixture(scope="module")
def drill(staging_rehearsal):
    from rehearsal.services import ADDRESSES

    held = staging_rehearsal
    seen: dict = {}
    started = time.monotonic()
    if held.report.error is None:
        lab, services = held.lab, held.lab_services
        d = Drill(lambda argv, input=None, timeout=None: lab.exec(BOX, argv, input=input, timeout=timeout),
                  lambda: services.stop_service("s3"), lambda: moto_objects(lab, ADDRESSES["s3"]))
        try:
            seen.update(d.run())
        finally:
            # The tests after this module find the lab's S3 answering, as before the drill.
            if not services.is_running("s3"):
                services.start_service("s3")
    report = held.report
    seen["report"] = report
    seen["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nbackup box: {seen['seconds']} s total; timings {report.timings}; drill {seen.get('timings')}; "
          f"units run: {seen.get('units')}")
    pitr = seen.get("pitr") or {}
    if "wal_metrics" in pitr:
        labels = f'{{job="{PITR_JOB}"}}'
        wal = pitr["wal_metrics"]
        print(f"WAL: RPO {wal[f'platform_wal_archive_rpo_seconds{labels}']:.0f} s, ship interval "
              f"{wal[f'platform_wal_archive_rpo_seconds{labels}'] / 2:.0f} s, ship run "
              f"{pitr['ship']['seconds']} s, newest segment "
              f"{pitr['wal_metrics_read_at'] - wal[f'platform_wal_archive_newest_segment_timestamp_seconds{labels}']:.0f} s "
              f"old when read; base backup {pitr['base']['seconds']} s; PITR test {pitr['test']['seconds']} s")
    return seen


def _no_error(seen: dict, *steps: str) -> None:
    report = seen["report"]
    assert report.error is None, report.text()
    assert "errors" in seen, "the drill did not run (the box did not converge?)\n" + report.text()
    for step in ("setup", *steps):
        assert step not in seen["errors"], f"step {step}:\n{seen['errors'][step]}"


def test_the_box_converges_and_installs_every_backup_job(drill):
    _no_error(drill)
    assert sorted(drill["jobs"]) == sorted([f"{BOX}-redis", f"{BOX}-vedfinance-dev",
                                            f"{BOX}-vedfinance-staging", PITR_JOB])


def test_every_backup_unit_succeeds_and_stores_an_encrypted_snapshot_of_dump_and_counts(drill):
    _no_error(drill, "backup", "bucket")
    for job, run in drill["backup"].items():
        assert run["result"] == "success" and run["start_exit"] == 0, (job, run["journal"])
        paths = {p for s in run["snapshots"] for p in s["paths"]}
        assert paths == {f"/{job}.dump", f"/{job}.counts"}, (job, paths)
        assert run["state_dir"] == ["cache"], (job, run["state_dir"])
        labels = f'{{job="{job}"}}'
        assert run["metrics"][f"platform_backup_success{labels}"] == 1, run["metrics"]
        assert run["metrics"][f"platform_backup_last_size_bytes{labels}"] > 0, run["metrics"]
    assert drill["textfile_mode"] == "755"
    assert drill["tmp_after"] == drill["tmp_before"], "a backup left files in /tmp or /var/lib/docker/tmp"
    # The probe rows and the Redis key went to R2 only as restic's ciphertext.
    assert drill["bucket"]["objects"] > 0 and drill["bucket"]["with_token"] == [], drill["bucket"]


def test_no_secret_appears_on_any_command_line_while_the_units_run(drill):
    _no_error(drill, "sampler")
    sampler = drill["sampler"]
    assert sampler["hits"] == [], sampler["hits"]
    # The sampler saw the jobs' processes, so it looked while they ran.
    assert sampler["samples"] > 100 and sampler["secrets"] >= 8, sampler
    for program in ("restic", "pg_dump", "redis-cli", "pg_restore", "pg_basebackup"):
        assert program in sampler["programs"], (program, sampler["programs"])


def test_every_restore_test_passes_and_compares_counts(drill):
    _no_error(drill, "restore")
    for job, run in drill["restore"].items():
        assert run["result"] == "success", (job, run["journal"])
        match = re.search(rf"{re.escape(job)}: restored run-\S+; (\d+) (tables|databases) match", run["journal"])
        assert match, (job, run["journal"])  # 0 for the dev database, which has no table
        assert run["metrics"][f'platform_restore_test_success{{job="{job}"}}'] == 1, run["metrics"]
    staging = drill["restore"][f"{BOX}-vedfinance-staging"]["journal"]
    assert re.search(r"restored run-\S+; [1-9]\d* tables match", staging), staging


def test_all_restore_units_of_the_host_pass_when_started_at_once(drill):
    _no_error(drill, "restore_all_at_once")
    for unit, state in drill["restore_all"]["units"].items():
        assert state["result"] == "success", (unit, state["journal"])
        assert "already allocated" not in state["journal"]


def test_point_in_time_recovery_stops_between_the_two_rows(drill):
    _no_error(drill, "pitr")
    pitr = drill["pitr"]
    assert pitr["receiver"] == "active"
    assert "platform_wal:true" in pitr["slot"].split(), pitr["slot"]
    assert pitr["base"]["result"] == "success", pitr["base"]["journal"]
    assert pitr["ship"]["result"] == "success", pitr["ship"]["journal"]
    assert pitr["test"]["result"] == "success", pitr["test"]["journal"]
    assert re.search(r"^probe: before$", pitr["test"]["journal"], re.M), pitr["test"]["journal"]
    assert pitr["test"]["metrics"][f'platform_pitr_test_success{{job="{PITR_JOB}"}}'] == 1
    labels = f'{{job="{PITR_JOB}"}}'
    newest = pitr["wal_metrics"][f"platform_wal_archive_newest_segment_timestamp_seconds{labels}"]
    assert pitr["wal_metrics_read_at"] - newest < 60, pitr["wal_metrics"]
    assert pitr["wal_metrics"][f"platform_wal_archive_success{labels}"] == 1


def test_the_stacks_prometheus_scrapes_the_wal_and_backup_metrics(drill):
    _no_error(drill, "scraped")
    scraped = drill["scraped"]
    assert len(scraped["wal"]) == 1, scraped
    assert {"WALArchiveStalled", "PITRTestFailed", "BackupFailed"} <= set(scraped["rules"]), scraped["rules"]
    assert {r["metric"]["job"] for r in scraped["backup"]} == {f"{BOX}-redis", f"{BOX}-vedfinance-dev",
                                                              f"{BOX}-vedfinance-staging", PITR_JOB}, scraped


def test_a_failed_backup_fires_the_stacks_backup_failed_alert(drill):
    _no_error(drill, "alert")
    assert len(drill["alert"]["firing"]) == 1, drill["alert"]


def test_a_backup_fails_and_says_so_when_s3_is_down(drill):
    _no_error(drill, "s3_down")
    down = drill["s3_down"]
    job, run = down["job"], down["backup"]
    labels = f'{{job="{job}"}}'
    assert run["result"] == "exit-code", run["journal"]
    assert run["metrics"][f"platform_backup_success{labels}"] == 0
    kept = f"platform_backup_last_success_timestamp_seconds{labels}"
    assert run["metrics"][kept] == run["metrics_before"][kept] > 0
    ship, wal = down["ship"], f'{{job="{PITR_JOB}"}}'
    assert ship["result"] == "exit-code", ship["journal"]
    assert ship["metrics"][f"platform_wal_archive_success{wal}"] == 0
    assert (ship["metrics"][f"platform_wal_archive_last_success_timestamp_seconds{wal}"]
            == ship["metrics_before"][f"platform_wal_archive_last_success_timestamp_seconds{wal}"])
    # What WALArchiveStalled compares the last success with is still reported by a failed run.
    assert ship["metrics"][f"platform_wal_archive_rpo_seconds{wal}"] == 300
    assert ship["metrics"][f"platform_wal_receiver_up{wal}"] == 1
