"""The backup, restore-test and point-in-time-recovery units run for real on converged boxes of
the shared staging lab (``staging_rehearsal``, tests/rehearsal/conftest.py), with the lab's S3
server (moto over TLS) standing in for R2 at the R2 endpoint the scripts name: the drill of
tests/rehearsal/backup_drill.py, judged here.

- V-EdFinance's staging VPS: PostgreSQL 17 with two databases, Redis and the WAL job (RPO
  5 min); its own Prometheus.
- Pencom's data node (``test_pencom_*``): PostgreSQL 17 with five databases (payments and
  compliance declare an RPO of 1 min, so the cluster's WAL ships every 30 s), Redis over TLS,
  and two MongoDB jobs the lab cannot run (its MongoDB is a stub: reported not proven, from
  tests/rehearsal/backup_discovery.py); its Prometheus runs on the edge host.

Each drill stops S3 and starts it again (empty) at its end. Marker ``rehearsal``; nothing is
skipped under ``CI=true``.
"""

from __future__ import annotations

import re

import pytest

from tests.rehearsal.backup_drill import run_drill

pytestmark = pytest.mark.rehearsal

BOX = "vedfinance-staging"
PENCOM = "pencom-staging-data"
PENCOM_REDIS_CLI = "redis-cli --no-auth-warning --tls --cacert /run/platform/ca.crt"


@pytest.fixture(scope="module")
def drill(staging_rehearsal):
    return run_drill(staging_rehearsal, box=BOX, prefix=f"{BOX}-", probe_database="vedfinance_staging",
                     monitoring=BOX, redis_cli="redis-cli --no-auth-warning")


@pytest.fixture(scope="module")
def pencom(staging_rehearsal):
    from tests.rehearsal.backup_discovery import discover

    held = staging_rehearsal
    found = discover(held.capture, PENCOM) if held.report.error is None else None
    seen = run_drill(held, box=PENCOM, prefix="pencom-staging-", probe_database="pencom_payments",
                     monitoring=found.monitoring if found else "pencom-staging-edge", redis_cli=PENCOM_REDIS_CLI,
                     skip=found.not_proven if found else ())
    seen["discovered"] = found
    if found:
        print(f"not proven on {PENCOM}: {found.not_proven}")
    return seen


def _no_error(seen: dict, *steps: str) -> None:
    report = seen["report"]
    assert report.error is None, report.text()
    assert "errors" in seen, "the drill did not run (the box did not converge?)\n" + report.text()
    for step in ("setup", *steps):
        assert step not in seen["errors"], f"step {step}:\n{seen['errors'][step]}"


def _drilled(seen: dict) -> set[str]:
    """The jobs the drill ran: its dumps and its PITR job."""
    return set(seen["backup"]) | {seen["pitr_job"]}


# --- what every drilled host must show -----------------------------------------------------------

def check_backups(seen: dict) -> None:
    _no_error(seen, "backup", "bucket")
    for job, run in seen["backup"].items():
        assert run["result"] == "success" and run["start_exit"] == 0, (job, run["journal"])
        paths = {p for s in run["snapshots"] for p in s["paths"]}
        assert paths == {f"/{job}.dump", f"/{job}.counts"}, (job, paths)
        assert run["state_dir"] == ["cache"], (job, run["state_dir"])
        labels = f'{{job="{job}"}}'
        assert run["metrics"][f"platform_backup_success{labels}"] == 1, run["metrics"]
        assert run["metrics"][f"platform_backup_last_size_bytes{labels}"] > 0, run["metrics"]
    assert seen["textfile_mode"] == "755"
    assert seen["tmp_after"] == seen["tmp_before"], "a backup left files in /tmp or /var/lib/docker/tmp"
    # The probe rows and the Redis key went to R2 only as restic's ciphertext.
    assert seen["bucket"]["objects"] > 0 and seen["bucket"]["with_token"] == [], seen["bucket"]


def check_no_secret_on_a_command_line(seen: dict) -> None:
    _no_error(seen, "sampler")
    sampler = seen["sampler"]
    assert sampler["hits"] == [], sampler["hits"]
    # The sampler saw the jobs' processes, so it looked while they ran; every job's env file
    # gave it secrets (a restic password, an S3 secret, a source password at least).
    assert sampler["samples"] > 100 and sampler["secrets"] >= 2 * len(seen["jobs"]), sampler
    for program in ("restic", "pg_dump", "redis-cli", "pg_restore", "pg_basebackup"):
        assert program in sampler["programs"], (program, sampler["programs"])


def check_restores(seen: dict) -> None:
    _no_error(seen, "restore")
    for job, run in seen["restore"].items():
        assert run["result"] == "success", (job, run["journal"])
        match = re.search(rf"{re.escape(job)}: restored run-\S+; (\d+) (tables|databases) match", run["journal"])
        assert match, (job, run["journal"])  # 0 for a database without a table
        assert run["metrics"][f'platform_restore_test_success{{job="{job}"}}'] == 1, run["metrics"]
    probed = seen["restore"][seen["probe_job"]]["journal"]
    assert re.search(r"restored run-\S+; [1-9]\d* tables match", probed), probed


def check_restores_at_once(seen: dict) -> None:
    _no_error(seen, "restore_all_at_once")
    assert len(seen["restore_all"]["units"]) == len(seen["backup"])
    for unit, state in seen["restore_all"]["units"].items():
        assert state["result"] == "success", (unit, state["journal"])
        assert "already allocated" not in state["journal"]


def check_pitr(seen: dict) -> None:
    _no_error(seen, "pitr")
    pitr, labels = seen["pitr"], f'{{job="{seen["pitr_job"]}"}}'
    assert pitr["receiver"] == "active"
    assert "platform_wal:true" in pitr["slot"].split(), pitr["slot"]
    assert pitr["base"]["result"] == "success", pitr["base"]["journal"]
    assert pitr["ship"]["result"] == "success", pitr["ship"]["journal"]
    assert pitr["test"]["result"] == "success", pitr["test"]["journal"]
    assert re.search(r"^probe: before$", pitr["test"]["journal"], re.M), pitr["test"]["journal"]
    assert pitr["test"]["metrics"][f"platform_pitr_test_success{labels}"] == 1
    # Two repositories (components/backupscripts/generations.py): the base backup made the
    # inactive one active and pruned the one it left; the PITR test restored from the active
    # one (base and WAL both shipped after the switch) and checked the other.
    switched = re.search(r"generation \d+: WAL and base backups go to pitr-([01])$", pitr["base"]["journal"], re.M)
    assert switched, pitr["base"]["journal"]
    active, inactive = switched.group(1), 1 - int(switched.group(1))
    assert re.search(rf"in pitr-{active} .*; pruned pitr-{inactive}$", pitr["base"]["journal"], re.M), pitr["base"]["journal"]
    assert re.search(rf"\(pitr-{active}\) and WAL \S+ \(pitr-{active}\)", pitr["test"]["journal"]), pitr["test"]["journal"]
    assert re.search(rf"(checked pitr-{inactive}|pitr-{inactive} holds nothing yet; nothing to check)$",
                     pitr["test"]["journal"], re.M), pitr["test"]["journal"]
    newest = pitr["wal_metrics"][f"platform_wal_archive_newest_segment_timestamp_seconds{labels}"]
    assert pitr["wal_metrics_read_at"] - newest < 60, pitr["wal_metrics"]
    assert pitr["wal_metrics"][f"platform_wal_archive_success{labels}"] == 1


def check_scraped(seen: dict) -> None:
    _no_error(seen, "scraped")
    scraped = seen["scraped"]
    assert len(scraped["wal"]) == 1, scraped
    assert {"WALArchiveStalled", "PITRTestFailed", "BackupFailed"} <= set(scraped["rules"]), scraped["rules"]
    assert {r["metric"]["job"] for r in scraped["backup"]} == _drilled(seen), scraped


def check_alert(seen: dict) -> None:
    _no_error(seen, "alert")
    assert len(seen["alert"]["firing"]) == 1, seen["alert"]


def check_s3_down(seen: dict, rpo_seconds: int) -> None:
    _no_error(seen, "s3_down")
    down = seen["s3_down"]
    job, run = down["job"], down["backup"]
    labels = f'{{job="{job}"}}'
    assert run["result"] == "exit-code", run["journal"]
    assert run["metrics"][f"platform_backup_success{labels}"] == 0
    kept = f"platform_backup_last_success_timestamp_seconds{labels}"
    assert run["metrics"][kept] == run["metrics_before"][kept] > 0
    ship, wal = down["ship"], f'{{job="{seen["pitr_job"]}"}}'
    assert ship["result"] == "exit-code", ship["journal"]
    assert ship["metrics"][f"platform_wal_archive_success{wal}"] == 0
    assert (ship["metrics"][f"platform_wal_archive_last_success_timestamp_seconds{wal}"]
            == ship["metrics_before"][f"platform_wal_archive_last_success_timestamp_seconds{wal}"])
    # What WALArchiveStalled compares the last success with is still reported by a failed run.
    assert ship["metrics"][f"platform_wal_archive_rpo_seconds{wal}"] == rpo_seconds
    assert ship["metrics"][f"platform_wal_receiver_up{wal}"] == 1


# --- V-EdFinance's staging VPS ---------------------------------------------------------------------

def test_the_box_converges_and_installs_every_backup_job(drill):
    _no_error(drill)
    assert sorted(drill["jobs"]) == sorted([f"{BOX}-redis", f"{BOX}-vedfinance-dev",
                                            f"{BOX}-vedfinance-staging", f"{BOX}-wal"])


def test_every_backup_unit_succeeds_and_stores_an_encrypted_snapshot_of_dump_and_counts(drill):
    check_backups(drill)


def test_no_secret_appears_on_any_command_line_while_the_units_run(drill):
    check_no_secret_on_a_command_line(drill)


def test_every_restore_test_passes_and_compares_counts(drill):
    check_restores(drill)


def test_all_restore_units_of_the_host_pass_when_started_at_once(drill):
    check_restores_at_once(drill)


def test_point_in_time_recovery_stops_between_the_two_rows(drill):
    check_pitr(drill)


def test_the_stacks_prometheus_scrapes_the_wal_and_backup_metrics(drill):
    check_scraped(drill)


def test_a_failed_backup_fires_the_stacks_backup_failed_alert(drill):
    check_alert(drill)


def test_a_backup_fails_and_says_so_when_s3_is_down(drill):
    check_s3_down(drill, rpo_seconds=300)


# --- Pencom's data node ----------------------------------------------------------------------------

def test_pencom_data_node_installs_every_job_the_capture_names(pencom):
    _no_error(pencom)
    found = pencom["discovered"]
    assert sorted(pencom["jobs"]) == sorted(j.name for j in found.jobs)
    # Drilled: five Postgres dumps, Redis and the WAL job; MongoDB's two are not proven here.
    assert _drilled(pencom) == {j.name for j in found.drilled} and len(found.drilled) == 7
    assert set(found.not_proven) == {"pencom-staging-pencom-core-otp", "pencom-staging-pencom-notifications"}


def test_pencom_every_backup_unit_succeeds_and_stores_an_encrypted_snapshot(pencom):
    check_backups(pencom)
    assert {"pencom-staging-pencom-payments", "pencom-staging-pencom-compliance"} <= set(pencom["backup"])


def test_pencom_no_secret_appears_on_any_command_line(pencom):
    check_no_secret_on_a_command_line(pencom)


def test_pencom_every_restore_test_passes(pencom):
    check_restores(pencom)


def test_pencom_all_restore_units_pass_when_started_at_once(pencom):
    """Six restore tests on one host at the same moment: no fixed port, no shared directory
    (issue #14: seven collided on "port is already allocated")."""
    check_restores_at_once(pencom)


def test_pencom_point_in_time_recovery_stops_between_the_two_rows(pencom):
    """In pencom_payments, with WAL shipping every 30 s behind the drill's own ship."""
    check_pitr(pencom)


def test_pencom_metrics_are_scraped_by_the_edge_prometheus(pencom):
    check_scraped(pencom)


def test_pencom_failed_backup_fires_the_backup_failed_alert(pencom):
    check_alert(pencom)


def test_pencom_backup_and_wal_ship_fail_and_say_so_when_s3_is_down(pencom):
    check_s3_down(pencom, rpo_seconds=60)
