"""The staging rehearsal, end to end: every host of all four products (Pencom's four nodes, the
V-EdFinance VPS, the KRO droplet and GIV's ops droplet) converged twice on real Debian boxes
and checked with testinfra. Slow: marker ``rehearsal``; `make test-rehearsal` runs it (not yet
`make test`: README, "Rehearsal: status").

Every assertion is plain: the lab, both converges, the idempotence proof, every check and every
cell of the reachability matrix (911 in staging, none "not proven": 548, plus 363 towards the
ports containers listen on without publishing them). A failing check or cell is
listed in the failure message one per line, with what was observed and what the tier model says
(README "Rehearsal: status" has the last full run's). Nothing here is skipped under ``CI=true``.
"""

from __future__ import annotations

import pytest

from rehearsal.report import FAIL, NOT_PROVEN

pytestmark = pytest.mark.rehearsal

HOSTS = {"pencom-staging-edge", "pencom-staging-app", "pencom-staging-data", "pencom-staging-storage",
         "vedfinance-staging", "kro-staging", "giv-staging-ops"}


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


def test_every_check_passes_or_is_not_proven_with_a_reason(report):
    failed = [f"{n}: {c.name}: {c.detail}" for n, h in sorted(report.hosts.items()) for c in h.checks
              if c.status == FAIL]
    assert not failed, f"{len(failed)} checks fail:\n" + "\n".join(failed)
    for host in report.hosts.values():
        assert host.counts()["pass"] > 20
        assert all(c.detail for c in host.checks if c.status == NOT_PROVEN)


def test_the_reachability_matrix_is_what_the_tier_model_allows(report):
    cells = report.reachability
    assert len(cells) == 911
    failed = [f"{c['position']} -> {c['host']}/{c['side']}:{c['port']}/{c['protocol']} ({c['address']}): "
              f"observed {c['observed']}, the tier model says {c['expected']} ({c['reason']}) {c['detail']}".rstrip()
              for c in cells if c["status"] == FAIL]
    assert not failed, f"{len(failed)} of {len(cells)} cells fail:\n" + "\n".join(failed)
    unproven = [f"{c['position']} -> {c['host']}/{c['side']}:{c['port']}: {c['detail']}"
                for c in cells if c["status"] == NOT_PROVEN]
    assert not unproven, f"{len(unproven)} cells not proven:\n" + "\n".join(unproven)
    assert report.ok, report.text()
