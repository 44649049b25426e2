"""The lab tier's one staging lab: every host of the four products, converged twice, checked,
probed live, and held open for the session so that the tests which run backups, change drills
and probes on real hosts share it instead of booting their own (CI runs the lab tier once per
change, and a staging lab costs minutes). Its teardown is asserted: a lab that leaves a
namespace behind is an error of the session.

Order (``pytest_collection_modifyitems``): the modules that boot labs of their own run first,
so that no two labs ever run at once (the shared lab lives from its first user to the end of
the session); then the modules on the shared lab, from the ones that only read its report to
the ones that change it: :data:`SHARED_LAB_ORDER`. The backup drill stops the lab's S3 server
and starts it again; the change drills come last, because they leave the boxes on changed
stack files and a re-issued certificate.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool

LAB_TOOLS = [("dockerd", "the harness Docker daemon"), ("debootstrap", "the box image"),
             ("dpkg-scanpackages", "the local apt repository"), ("nsenter", "the lab namespace"),
             ("docker-registry", "the stand-in registry"), ("skopeo", "pushing stand-ins"),
             ("ssh", "the docker ssh:// jump"), ("moto_server", "the lab's S3"),
             ("pebble", "the lab's ACME CA"), ("dnsmasq", "the lab's DNS"),
             ("nc", "the port matrix"), ("curl", "the TLS probes"), ("psql", "the data-tier TLS probe")]

# Modules on the shared staging lab, in the order they run: readers of the report first, then
# the mutual-TLS probes (read the boxes), the session-log proof (deletes the app node's local
# syslog files as an intruder would, and HUPs rsyslog), then the backup drill (runs units, stops and restarts S3), then the change drills (they leave the
# boxes changed). Every other lab-tier module runs before these.
SHARED_LAB_ORDER = ("test_rehearse_staging.py", "test_live_probes.py", "test_mtls_lab.py", "test_session_logs_lab.py",
                    "test_backup_box.py", "test_drills.py", "test_drills_failures.py")

REPORT = Path(__file__).resolve().parents[2] / "out" / "rehearsal-staging-lab-tier.json"


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return SHARED_LAB_ORDER.index(name) + 1 if name in SHARED_LAB_ORDER else 0

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def staging_rehearsal():
    """A :class:`rehearsal.rehearse.Rehearsal` of ``staging`` after its two converges, checks,
    matrix and live probes; torn down at the end of the session, and the teardown must leave
    nothing. Its report is written to ``out/rehearsal-staging-lab-tier.json`` after the entry
    and again (with the drills) before the teardown."""
    require_root("network namespaces, a Docker daemon, boxes")
    for tool, why in LAB_TOOLS:
        require_tool(tool, why)
    from rehearsal.rehearse import Rehearsal

    held = Rehearsal("staging")
    started = time.monotonic()
    with held:
        print(held.report.text())
        print(f"staging lab ready after {time.monotonic() - started:.0f} s; timings {held.report.timings}")
        _write(held.report)
        yield held
        _write(held.report)
    print(f"staging lab: {time.monotonic() - started:.0f} s from start to teardown; "
          f"timings {held.report.timings}")
    assert held.report.teardown_error is None, held.report.teardown_error
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert held.report.netns and held.report.netns not in namespaces.split(), \
        f"the lab's namespace {held.report.netns} is still there after teardown"


def _write(report) -> None:
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report.to_json(), indent=1, default=str))
