"""A running WAL receiver (``platform-wal-receive-JOB.service``, a pitr job) is restarted when its
script (which names the tool image) or its unit changes, proven running by ``apply_unit``, and
not when only another of the job's files changes (new user finding 2: it was never restarted).

The job's rendered install script runs with its paths moved under the test's directory and the
stand-in ``systemctl`` of tests/test_host_unit_apply.py (every unit of the job already active);
bash, install, cmp and stat are real.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from synth.state import State
from tests.conftest import synth_once
from tests.test_host_unit_apply import FAKE_SYSTEMCTL

JOB = "vedfinance-staging-wal"
RECEIVER = f"platform-wal-receive-{JOB}.service"
pytestmark = pytest.mark.realtool


def _install_script() -> str:
    return State(synth_once("staging")).named(f"{JOB}-backup-install", "command:remote:Command")["inputs"]["stdin"]


def _run(tmp_path: Path, script: str) -> list[str]:
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    for directory in (bin_dir, units, tmp_path / "sbin", tmp_path / "systemd"):
        directory.mkdir(exist_ok=True)
    for name, text in {"systemctl": FAKE_SYSTEMCTL, "journalctl": "#!/bin/sh\necho stand-in journal\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for unit in [line.split()[1] for line in script.splitlines() if line.startswith("ensure_service_enabled ")]:
        (units / f"{unit}.active").touch()
    (units / "calls").write_text("")
    body = "\n".join(":" if line.startswith(("ensure_packages ", "install -d ")) else line
                     for line in script.splitlines())
    body = (body.replace("/usr/local/sbin", str(tmp_path / "sbin")).replace("/etc/systemd/system", str(tmp_path / "systemd"))
            .replace("PENDING=/var/lib/platform/pending", f"PENDING={tmp_path}/pending"))
    (tmp_path / "install.sh").write_text(body)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "UNITS": str(units)}
    result = subprocess.run(["bash", str(tmp_path / "install.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return [c for c in (units / "calls").read_text().splitlines() if c.startswith("restart ")]


def test_the_receiver_restarts_when_its_script_or_unit_changes_and_not_otherwise(tmp_path):
    script = _install_script()
    image = "pgvector/pgvector:0.8.0-pg17"
    assert f"put_file {tmp_path}" not in script and image in script
    assert _run(tmp_path, script) == [f"restart {RECEIVER}"], "a first install restarts the running receiver"
    assert _run(tmp_path, script) == [], "nothing changed: no restart"
    # A new tool image: the receiver script and the other scripts change.
    assert _run(tmp_path, script.replace(image, "pgvector/pgvector:0.8.1-pg17")) == [f"restart {RECEIVER}"]
    unit_changed = script.replace("Description=Continuous WAL receiver", "Description=The continuous WAL receiver")
    assert unit_changed != script
    assert _run(tmp_path, unit_changed) == [f"restart {RECEIVER}"]
    # Only another job's unit: the receiver keeps running.
    other = unit_changed.replace("Description=Base backup of", "Description=The base backup of")
    assert other != unit_changed
    assert _run(tmp_path, other) == []
