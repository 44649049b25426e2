"""The backup drill on a converged lab box (docs/backup-rehearsal.md, steps 3 to 7), for any
host with backup jobs: ``Drill`` runs it and records what it saw, ``run_drill`` runs it on the
shared staging lab (S3 started again afterwards), ``moto_objects`` reads the lab's S3 server.
The tests in test_backup_box.py judge what it recorded; backup_discovery.py says which jobs a
host runs and which the lab cannot run.

The drill starts every backup unit with ``systemctl start`` as its timer would, while a
sampler in the box reads every ``/proc/*/cmdline`` every 10 ms looking for any secret of the
jobs' environment files; then every restore test alone, all of them at once, the PITR drill
(WAL receiver, base backup, ``recovery_target_time`` between two rows), the metrics as the
product's Prometheus scraped them, and finally a backup and a WAL ship with the S3 server
stopped and the BackupFailed alert they fire.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import subprocess
import sys
import time
import traceback
from typing import Callable, Iterable, Iterator
from urllib.parse import quote

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

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
    """The backup drill on one converged box of the lab.

    ``box`` runs the jobs; its jobs are those with an env file in /etc/platform-backup, less
    ``skip`` (jobs the lab cannot run: backup_discovery's not proven). ``prefix`` begins every
    job's name (the PITR job is ``{prefix}wal``); ``probe_database`` is the Postgres database
    the drill writes its rows into (as the database's owner, as the application would), and
    its dump job is ``{prefix}`` plus its name with dashes; ``monitoring`` is the box whose
    Prometheus scrapes this one; ``redis_cli`` the command that reaches the box's Redis from
    inside its container with ``REDISCLI_AUTH`` set (TLS options included).
    ``execute(box, argv, input=None, timeout=None)`` runs a command in a box as root
    (``lab.exec``); ``stop_s3()`` stops the lab's S3 server; ``bucket_objects()`` returns every
    object of every bucket as bytes. Every step records into ``self.seen``; a step that raises
    records its traceback under ``errors`` and the drill goes on where it can."""

    def __init__(self, *, box: str, prefix: str, probe_database: str, monitoring: str, redis_cli: str,
                 execute: Callable, stop_s3: Callable[[], None],
                 bucket_objects: Callable[[], dict[str, bytes]], skip: Iterable[str] = ()):
        self.box, self.prefix, self.probe_database = box, prefix, probe_database
        self.monitoring, self.redis_cli, self.skip = monitoring, redis_cli, set(skip)
        self.pitr_job = f"{prefix}wal"
        self.probe_job = prefix + probe_database.replace("_", "-")
        self.execute, self.stop_s3, self.bucket_objects = execute, stop_s3, bucket_objects
        self.seen: dict = {"errors": {}, "units": 0, "timings": {}, "box": box, "pitr_job": self.pitr_job,
                           "probe_job": self.probe_job}

    # --- helpers -----------------------------------------------------------------------------
    def sh(self, script: str, timeout: float = 900, check: bool = True, box: str = "") -> str:
        done = self.execute(box or self.box, ["bash", "-c", script], timeout=timeout)
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
        done = self.execute(self.box, ["systemctl", "start", unit], timeout=timeout)
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

    def container(self, service: str, box: str = "") -> str:
        cid = self.sh(f"docker ps -q --filter label=platform.service={service} | head -n 1", box=box).strip()
        assert cid, f"no running container labelled platform.service={service} on {box or self.box}"
        return cid

    def _psql(self, database: str, sql: str, as_owner: bool = False) -> str:
        """psql as the server's superuser; ``as_owner``: first SET ROLE to the database's owner."""
        if as_owner:
            sql = ("SELECT format('SET ROLE %I', pg_get_userbyid(datdba)) FROM pg_database "
                   "WHERE datname = current_database()\\gexec\n" + sql)
        done = self.execute(self.box, ["docker", "exec", "-i", "-u", "postgres", self.pg, "psql", "-v",
                                       "ON_ERROR_STOP=1", "-At", "-d", database], input=sql.encode(), timeout=120)
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
        """The result of an instant query to the monitoring box's Prometheus (the stack's
        container, on its Docker network only: asked from inside it)."""
        out = self.sh(f"docker exec {self.container('prometheus', self.monitoring)} wget -qO- "
                      f"'http://127.0.0.1:9090/api/v1/query?query={quote(query)}'", box=self.monitoring)
        return json.loads(out)["data"]["result"]

    def wait_prometheus(self, query: str, timeout: float = 180) -> tuple[list, float]:
        started = time.monotonic()
        while True:
            result = self.prometheus(query)
            if result or time.monotonic() - started > timeout:
                return result, round(time.monotonic() - started, 1)
            time.sleep(5)

    def scraped(self) -> None:
        """The WAL ship's and the backups' textfile metrics, as the stack's Prometheus scraped
        them from this box's node-exporter."""
        newest = self.seen["pitr"]["wal_metrics"][
            f'platform_wal_archive_newest_segment_timestamp_seconds{{job="{self.pitr_job}"}}']
        wal, wal_s = self.wait_prometheus(
            f'platform_wal_archive_newest_segment_timestamp_seconds{{job="{self.pitr_job}"}} >= {newest}')
        backup, _ = self.wait_prometheus('platform_backup_success{job=~"' + self.prefix + '.*"} == 1', timeout=60)
        rules = json.loads(self.sh(f"docker exec {self.container('prometheus', self.monitoring)} wget -qO- "
                                   "http://127.0.0.1:9090/api/v1/rules", box=self.monitoring))["data"]["groups"]
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
        self.dumps = [j for j in jobs if j != self.pitr_job and j not in self.skip]
        self.pg, self.redis = self.container("postgres"), self.container("redis")
        self.token = f"probe{int(time.time())}x{id(self) % 9973}"
        self.seen["token"] = self.token
        # The application's role owns its tables (its migrations create them); the backup
        # dumps as its own role, which must read them.
        self._psql(self.probe_database, "CREATE TABLE IF NOT EXISTS backup_probe (id serial PRIMARY KEY, note text);"
                   f"INSERT INTO backup_probe (note) SELECT '{self.token}-' || g FROM generate_series(1, 500) g;",
                   as_owner=True)
        self.sh(f"docker exec {self.redis} sh -c " + shlex.quote(
            f'REDISCLI_AUTH="$REDIS_PASSWORD" {self.redis_cli} SET backup:probe {self.token} >/dev/null'))
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
        with self.ship_timer_held():
            self._pitr()

    def _pitr(self) -> None:
        job, database = self.pitr_job, self.probe_database
        seen = self.seen["pitr"] = {}
        seen["receiver"] = self.sh(f"systemctl is-active platform-wal-receive-{job}.service", check=False).strip()
        seen["slot"] = self._psql("postgres", "SELECT slot_name || ':' || active FROM pg_replication_slots")
        seen["base"] = self.start_unit(f"platform-base-backup-{job}.service")
        self._psql(database, "CREATE TABLE IF NOT EXISTS pitr_probe (id serial PRIMARY KEY, note text);"
                   "INSERT INTO pitr_probe (note) VALUES ('before');", as_owner=True)
        target = self._psql(database, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
        seen["target"] = target
        time.sleep(2)
        self._psql(database, "INSERT INTO pitr_probe (note) VALUES ('after');", as_owner=True)
        time.sleep(2)  # pg_receivewal --synchronous flushes within its status interval
        seen["ship"] = self.start_unit(f"platform-wal-ship-{job}.service")
        seen["wal_metrics"] = self.metrics(f"wal-{job}.prom")
        seen["wal_metrics_read_at"] = time.time()
        self.sh(f"systemctl set-environment PITR_TARGET_TIME={shlex.quote(target)} "
                f"PITR_PROBE_DATABASE={database} "
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
        job = self.probe_job
        # A ship of the timer's own between reading the metrics and stopping S3 would move the
        # last success.
        with self.ship_timer_held():
            before = self.metrics(f"backup-{job}.prom")
            wal_before = self.metrics(f"wal-{self.pitr_job}.prom")
            self.stop_s3()
            run = self.start_unit(f"platform-backup-{job}.service", timeout=3600)
            run["metrics_before"], run["metrics"] = before, self.metrics(f"backup-{job}.prom")
            ship = self.start_unit(f"platform-wal-ship-{self.pitr_job}.service", timeout=3600)
            ship["metrics_before"], ship["metrics"] = wal_before, self.metrics(f"wal-{self.pitr_job}.prom")
        self.seen["s3_down"] = {"job": job, "backup": run, "ship": ship}

    @contextlib.contextmanager
    def ship_timer_held(self) -> Iterator[None]:
        """The WAL ship timer stopped, and no ship running, for the block; started again after.
        At an RPO of 1 min it ships every 30 s and a run takes seconds, so the drill's own
        ``systemctl start`` of the ship would often join a run the timer began before the
        drill's last row (and report that run)."""
        unit = f"platform-wal-ship-{self.pitr_job}"
        # A running oneshot is "activating" (is-active answers no): wait for its end state.
        self.sh(f"systemctl stop {unit}.timer; for _ in $(seq 1 300); do "
                f"case \"$(systemctl show -p ActiveState --value {unit}.service)\" in "
                "inactive|failed) break ;; esac; sleep 1; done")
        try:
            yield
        finally:
            self.sh(f"systemctl start {unit}.timer")


def moto_objects(lab, address: str) -> dict[str, bytes]:
    """Every object of every bucket on the lab's S3 server (moto), read with boto3 inside the
    lab namespace (the server's certificate is the lab CA's; not verified: only bytes matter)."""
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
    done = subprocess.run(lab.netns_argv([sys.executable, "-c", script]), capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return {k: base64.b64decode(v) for k, v in json.loads(done.stdout).items()}


def run_drill(held, **drill) -> dict:
    """The drill on the shared staging lab (``held``: tests/rehearsal/conftest.py's
    ``staging_rehearsal``) with ``Drill``'s keyword arguments less the lab's callables; what
    it saw, plus ``report`` (the rehearsal's) and ``seconds``. Empty of drill keys when the lab
    did not come up. S3 answers again afterwards (empty: moto keeps buckets in memory), for the
    drills and modules after this one."""
    from rehearsal.services import ADDRESSES

    seen: dict = {}
    started = time.monotonic()
    if held.report.error is None:
        lab, services = held.lab, held.lab_services
        d = Drill(execute=lambda box, argv, input=None, timeout=None: lab.exec(box, argv, input=input, timeout=timeout),
                  stop_s3=lambda: services.stop_service("s3"),
                  bucket_objects=lambda: moto_objects(lab, ADDRESSES["s3"]), **drill)
        try:
            seen.update(d.run())
        finally:
            if not services.is_running("s3"):
                services.start_service("s3")
    seen["report"] = held.report
    seen["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nbackup drill on {drill['box']}: {seen['seconds']} s; drill {seen.get('timings')}; "
          f"units run: {seen.get('units')}")
    pitr, job = seen.get("pitr") or {}, seen.get("pitr_job")
    if "wal_metrics" in pitr:
        wal, labels = pitr["wal_metrics"], f'{{job="{job}"}}'
        print(f"WAL: RPO {wal[f'platform_wal_archive_rpo_seconds{labels}']:.0f} s, ship interval "
              f"{wal[f'platform_wal_archive_rpo_seconds{labels}'] / 2:.0f} s, ship run "
              f"{pitr['ship']['seconds']} s, newest segment "
              f"{pitr['wal_metrics_read_at'] - wal[f'platform_wal_archive_newest_segment_timestamp_seconds{labels}']:.0f} s "
              f"old when read; base backup {pitr['base']['seconds']} s; PITR test {pitr['test']['seconds']} s")
    return seen
