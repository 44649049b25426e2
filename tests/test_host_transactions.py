"""Validate, apply, commit: a setup step whose check or apply fails leaves the previous file in
place, fails the run, and is applied by the next run once the cause is gone.

The scripts are the rendered ones, run for real by bash inside a throwaway root (an overlay of
this machine's root in private mount and network namespaces, tests/isolation.py): the
real ``sshd -t`` judges the sshd drop-in against the machine's own sshd_config and its Include.
Only systemctl is a stand-in (systemd is not PID 1 here); its ``reload`` fails while the drop-in
holds the line written in /etc/fail-reload, to stand for a service that refuses that setting.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from components import hostsetup
from tests.conftest import require_root, require_tool
from tests.isolation import run_in_throwaway_root

pytestmark = pytest.mark.realtool

DROP_IN = "/etc/ssh/sshd_config.d/00-platform.conf"

FAKE_SYSTEMCTL = textwrap.dedent("""\
    #!/bin/bash
    echo "$*" >>/var/lib/fake-systemctl.calls
    case "$1" in
      # A service that refuses its new configuration: the reload fails while the drop-in holds
      # the line in /etc/fail-reload.
      reload|restart) [ ! -e /etc/fail-reload ] || ! grep -qxFf /etc/fail-reload /etc/ssh/sshd_config.d/*.conf ;;
      *) exit 0 ;;
    esac
    """)


LISTENER = textwrap.dedent("""\
    timeout 280 python3 -c 'import socket, time; s = socket.socket(); s.bind(("0.0.0.0", 22)); s.listen(); time.sleep(300)' &
    LISTENER_PID=$!
    trap 'kill "$LISTENER_PID" 2>/dev/null; wait' EXIT
    for _ in $(seq 50); do ss -Hltn "sport = :22" | grep -q . && break; sleep 0.1; done
    """)


def _sandbox(tmp_path: Path, scripts: dict[str, str], driver: str) -> str:
    """Runs ``driver`` (bash, with /mnt holding ``scripts`` as NAME.sh) in the throwaway root;
    returns its output."""
    for tool, why in (("unshare", "util-linux"), ("sshd", "Debian package openssh-server")):
        require_tool(tool, why)
    require_root("namespaces need root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for name, text in scripts.items():
        (mnt / f"{name}.sh").write_text(text)
    (mnt / "systemctl").write_text(FAKE_SYSTEMCTL)
    # sshd's own socket, as the reload's check finds it (`listening 22`: ss, real): a listener
    # the driver stops on its way out, bounded by timeout if the driver is killed.
    (mnt / "driver.sh").write_text("set -u\ninstall -m 0755 /mnt/systemctl /usr/local/sbin/systemctl\n"
                                   "mkdir -p /run/sshd\n" + LISTENER + driver)
    base = tmp_path / "sandbox"
    base.mkdir()
    result = run_in_throwaway_root(mnt, base, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _steps(output: str) -> dict[str, tuple[int, str]]:
    """{step: (exit status, output)} of a driver that runs ``step NAME SCRIPT``."""
    return {name: (int(status), text)
            for name, text, status in re.findall(r"=== (\S+)\n(.*?)=== exit (\d+)\n", output, re.S)}


STEP = textwrap.dedent("""\
    step() {
      echo "=== $1"
      bash "/mnt/$2.sh" 2>&1
      echo "=== exit $?"
    }
    show() {
      echo "=== $1"
      cat "$2" 2>&1
      echo "=== exit $?"
    }
    """)


def _changes(text: str) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", text).group(1))


def test_a_drop_in_sshd_rejects_is_not_left_in_place_and_the_fixed_one_applies(tmp_path):
    good = hostsetup.render_sshd_config(hostsetup.SshdPolicy())
    scripts = {
        "good": hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy())),
        # sshd -t: "Badly formatted port number"
        "bad": hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy(port=70000))),
        "fixed": hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy(max_auth_tries=4))),
    }
    out = _steps(_sandbox(tmp_path, scripts, STEP + textwrap.dedent(f"""\
        step first good
        step bad bad
        show after-bad {DROP_IN}
        echo "=== sshd-t-after-bad"; sshd -t 2>&1; echo "=== exit $?"
        step bad-again bad
        step fixed fixed
        show after-fixed {DROP_IN}
        step fixed-again fixed
        show reloads /var/lib/fake-systemctl.calls
        """)))
    assert out["first"][0] == 0 and _changes(out["first"][1]) == 1, out["first"]
    status, text = out["bad"]
    assert status == 1, text
    assert f"rejected: {DROP_IN} fails its check (sshd -t)" in text
    assert "Badly formatted port number" in text
    assert out["after-bad"] == (0, good), "the previous drop-in is still in place"
    assert out["sshd-t-after-bad"][0] == 0, out["sshd-t-after-bad"]
    # Still rejected on the next run: it is tried again, never skipped as current.
    assert out["bad-again"][0] == 1 and "rejected:" in out["bad-again"][1]
    assert out["fixed"][0] == 0 and _changes(out["fixed"][1]) == 1, out["fixed"]
    assert "MaxAuthTries 4" in out["after-fixed"][1]
    assert out["fixed-again"][0] == 0 and _changes(out["fixed-again"][1]) == 0, out["fixed-again"]
    # Reloaded for the first and the fixed drop-in only: never for the rejected one.
    assert out["reloads"][1].count("reload ssh") == 2, out["reloads"]


def test_an_apply_that_fails_puts_the_previous_file_back_and_the_next_run_retries(tmp_path):
    scripts = {
        "first": hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy())),
        "second": hostsetup.script(hostsetup.sshd_section(hostsetup.SshdPolicy(max_auth_tries=5))),
    }
    out = _steps(_sandbox(tmp_path, scripts, STEP + textwrap.dedent(f"""\
        step first first
        echo "MaxAuthTries 5" >/etc/fail-reload
        step failing second
        show after-failing {DROP_IN}
        rm /etc/fail-reload
        step retried second
        show after-retry {DROP_IN}
        step current second
        """)))
    assert out["first"][0] == 0
    status, text = out["failing"]
    assert status == 1 and "the previous version is back in place and applied" in text, text
    assert "MaxAuthTries 3" in out["after-failing"][1]
    # Today's code reported "0 changes" here: the new file was in place, its apply never re-run.
    assert out["retried"][0] == 0 and _changes(out["retried"][1]) == 1, out["retried"]
    assert "MaxAuthTries 5" in out["after-retry"][1]
    assert out["current"][0] == 0 and _changes(out["current"][1]) == 0


def test_a_run_that_dies_between_write_and_apply_is_completed_by_the_next(tmp_path):
    # A lost SSH session or a killed script after the new file is written: the apply never ran.
    path = "/etc/platform/example.conf"
    dying = hostsetup.script(hostsetup.deliver_file(path, "0644", "root:root", "two\n", on_change="kill -9 $$"))
    scripts = {
        "first": hostsetup.script(hostsetup.deliver_file(path, "0644", "root:root", "one\n", on_change="true")),
        "dying": dying,
        "next": hostsetup.script(hostsetup.deliver_file(path, "0644", "root:root", "two\n",
                                                        on_change="echo applied-two >>/etc/platform/applied")),
    }
    out = _steps(_sandbox(tmp_path, scripts, STEP + textwrap.dedent(f"""\
        step first first
        step dying dying
        show after-dying {path}
        step next next
        show applied /etc/platform/applied
        step again next
        """)))
    assert out["dying"][0] == 137
    assert out["after-dying"] == (0, "two\n")
    status, text = out["next"]
    assert status == 0 and f"restoring {path}" in text and _changes(text) == 1, text
    assert out["applied"] == (0, "applied-two\n")
    assert out["again"][0] == 0 and _changes(out["again"][1]) == 0


def test_a_sudoers_file_visudo_rejects_is_never_installed(tmp_path):
    path = "/etc/sudoers.d/90-platform-deploy"
    bad = hostsetup.script(hostsetup.deliver_file(path, "0440", "root:root", "deploy ALL=(ALL) NOPASSWD ALL\n",
                                                  validate=f"visudo -cqf {path}"))
    out = _steps(_sandbox(tmp_path, {"bad": bad}, STEP + f"step bad bad\nshow after {path}\n"))
    assert out["bad"][0] == 1 and "rejected:" in out["bad"][1]
    assert out["after"][0] != 0, "a new file that fails its check is removed"
