"""The staging rehearsal, end to end: every host of all four products (Pencom's four nodes, the
V-EdFinance VPS, the KRO droplet and GIV's ops droplet) converged twice on real Debian boxes
and checked with testinfra. Slow: marker ``rehearsal``; `make test-rehearsal` runs it (not yet
`make test`: README, "Rehearsal: status").

The lab, both converges and the idempotence proof are plain assertions (green on the last two
full runs); the checks and the matrix, which the rehearsal does not meet yet, are marked
``xfail`` with the reason (measured on this machine, see README "Rehearsal: status"); they run
every time, and turn into XPASS the day the gap closes. Nothing here is skipped under ``CI=true``.
"""

from __future__ import annotations

import json

import pytest

from rehearsal.report import FAIL, NOT_PROVEN

pytestmark = pytest.mark.rehearsal

HOSTS = {"pencom-staging-edge", "pencom-staging-app", "pencom-staging-data", "pencom-staging-storage",
         "vedfinance-staging", "kro-staging", "giv-staging-ops"}

GAPS = (
    "not yet green (README, 'Rehearsal: status'): the merged tree's last full run converged all "
    "seven hosts twice with 0 changes on the second run, but 7 live checks and 25 of the 548 "
    "matrix cells fail (container egress to the web on KRO and V-EdFinance, SSH from the edge's "
    "containers to the internal nodes, plaintext PostgreSQL on V-EdFinance, and probe-side gaps)"
)


@pytest.fixture(scope="module")
def report(staging_rehearsal):
    return staging_rehearsal.report


def test_every_host_of_the_four_products_gets_a_box(report):
    assert set(report.hosts) == HOSTS
    assert {h.kind for n, h in report.hosts.items() if n in ("kro-staging", "giv-staging-ops")} == {"droplet"}


def test_the_lab_starts_and_serves_every_image(report):
    assert report.error is None, report.text()


def test_every_host_converges_on_the_first_run(report):
    assert report.error is None, report.text()
    broken = {n: h.failures for n, h in report.hosts.items() if any(f["run"] == 1 for f in h.failures)}
    assert not broken, report.text()
    assert all(h.runs[1]["ok"] == h.runs[1]["steps"] > 0 for h in report.hosts.values())


def test_the_second_run_changes_nothing_and_recreates_nothing(report):
    for name, host in report.hosts.items():
        assert host.runs.get(2), f"{name}: no second run\n{report.text()}"
        assert host.runs[2]["changes"] == 0 and host.runs[2]["failed"] == 0, report.text()


@pytest.mark.xfail(reason=GAPS, strict=False)
def test_every_check_passes_or_is_not_proven_with_a_reason(report):
    failed = {n: [c.name + ": " + c.detail for c in h.checks if c.status == FAIL]
              for n, h in report.hosts.items()}
    assert not any(failed.values()), json.dumps(failed, indent=1)
    for host in report.hosts.values():
        assert host.counts()["pass"] > 20
        assert all(c.detail for c in host.checks if c.status == NOT_PROVEN)
    assert report.ok, report.text()
