"""The backup drill's plumbing (tests/rehearsal/backup_drill.py) without a lab: ``Drill`` run
against a simulated box that answers the commands it sends as a converged box would, and the
checks of tests/rehearsal/test_backup_box.py judging what it recorded. What this proves: the
Pencom drill sends every command to the right box (Prometheus queries to the edge host), starts
no unit of a job the lab cannot run, holds the 30 s WAL ship timer around the steps whose
ships it reads, and the checks pass a good run and fail a broken one. What only a lab proves
(the units really succeed) is test_backup_box.py's."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.rehearsal.backup_drill import Drill
from tests.rehearsal import test_backup_box as box_tests

pytestmark = pytest.mark.fast

DATA, EDGE = "pencom-staging-data", "pencom-staging-edge"
PREFIX = "pencom-staging-"
DUMPS = ["pencom-audit", "pencom-compliance", "pencom-core-db2", "pencom-external-integrations",
         "pencom-payments", "redis"]
MONGO = ["pencom-core-otp", "pencom-notifications"]
JOBS = [PREFIX + j for j in DUMPS + MONGO + ["wal"]]


class FakeBox:
    """Answers the drill's commands from a table of patterns; records every (box, command),
    every unit started and the ship timer's state. ``fail_unit``: a unit whose run fails."""

    def __init__(self, fail_unit: str = ""):
        self.calls: list[tuple[str, str]] = []
        self.started: list[str] = []
        self.s3_up, self.timer_active, self.fail_unit = True, True, fail_unit
        self.timer_while_started: dict[str, bool] = {}
        self.last_success = {job: 1000.0 for job in JOBS}
        self.results: dict[str, str] = {}
        self.sql: list[str] = []

    def execute(self, box, argv, input=None, timeout=None):
        command = argv[-1] if argv[:2] == ["bash", "-c"] else " ".join(argv)
        self.calls.append((box, command))
        return subprocess.CompletedProcess(argv, *self._answer(box, argv, command, input))

    def _answer(self, box, argv, command, input) -> tuple[int, bytes, bytes]:
        ok = lambda text="": (0, text.encode(), b"")  # noqa: E731
        if argv[0] == "systemctl" and argv[1] == "start":
            return self._start(argv[2])
        if match := re.search(r"query\?query=(\S+)'", command):
            assert box == EDGE, f"Prometheus asked on {box}"
            from urllib.parse import unquote
            query = unquote(match.group(1))
            if query.startswith("platform_backup_success"):
                series = [{"metric": {"job": j}} for j in JOBS if j.removeprefix(PREFIX) not in MONGO]
                return ok(json.dumps({"data": {"result": series}}))
            return ok(json.dumps({"data": {"result": [{"metric": {}, "value": [0, "1"]}]}}))
        if "api/v1/rules" in command:
            assert box == EDGE
            names = [{"name": n} for n in ("WALArchiveStalled", "PITRTestFailed", "BackupFailed")]
            return ok(json.dumps({"data": {"groups": [{"rules": names}]}}))
        if match := re.search(r"label=platform.service=(\S+)", command):
            assert box == (EDGE if match.group(1) == "prometheus" else DATA), (command, box)
            return ok(f"cid-{match.group(1)}\n")
        assert box == DATA, f"{command!r} sent to {box}"
        if "ls *.env" in command:
            return ok("\n".join(JOBS) + "\n")
        if argv[0] == "docker" and "psql" in argv:
            sql = input.decode()
            self.sql.append(sql)
            if "to_char(clock_timestamp()" in sql:
                return ok("2026-12-02 05:00:00.000000+00\n")
            if "pg_replication_slots" in sql:
                return ok("platform_wal:true\n")
            return ok("SET\nCREATE TABLE\nINSERT 0 1\n")
        if "systemctl stop platform-wal-ship" in command:
            self.timer_active = False
            return ok()
        if re.search(r"^systemctl start platform-wal-ship-\S+\.timer$", command):
            self.timer_active = True
            return ok()
        if match := re.search(r"systemctl show -p Result --value (\S+)", command):
            return ok(self.results.get(match.group(1), "success") + "\n")
        if match := re.search(r"journalctl -u (\S+)", command):
            return ok(self._journal(match.group(1)))
        if match := re.search(r"restic snapshots --json --host (\S+)", command):
            job = match.group(1)
            return ok(json.dumps([{"paths": [f"/{job}.dump"]}, {"paths": [f"/{job}.counts"]}]))
        if match := re.search(r"ls -A /var/lib/platform-backup/", command):
            return ok("cache\n")
        if match := re.search(r"cat /var/lib/prometheus/node-exporter/(\S+)", command):
            return ok(self._metrics(match.group(1)))
        if "stat -c %a" in command:
            return ok("755\n")
        if "systemctl is-active platform-wal-receive" in command:
            return ok("active\n")
        if command.startswith("systemctl is-active "):
            return ok("inactive\n" * (len(command.split()) - 2))
        if "cat /run/backup-drill.sampler" in command:
            return ok(json.dumps({"samples": 500, "secrets": 27, "hits": [],
                                  "programs": ["restic", "pg_dump", "redis-cli", "pg_restore", "pg_basebackup"]}))
        return ok()  # the sampler's start and stop, set-environment, tmp listings, cursors

    def _start(self, unit: str) -> tuple[int, bytes, bytes]:
        self.started.append(unit)
        self.timer_while_started[unit] = self.timer_active
        failed = unit == self.fail_unit or (not self.s3_up and re.match(r"platform-(backup|wal-ship)-", unit))
        self.results[unit] = "exit-code" if failed else "success"
        job = re.sub(r"^platform-(backup|restore-test|base-backup|pitr-test|wal-ship)-|\.service$", "", unit)
        if not failed and unit.startswith(("platform-backup-", "platform-wal-ship-")):
            self.last_success[job] = time.time()
        return (1 if failed else 0), b"", b""

    def _journal(self, unit: str) -> str:
        job = re.sub(r"^platform-[a-z-]+?-(?=pencom-staging-)|\.service$", "", unit)
        if unit.startswith("platform-restore-test-"):
            return f"{job}: restored run-20261202T050000Z; 3 tables match\n"
        if unit.startswith("platform-pitr-test-"):
            return ("probe: before\n"
                    f"{job}: recovered to 2026-12-02 05:00:00+00 from base 0123abcd (pitr-1) and WAL 4567ef01 "
                    f"(pitr-1); 3 databases\n{job}: checked pitr-0\n")
        if unit.startswith("platform-base-backup-"):
            return (f"{job}: generation 5: WAL and base backups go to pitr-1\n"
                    f"{job}: stored base backup base-20261202T030000Z in pitr-1 (9 bytes read, 9 bytes added); "
                    "pruned pitr-0\n")
        return ""

    def _metrics(self, file: str) -> str:
        kind, job = re.match(r"(backup|restore-test|wal|pitr-test)-(.+)\.prom$", file).groups()
        unit = {"backup": f"platform-backup-{job}.service", "wal": f"platform-wal-ship-{job}.service",
                "restore-test": f"platform-restore-test-{job}.service",
                "pitr-test": f"platform-pitr-test-{job}.service"}[kind]
        good = int(self.results.get(unit, "success") == "success")
        prefix = {"backup": "platform_backup", "wal": "platform_wal_archive", "restore-test": "platform_restore_test",
                  "pitr-test": "platform_pitr_test"}[kind]
        lines = [f'{prefix}_success{{job="{job}"}} {good}',
                 f'{prefix}_last_success_timestamp_seconds{{job="{job}"}} {self.last_success[job]}',
                 f'platform_backup_last_size_bytes{{job="{job}"}} 4096']
        if kind == "wal":
            lines += [f'platform_wal_archive_newest_segment_timestamp_seconds{{job="{job}"}} {time.time()}',
                      f'platform_wal_archive_rpo_seconds{{job="{job}"}} 60',
                      f'platform_wal_receiver_up{{job="{job}"}} 1']
        return "\n".join(lines) + "\n"


def _drill(fake: FakeBox) -> dict:
    def stop_s3():
        fake.s3_up = False

    drill = Drill(box=DATA, prefix=PREFIX, probe_database="pencom_payments", monitoring=EDGE,
                  redis_cli="redis-cli --tls", execute=fake.execute, stop_s3=stop_s3,
                  bucket_objects=lambda: {"b/data/00": b"ciphertext"}, skip=[PREFIX + j for j in MONGO])
    seen = drill.run()

    class Report:
        error = None

    return {**seen, "report": Report()}


@pytest.fixture(scope="module")
def good():
    fake = FakeBox()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "sleep", lambda s: None)
        return fake, _drill(fake)


def test_the_pencom_drill_runs_every_step_and_its_checks_pass(good):
    fake, seen = good
    assert seen["errors"] == {}
    for check in (box_tests.check_backups, box_tests.check_no_secret_on_a_command_line, box_tests.check_restores,
                  box_tests.check_restores_at_once, box_tests.check_pitr, box_tests.check_scraped,
                  box_tests.check_alert):
        check(seen)
    box_tests.check_s3_down(seen, rpo_seconds=60)
    assert seen["probe_job"] == "pencom-staging-pencom-payments" and seen["pitr_job"] == "pencom-staging-wal"


def test_no_unit_of_a_not_proven_job_is_started(good):
    fake, seen = good
    assert not [u for u in fake.started if any(m in u for m in MONGO)], fake.started
    assert sorted(seen["backup"]) == sorted(PREFIX + j for j in DUMPS)
    assert "systemctl start --no-block " + " ".join(f"platform-restore-test-{PREFIX}{j}.service" for j in DUMPS) \
        in [c for _, c in fake.calls]


def test_the_ship_timer_is_held_while_the_drill_ships_and_started_again(good):
    fake, _ = good
    ships = [u for u in fake.started if u.startswith("platform-wal-ship-")]
    assert len(ships) == 2 and not any(fake.timer_while_started[u] for u in ships)
    assert fake.timer_while_started["platform-pitr-test-pencom-staging-wal.service"] is False
    assert fake.timer_active


def test_the_probe_rows_are_written_as_the_databases_owner(good):
    fake, _ = good
    writes = [sql for sql in fake.sql if "INSERT INTO" in sql]
    assert len(writes) == 3, writes  # the backup probe, the PITR 'before' and 'after' rows
    for sql in writes:
        assert sql.startswith("SELECT format('SET ROLE %I', pg_get_userbyid(datdba)) FROM pg_database "
                              "WHERE datname = current_database()\\gexec\n"), sql


@pytest.mark.parametrize("unit,check", [
    ("platform-backup-pencom-staging-pencom-audit.service", "check_backups"),
    ("platform-restore-test-pencom-staging-redis.service", "check_restores"),
    ("platform-pitr-test-pencom-staging-wal.service", "check_pitr"),
])
def test_a_failing_unit_fails_its_check(unit, check, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    seen = _drill(FakeBox(fail_unit=unit))
    with pytest.raises(AssertionError):
        getattr(box_tests, check)(seen)


def test_check_pitr_refuses_a_check_of_the_repository_the_base_backup_made_active(good):
    """The drill's PITR check reads the two repositories' roles from the journals: a PITR test
    that checked the active repository (where WAL ships go) fails it."""
    _, seen = good
    wrong = {**seen, "pitr": {**seen["pitr"], "test": {**seen["pitr"]["test"], "journal": seen["pitr"]["test"][
        "journal"].replace("checked pitr-0", "checked pitr-1")}}}
    with pytest.raises(AssertionError):
        box_tests.check_pitr(wrong)
