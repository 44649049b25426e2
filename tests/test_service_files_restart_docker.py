"""The health wait of a service's delivery against a real Docker daemon (Debian's dockerd in a
network namespace of its own, tests/test_host_delivery.py's fixture): after ``docker restart``
Docker reports the new start as "starting" until its healthcheck decides, so a file the server
starts on but its healthcheck refuses is rolled back, and the container is healthy again on the
previous file; a good file is committed once Docker says healthy.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from components.service_files import HostFile, Reload, render_service_script, service_mounts
from tests.test_host_delivery import IMAGE, _docker, _until, dockerd  # noqa: F401 - dockerd is a fixture

pytestmark = pytest.mark.realtool

FILE = "/etc/demo/value.conf"


def _health(daemon, cid: str) -> str:
    return _docker(daemon, "inspect", "-f", "{{.State.Health.Status}}", cid, check=False).strip()


def test_a_restart_onto_a_file_the_healthcheck_refuses_is_rolled_back_by_real_docker(tmp_path, dockerd):  # noqa: F811
    data_dir = tmp_path / "srv"
    env = {**os.environ, "DOCKER_HOST": dockerd.host}

    def deliver(value: str) -> subprocess.CompletedProcess:
        script = render_service_script("lab", str(data_dir), "demo", [HostFile(FILE, value)], [value], Reload(),
                                       textfile_dir=str(tmp_path / "textfile"))
        (tmp_path / "files-demo.sh").write_text(script)
        return subprocess.run(["bash", str(tmp_path / "files-demo.sh")], capture_output=True, text=True, env=env,
                              timeout=300)

    assert deliver("good first\n").returncode == 0
    mounts = service_mounts(str(data_dir), "demo", [HostFile(FILE, "")])
    volumes = [a for m in mounts for a in ("-v", f"{m.host_path}:{m.container_path}:ro")]
    # The server reads its file at start (as a datastore its certificate); the healthcheck
    # judges what it read, so only a restart shows a new file to it.
    cid = _docker(dockerd, "run", "-d", "--network", "none", "--label", "platform.stack=lab",
                  "--label", "platform.service=demo", "-v", "/usr:/usr:ro", *volumes,
                  "--health-cmd", "grep -q '^good' /tmp/read", "--health-interval", "1s",
                  "--health-timeout", "2s", "--health-retries", "2", "--health-start-period", "0s",
                  IMAGE, "/usr/bin/sh", "-c", f"cat {FILE} >/tmp/read; echo read: $(cat /tmp/read); exec sleep 600"
                  ).strip()
    assert _until(lambda: _health(dockerd, cid) == "healthy", timeout=60), _health(dockerd, cid)

    refused = deliver("bad second\n")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert re.search(r"status, health, start: running unhealthy", refused.stderr), refused.stderr
    assert "read: bad second" in refused.stderr  # the container's own log
    assert "the previous version is back in place and applied" in refused.stderr
    assert (data_dir / "files" / "demo" / FILE.lstrip("/")).read_text() == "good first\n"
    assert _health(dockerd, cid) == "healthy"
    started = _docker(dockerd, "inspect", "-f", "{{.State.StartedAt}}", cid)

    fixed = deliver("good third\n")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _health(dockerd, cid) == "healthy"
    assert _docker(dockerd, "inspect", "-f", "{{.State.StartedAt}}", cid) != started
    assert "read: good third" in _docker(dockerd, "logs", "--tail", "1", cid)
