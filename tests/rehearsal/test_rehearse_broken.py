"""A host broken on purpose makes the rehearsal fail, and say where: one box, a tiny synthetic
stack with a script that exits non-zero, a script that changes something on every run and a
container whose health check fails, next to parts that are fine (which must pass)."""

from __future__ import annotations

import subprocess

import pytest

from components import hostsetup
from rehearsal.capture import Host, StackCapture, Step, order
from rehearsal.capture_answers import ssh_keypair
from rehearsal.report import FAIL, PASS
from tests.conftest import require_tool

pytestmark = pytest.mark.rehearsal

ADDRESS = "192.0.2.10"  # a documentation address: the overlay must move it into the lab
IMAGE = "redis:7.4.1-alpine"


def _command(name: str, script: str, key: str, depends=()) -> Step:
    return Step(urn=f"urn:test::{name}", name=name, kind="command", host="broken-box",
                depends=list(depends), inputs={
                    "connection": {"host": ADDRESS, "user": "deploy", "port": 22, "privateKey": key},
                    "create": "sudo -n bash -s", "stdin": script})


def _container(name: str, test: list[str]) -> Step:
    return Step(urn=f"urn:test::{name}", name=name, kind="container", host="broken-box",
                depends=["urn:test::net", f"urn:test::{name}-image", "urn:test::docker"], inputs={
                    "image": IMAGE, "memory": 64, "cpus": "0.25", "user": "999:1000",
                    "capabilities": {"drops": ["ALL"]}, "restart": "unless-stopped", "mustRun": True,
                    "healthcheck": {"tests": test, "interval": "2s", "timeout": "2s",
                                    "startPeriod": "2s", "retries": 2},
                    "networksAdvanced": [{"name": "broken", "aliases": [name]}]})


def synthetic_stack() -> StackCapture:
    private, public = ssh_keypair()
    host = Host(name="broken-box", product="test", kind="onprem", address=ADDRESS, user="deploy",
                docker_host=f"ssh://deploy@{ADDRESS}",
                ssh_opts=["-o", "StrictHostKeyChecking=accept-new"],
                private_key=private, public_key=public)
    steps = [
        _command("fine", hostsetup.script(hostsetup.deliver_file("/etc/rehearsal-fine.conf", "0640", "root:root",
                                                                 f"fine at {ADDRESS}\n")), private),
        _command("flappy", hostsetup.script('date +%s%N > /var/tmp/flap', 'note_change "/var/tmp/flap"'),
                 private, ["urn:test::fine"]),
        _command("broken", hostsetup.script('echo "boom: broken on purpose" >&2', "exit 3"), private),
        _command("after-broken", hostsetup.script("true"), private, ["urn:test::broken"]),
        _command("docker", hostsetup.script(hostsetup.docker_section()), private, ["urn:test::fine"]),
        Step(urn="urn:test::net", name="net", kind="network", host="broken-box",
             inputs={"name": "broken", "driver": "bridge"}, depends=["urn:test::docker"]),
        *[Step(urn=f"urn:test::{c}-image", name=f"{c}-image", kind="image", host="broken-box",
               inputs={"name": IMAGE, "keepLocally": True}, depends=["urn:test::docker"])
          for c in ("healthy", "unhealthy")],
        _container("healthy", ["CMD", "redis-cli", "ping"]),
        _container("unhealthy", ["CMD", "false"]),
    ]
    return StackCapture(stack="broken", hosts={"broken-box": host}, steps=order(steps), products=["test"])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    for tool, why in [("dockerd", "the harness Docker daemon"), ("debootstrap", "the box image"),
                      ("dpkg-scanpackages", "the local apt repository"), ("nsenter", "the lab namespace"),
                      ("ssh", "the docker ssh:// jump")]:
        require_tool(tool, why)
    from rehearsal.rehearse import rehearse

    # A lock of its own: the lab tier's shared staging lab may hold the machine-wide one.
    return rehearse("broken", capture_override=synthetic_stack(), workers=3,
                    lock_path=tmp_path_factory.mktemp("broken") / "lab.lock")


def _check(report, name):
    return next(c for c in report.hosts["broken-box"].checks if c.name == name)


def test_the_rehearsal_fails_and_names_the_failing_step(report):
    assert not report.ok
    host = report.hosts["broken-box"]
    broken = [f for f in host.failures if f["step"] == "broken" and f["run"] == 1]
    assert broken and broken[0]["exit_code"] == 3, report.text()
    assert any("boom: broken on purpose" in line for line in broken[0]["tail"])
    assert host.runs[1]["blocked"] >= 1  # after-broken never ran
    assert "step broken failed (exit code 3)" in report.text()


def test_a_second_run_that_changes_something_fails(report):
    host = report.hosts["broken-box"]
    flappy = [f for f in host.failures if f["step"] == "flappy"]
    assert [f["run"] for f in flappy] == [2], report.text()
    assert "second run changed 1" in flappy[0]["error"]
    assert not any(f["step"] == "fine" for f in host.failures)


def test_an_unhealthy_container_fails_its_check_and_a_healthy_one_passes(report):
    assert _check(report, "container unhealthy healthy").status == FAIL
    assert _check(report, "container healthy healthy").status == PASS, report.text()
    assert _check(report, "container healthy memory 64 MB").status == PASS
    assert _check(report, "container healthy user 999:1000").status == PASS
    assert _check(report, "file /etc/rehearsal-fine.conf 640 root:root").status == PASS


def test_the_overlay_moved_the_host_and_nothing_is_left(report):
    assert report.hosts["broken-box"].address.startswith("10.200.0.")
    # The file the fine script wrote holds the lab address the overlay put in its place.
    assert _check(report, "file /etc/rehearsal-fine.conf 640 root:root").status == PASS
    assert report.teardown_error is None
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert report.netns and report.netns not in namespaces.split()
