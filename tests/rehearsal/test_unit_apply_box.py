"""``apply_unit`` on a real box (systemd as PID 1, Debian 12): a unit restarted by a file change
counts only once it is proven running. A config that makes the unit exit right after its start
(a Type=simple service: systemctl restart returns at once, the service dies a second later)
fails the step naming the unit with its journal tail; the previous file is back and the unit
active again on it; the next run tries the change again; a good change passes and then settles.
sshd's own delivery (a reload of ssh.service, not socket-activated on Debian 12, proven by its
listening socket) passes on the same box. One box, its own lab lock: marker ``rehearsal``."""

from __future__ import annotations

import re

import pytest

from components import hostsetup
from rehearsal.lab import BoxSpec, Lab
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.rehearsal

BOX = "units"
CONF = "/etc/platform-demo.conf"
UNIT = "platform-demo"
READY = f"/run/{UNIT}.ready"
# Reads its config at start; a line `exit-after-start` makes it die a second after it started.
# Serving, it marks itself ready (its status command's answer).
UNIT_FILE = f"""\
[Unit]
Description=Platform demo service (tests/rehearsal/test_unit_apply_box.py)

[Service]
Type=simple
ExecStartPre=/bin/rm -f {READY}
ExecStart=/bin/sh -c 'if grep -qx exit-after-start {CONF}; then echo "refusing {CONF}"; sleep 1; exit 3; fi; head -n1 {CONF} >{READY}; echo "serving"; exec sleep infinity'

[Install]
WantedBy=multi-user.target
"""


def _script(conf: str) -> str:
    return hostsetup.script(
        hostsetup.deliver_file(f"/etc/systemd/system/{UNIT}.service", "0644", "root:root", UNIT_FILE,
                               on_change="systemctl daemon-reload"),
        hostsetup.deliver_file(CONF, "0644", "root:root", conf,
                               on_change=hostsetup.unit_apply("restart", UNIT, "test", "-e", READY)),
        f"ensure_service_enabled {UNIT}")


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    require_root("a network namespace and a box")
    for tool, why in [("dockerd", "the harness Docker daemon"), ("debootstrap", "the box image"),
                      ("dpkg-scanpackages", "the local apt repository"), ("nsenter", "the lab namespace")]:
        require_tool(tool, why)
    lab = Lab({"private": "10.44.0.0/24"}, [BoxSpec(BOX, {"private": "10.44.0.10"})],
              lock_path=tmp_path_factory.mktemp("lock") / "lab.lock")
    with lab:
        yield lab


def _run(lab: Lab, text: str) -> tuple[int, str]:
    proc = lab.exec(BOX, ["bash", "-s"], input=text.encode(), timeout=300)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


def _changes(out: str) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", out).group(1))


def test_a_unit_that_exits_after_its_restart_is_rolled_back_and_named(box):
    status, out = _run(box, _script("setting 1\n"))
    assert status == 0 and _changes(out) >= 3, out
    first_run = box.exec(BOX, ["systemctl", "show", "-p", "InvocationID", "--value", UNIT]).stdout.strip()

    status, out = _run(box, _script("setting 2\nexit-after-start\n"))
    assert status == 1, out
    assert f"unit {UNIT}: not proven running 30 s after its restart" in out, out
    assert "refusing /etc/platform-demo.conf" in out, "the journal tail is shown"
    assert "the previous version is back in place and applied" in out, out
    assert box.exec(BOX, ["cat", CONF]).stdout == b"setting 1\n"
    assert box.exec(BOX, ["systemctl", "is-active", UNIT]).stdout.strip() == b"active"
    rerun = box.exec(BOX, ["systemctl", "show", "-p", "InvocationID", "--value", UNIT]).stdout.strip()
    assert rerun != first_run, "restarted onto the previous file"

    status, out = _run(box, _script("setting 2\nexit-after-start\n"))
    assert status == 1 and f"unit {UNIT}:" in out, "not recorded as applied: the next run retries"

    status, out = _run(box, _script("setting 2\n"))
    assert status == 0 and _changes(out) == 1, out
    assert box.exec(BOX, ["cat", READY]).stdout == b"setting 2\n"
    status, out = _run(box, _script("setting 2\n"))
    assert status == 0 and _changes(out) == 0, out


def test_sshd_delivery_reloads_ssh_and_proves_its_socket(box):
    before = box.exec(BOX, ["systemctl", "show", "-p", "InvocationID", "--value", "ssh"]).stdout.strip()
    status, out = _run(box, hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy(allow_users=("deploy", "root")))))
    assert status == 0 and "changed: /etc/ssh/sshd_config.d/00-platform.conf" in out, out
    assert box.exec(BOX, ["systemctl", "is-active", "ssh"]).stdout.strip() == b"active"
    # A reload, not a restart: the same run of the unit.
    assert box.exec(BOX, ["systemctl", "show", "-p", "InvocationID", "--value", "ssh"]).stdout.strip() == before
