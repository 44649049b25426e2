"""``apply_unit``: a systemd unit restarted or reloaded by a file change counts only once it is
proven running (active on one run of it, its own status command answering), else the file is
put back, the unit applied again, and the step fails naming the unit with its journal tail.

systemd is not PID 1 here, so ``systemctl`` is a stand-in keeping each unit's state in files
under ``$UNITS``: a restart or reload reads the unit's config (``$UNITS/<unit>.config`` names
the file) and, when it holds the line ``exit-after-start``, the unit dies (``failed``), as a
Type=simple service that forks and exits on a setting it refuses; ``<unit>.flaps``: active, but
a new run (InvocationID) at every look, as a unit Restart= keeps starting. ``journalctl`` is a
stand-in too; bash, install, cmp and stat are real. The same helper on a real box with systemd:
tests/rehearsal/test_unit_apply_box.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from components import hostsetup
from components.hostsetup.delivery import PRELUDE, UNIT_ACTIONS

FAKE_SYSTEMCTL = textwrap.dedent("""\
    #!/bin/bash
    verb="$1"; shift
    while [ "${1#-}" != "$1" ]; do
      case "$1" in -p|-n) shift 2 ;; *) shift ;; esac
    done
    unit="$1"
    echo "$verb $unit" >>"$UNITS/calls"
    run() { if [ -e "$UNITS/$unit.flaps" ]; then echo "$RANDOM$RANDOM"; else cat "$UNITS/$unit.run" 2>/dev/null; fi; }
    case "$verb" in
      is-active) [ -e "$UNITS/$unit.active" ] || [ -e "$UNITS/$unit.flaps" ] ;;
      is-failed) [ -e "$UNITS/$unit.failed" ] ;;
      restart|reload)
        [ "$verb" = reload ] || echo "$RANDOM" >"$UNITS/$unit.run"
        if grep -qx exit-after-start "$(cat "$UNITS/$unit.config")" 2>/dev/null; then
          rm -f "$UNITS/$unit.active"; touch "$UNITS/$unit.failed"
        else
          touch "$UNITS/$unit.active"; rm -f "$UNITS/$unit.failed"
        fi ;;
      show) run ;;
      status) echo "$unit - stand-in" ;;
      *) exit 0 ;;
    esac
    """)


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir(exist_ok=True)
    units.mkdir(exist_ok=True)
    for name, text in {"systemctl": FAKE_SYSTEMCTL,
                       "journalctl": "#!/bin/sh\necho \"stand-in journal of $2: exited right after its start\"\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    path = tmp_path / "setup.sh"
    # The transaction's pending copies under the test's own directory, not /var/lib/platform.
    path.write_text(hostsetup.script(body).replace("PENDING=/var/lib/platform/pending",
                                                   f"PENDING={tmp_path}/pending"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "UNITS": str(units)}
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=120)


def _changes(result: subprocess.CompletedProcess) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", result.stdout).group(1))


def _owner() -> str:
    return f"{os.getuid()}:{os.getgid()}"


@pytest.mark.realtool
def test_a_config_that_makes_the_unit_exit_is_put_back_and_the_step_fails_naming_the_unit(tmp_path):
    conf = tmp_path / "demo.conf"
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "demo.config").write_text(str(conf))
    apply = hostsetup.unit_apply("restart", "demo", "test", "-e", str(conf))

    def section(text: str) -> str:
        return hostsetup.deliver_file(str(conf), "0644", _owner(), text, on_change=apply)

    good = _run(tmp_path, section("setting = 1\n"))
    assert good.returncode == 0 and _changes(good) == 1, good.stdout + good.stderr
    bad = _run(tmp_path, section("setting = 2\nexit-after-start\n"))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "unit demo: not proven running 30 s after its restart" in bad.stderr
    assert "stand-in journal of demo: exited right after its start" in bad.stderr
    assert "the previous version is back in place and applied" in bad.stderr
    assert conf.read_text() == "setting = 1\n"
    assert (tmp_path / "units" / "demo.active").exists(), "the unit is running on the old file again"
    restarts = (tmp_path / "units" / "calls").read_text().count("restart demo")
    assert restarts == 3, "the first apply, the failed one and the one onto the old file"
    # Not recorded as applied: the next run tries it again, and the fixed file passes.
    again = _run(tmp_path, section("setting = 2\nexit-after-start\n"))
    assert again.returncode == 1 and "unit demo:" in again.stderr
    fixed = _run(tmp_path, section("setting = 2\n"))
    assert fixed.returncode == 0 and _changes(fixed) == 1, fixed.stdout + fixed.stderr
    settled = _run(tmp_path, section("setting = 2\n"))
    assert settled.returncode == 0 and _changes(settled) == 0, settled.stdout


@pytest.mark.realtool
def test_a_unit_that_is_active_but_never_on_the_same_run_is_not_proven_running(tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "flappy.flaps").touch()
    result = _run(tmp_path, hostsetup.unit_apply("restart", "flappy", seconds=4) + "\necho after")
    assert result.returncode == 1
    assert "unit flappy: not proven running 4 s after its restart" in result.stderr
    assert "after" not in result.stdout.split("\n")


@pytest.mark.realtool
def test_a_status_command_that_fails_fails_the_apply_with_its_answer(tmp_path):
    marker = tmp_path / "jail-up"
    body = hostsetup.unit_apply("restart", "fail2ban", "ls", str(marker), seconds=3)
    failing = _run(tmp_path, body)
    assert failing.returncode == 1
    assert f"unit fail2ban: its status command 'ls {marker}' answers:" in failing.stderr
    assert "No such file" in failing.stderr
    marker.touch()
    passing = _run(tmp_path, body)
    assert passing.returncode == 0, passing.stderr


@pytest.mark.realtool
def test_try_acts_only_on_a_running_unit(tmp_path):
    stopped = _run(tmp_path, hostsetup.unit_apply("try-reload", "wg-quick@wg0", "false"))
    assert stopped.returncode == 0, stopped.stderr
    assert "reload wg-quick@wg0" not in (tmp_path / "units" / "calls").read_text()
    (tmp_path / "units" / "wg-quick@wg0.active").touch()
    running = _run(tmp_path, hostsetup.unit_apply("try-reload", "wg-quick@wg0", "true"))
    assert running.returncode == 0, running.stderr
    assert "reload wg-quick@wg0" in (tmp_path / "units" / "calls").read_text()


@pytest.mark.fast
def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="unit action 'bounce'"):
        hostsetup.unit_apply("bounce", "ssh")
    assert hostsetup.unit_apply("try-service-restart", "auditd", "auditctl", "-s") == \
        "apply_unit try-service-restart auditd 30 auditctl -s"
    assert set(UNIT_ACTIONS) == {"restart", "reload", "service-restart"}


def _host_scripts() -> dict[str, str]:
    from components import wireguard
    from components.egress import host_proxy_section

    sections = {name: text for name, text in hostsetup.host_baseline(sshd=hostsetup.SshdPolicy()).items()}
    sections["sessions-shipping"] = hostsetup.session_shipping_section(
        hostsetup.SessionShipping(collector="10.0.0.5", peer_name="mon", ca_pem="CA"), "CA")
    sections["sessions-collector"] = hostsetup.session_collector_section("10.0.0.5", "CERT", "KEY", "CA")
    sections["proxy"] = host_proxy_section("http://10.0.0.2:3128")
    sections["wireguard"] = wireguard.wireguard_section(
        wireguard.Endpoint(address="10.99.0.1", network="10.99.0.0/24", listen_port=51820, peers=()), "KEY")
    return sections


@pytest.mark.fast
def test_every_unit_restart_or_reload_in_the_host_scripts_goes_through_apply_unit():
    scripts = _host_scripts()
    found = {}
    for name, text in scripts.items():
        body = text.replace(PRELUDE, "")
        assert not re.findall(r"systemctl (?:restart|reload|try-restart) |service \S+ restart", body), name
        found[name] = re.findall(r"apply_unit (\S+ \S+ \d+.*?)'", body)
    # The services the baseline restarts, each with its own status command.
    assert found["fail2ban"] == ["restart fail2ban 30 fail2ban-client status sshd"]
    assert found["docker"] == ["restart docker 60 docker info"]
    assert found["sshd"] == ["try-reload ssh 30 listening 22"]
    assert found["base"] == ["restart systemd-journald 30"]
    assert found["sessions-collector"] == ["restart rsyslog 30 listening 6514"]
    # wg0.conf is applied by wg_apply (a reload for peers, a restart for [Interface] changes).
    assert found["wireguard"] == []
    assert re.findall(r"apply_unit (\S+ wg-quick@wg0 \d+ \S+)", scripts["wireguard"]) == [
        "restart wg-quick@wg0 30 wg_up", '"$action" wg-quick@wg0 30 wg_up', "restart wg-quick@wg0 30 wg_up"]
    assert "commit_files 'wg-quick strip /etc/wireguard/wg0.conf >/dev/null' wg_apply " in scripts["wireguard"]
    assert found["proxy"] == ["try-restart docker 60 docker info"]
