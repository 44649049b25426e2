"""The rendered service and directory primitives of the setup scripts, run for real by bash.

systemd is not PID 1 here, so ``systemctl`` is a stand-in that keeps each unit's state in
files: ``<unit>.enabled``, ``<unit>.active``, and a unit's behaviour on start (``<unit>.skip``:
its Condition is not met, as systemd-timesyncd's ConditionVirtualization=!container in a
container-based VPS; ``<unit>.dies``: it starts and exits). ``stat``, ``install``, ``id`` and
bash are the real ones.
"""

from __future__ import annotations
from tests.conftest import require_root

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from components import hostsetup

FAKE_SYSTEMCTL = textwrap.dedent("""\
    #!/bin/bash
    # Stand-in for systemctl: unit state in files under $UNITS.
    verb="$1"; shift
    while [ "${1#-}" != "$1" ]; do
      case "$1" in -p) shift 2 ;; *) shift ;; esac
    done
    unit="$1"
    case "$verb" in
      is-enabled) [ -e "$UNITS/$unit.enabled" ] ;;
      is-active) [ -e "$UNITS/$unit.active" ] ;;
      is-failed) [ -e "$UNITS/$unit.dies" ] ;;
      enable) touch "$UNITS/$unit.enabled" ;;
      start)
        if [ -e "$UNITS/$unit.skip" ]; then echo no >"$UNITS/$unit.condition"
        elif [ -e "$UNITS/$unit.dies" ]; then echo yes >"$UNITS/$unit.condition"
        else echo yes >"$UNITS/$unit.condition"; touch "$UNITS/$unit.active"; fi ;;
      show) cat "$UNITS/$unit.condition" 2>/dev/null || true ;;
      status) echo "$unit - stand-in: inactive (dead)" ;;
      *) exit 0 ;;
    esac
    """)


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    units = tmp_path / "units"
    bin_dir.mkdir(exist_ok=True)
    units.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    (bin_dir / "journalctl").write_text("#!/bin/sh\necho 'stand-in journal: unit exited'\n")
    (bin_dir / "journalctl").chmod(0o755)
    path = tmp_path / "setup.sh"
    path.write_text(hostsetup.script(body))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "UNITS": str(units)}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=120)


def _changes(result: subprocess.CompletedProcess) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", result.stdout).group(1))


@pytest.mark.realtool
def test_a_unit_skipped_by_its_condition_is_reported_not_changed(tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "systemd-timesyncd.skip").touch()
    first = _run(tmp_path, "ensure_service_enabled systemd-timesyncd")
    assert first.returncode == 0, first.stderr
    assert _changes(first) == 1 and "changed: service systemd-timesyncd enabled" in first.stdout
    assert "skipped: systemd-timesyncd does not run on this host" in first.stdout
    second = _run(tmp_path, "ensure_service_enabled systemd-timesyncd")
    assert second.returncode == 0, second.stderr
    assert _changes(second) == 0, second.stdout
    assert "skipped: systemd-timesyncd" in second.stdout


@pytest.mark.realtool
def test_a_unit_started_is_one_change_then_none(tmp_path):
    first = _run(tmp_path, "ensure_service_enabled chrony")
    assert first.returncode == 0, first.stderr
    assert "changed: service chrony enabled" in first.stdout and "changed: service chrony started" in first.stdout
    second = _run(tmp_path, "ensure_service_enabled chrony")
    assert second.returncode == 0 and _changes(second) == 0, second.stdout + second.stderr


@pytest.mark.realtool
def test_a_unit_that_does_not_stay_up_fails_the_script_with_its_journal(tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "fail2ban.dies").touch()
    result = _run(tmp_path, "ensure_service_enabled fail2ban\necho after")
    assert result.returncode == 1
    assert "unit fail2ban: not proven running 30 s after its start" in result.stderr
    assert "stand-in journal" in result.stderr
    assert "after" not in result.stdout


@pytest.mark.realtool
def test_an_active_unit_whose_status_command_fails_fails_the_script(tmp_path):
    (tmp_path / "units").mkdir()
    for state in ("enabled", "active"):
        (tmp_path / "units" / f"fail2ban.{state}").touch()
    # The jail's status: a command that answers only once the jail is up (a marker exists).
    marker = tmp_path / "jail-up"
    body = f"ensure_service_enabled fail2ban test -e {marker}"
    failing = _run(tmp_path, body)
    assert failing.returncode == 1
    assert f"service fail2ban is enabled but not running: its status command 'test -e {marker}' fails" in failing.stderr
    marker.touch()
    passing = _run(tmp_path, body)
    assert passing.returncode == 0 and _changes(passing) == 0, passing.stdout + passing.stderr


@pytest.mark.fast
def test_the_setup_scripts_prove_their_services_with_their_own_status_command():
    assert "ensure_service_enabled fail2ban fail2ban-client status sshd" in hostsetup.fail2ban_section()
    assert "ensure_service_enabled docker docker info" in hostsetup.docker_section()


@pytest.mark.realtool
@pytest.mark.parametrize("owner", ["65534:65534", "root:65534", "nobody:nogroup"])
def test_a_directory_with_a_numeric_or_named_owner_is_current_on_the_second_run(tmp_path, owner):
    require_root("chown needs root")
    path = tmp_path / "srv" / "data"
    body = hostsetup.directories_section([(str(path), "0750", owner)])
    first = _run(tmp_path, body)
    assert first.returncode == 0 and _changes(first) == 1, first.stdout + first.stderr
    second = _run(tmp_path, body)
    assert second.returncode == 0 and _changes(second) == 0, second.stdout + second.stderr
    assert path.stat().st_uid == 65534 if owner[0].isdigit() or owner.startswith("nobody") else path.stat().st_uid == 0
    # A drift is seen and corrected: the comparison is not always "current".
    os.chown(path, 0, 0)
    third = _run(tmp_path, body)
    assert _changes(third) == 1, third.stdout


@pytest.mark.realtool
def test_put_file_with_a_numeric_owner_is_current_on_the_second_run(tmp_path):
    require_root("chown needs root")
    path = tmp_path / "etc" / "x.conf"
    body = hostsetup.deliver_file(str(path), "0640", "root:65534", "one\n")
    assert _changes(_run(tmp_path, body)) == 1
    assert _changes(_run(tmp_path, body)) == 0
