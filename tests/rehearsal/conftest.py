"""The lab tier's one staging lab: every host of the four products, converged twice, checked,
and held open for the session so that the tests which run backups, change drills and probes on
real hosts share it instead of booting their own (CI runs the lab tier once per change, and a
staging lab costs minutes). Its teardown is asserted: a lab that leaves a namespace behind is
an error of the session."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import require_tool

LAB_TOOLS = [("dockerd", "the harness Docker daemon"), ("debootstrap", "the box image"),
             ("dpkg-scanpackages", "the local apt repository"), ("nsenter", "the lab namespace"),
             ("docker-registry", "the stand-in registry"), ("skopeo", "pushing stand-ins"),
             ("ssh", "the docker ssh:// jump")]


@pytest.fixture(scope="session")
def staging_rehearsal():
    """A :class:`rehearsal.rehearse.Rehearsal` of ``staging`` after its two converges, checks
    and matrix; torn down at the end of the session, and the teardown must leave nothing."""
    for tool, why in LAB_TOOLS:
        require_tool(tool, why)
    from rehearsal.rehearse import Rehearsal

    held = Rehearsal("staging")
    with held:
        print(held.report.text())
        yield held
    assert held.report.teardown_error is None, held.report.teardown_error
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert held.report.netns and held.report.netns not in namespaces.split(), \
        f"the lab's namespace {held.report.netns} is still there after teardown"
