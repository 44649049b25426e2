"""The backup drill's discovery (tests/rehearsal/backup_discovery.py) against the real staging
capture: which jobs V-EdFinance's VPS and Pencom's data node run, which the lab can drill, and
where their metrics are scraped. What the lab drills (tests/rehearsal/test_backup_box.py) rests
on these answers, so they are pinned here where they run in seconds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.rehearsal.backup_discovery import DiscoveryError, discover

pytestmark = pytest.mark.fast

PENCOM = "pencom-staging-data"


@pytest.fixture(scope="module")
def staging():
    from rehearsal.capture import capture

    return capture("staging")


def test_pencom_data_node_jobs_kinds_databases_and_rpo(staging):
    found = discover(staging, PENCOM)
    kinds = {j.name: (j.kind, j.database) for j in found.jobs}
    assert kinds == {
        "pencom-staging-pencom-audit": ("postgres", "pencom_audit"),
        "pencom-staging-pencom-compliance": ("postgres", "pencom_compliance"),
        "pencom-staging-pencom-core-db2": ("postgres", "pencom_core_db2"),
        "pencom-staging-pencom-external-integrations": ("postgres", "pencom_external_integrations"),
        "pencom-staging-pencom-payments": ("postgres", "pencom_payments"),
        "pencom-staging-pencom-core-otp": ("mongodb", "pencom_core_otp"),
        "pencom-staging-pencom-notifications": ("mongodb", "pencom_notifications"),
        "pencom-staging-redis": ("redis", ""),
        "pencom-staging-wal": ("pitr", "postgres"),
    }
    # Payments and compliance declare 1 minute: the cluster's WAL ships for the strictest.
    assert found.pitr.name == "pencom-staging-wal" and found.pitr.rpo_minutes == 1
    assert found.pitr.tool_image == "postgres:17.2-bookworm"
    assert (found.pitr.backup_unit, found.pitr.restore_unit) == (
        "platform-base-backup-pencom-staging-wal.service", "platform-pitr-test-pencom-staging-wal.service")
    # Pencom's Prometheus runs on the edge host and scrapes the data node's node-exporter.
    assert found.monitoring == "pencom-staging-edge"


def test_mongodb_jobs_are_reported_not_proven_and_left_out_of_the_drill(staging):
    found = discover(staging, PENCOM)
    assert set(found.not_proven) == {"pencom-staging-pencom-core-otp", "pencom-staging-pencom-notifications"}
    assert all("no MongoDB server" in why for why in found.not_proven.values())
    drilled = {j.name for j in found.drilled}
    assert not drilled & set(found.not_proven)
    assert {j.name for j in found.dumps} == drilled - {"pencom-staging-wal"}
    assert len(found.dumps) == 6


def test_vedfinance_box_jobs_match_what_its_drill_expected(staging):
    found = discover(staging, "vedfinance-staging")
    assert {j.name: j.kind for j in found.jobs} == {
        "vedfinance-staging-redis": "redis", "vedfinance-staging-vedfinance-dev": "postgres",
        "vedfinance-staging-vedfinance-staging": "postgres", "vedfinance-staging-wal": "pitr"}
    assert found.not_proven == {}
    assert found.pitr.rpo_minutes == 5 and found.monitoring == "vedfinance-staging"


def test_a_host_without_backups_and_an_unknown_host(staging):
    assert discover(staging, "pencom-staging-edge").jobs == ()
    with pytest.raises(DiscoveryError, match="no-such-host: not a host of the staging capture"):
        discover(staging, "no-such-host")


def test_an_install_command_of_an_unknown_shape_is_named(staging):
    step = next(s for s in staging.host_steps(PENCOM) if s.name == "pencom-staging-redis-backup-install")
    broken = replace(step, inputs={**step.inputs, "create": "true", "stdin": "echo nothing rendered here"})
    staging_broken = replace(staging, steps=[broken if s is step else s for s in staging.steps])
    with pytest.raises(DiscoveryError, match="pencom-staging-redis-backup-install installs scripts of no job"):
        discover(staging_broken, PENCOM)
