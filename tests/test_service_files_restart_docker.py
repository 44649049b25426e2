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


def _deliver(tmp_path, dockerd, value: str) -> subprocess.CompletedProcess:  # noqa: F811
    """The demo service's delivery script of ``value``, run against ``dockerd``."""
    script = render_service_script("lab", str(tmp_path / "srv"), "demo", [HostFile(FILE, value)], [value], Reload(),
                                   textfile_dir=str(tmp_path / "textfile"))
    (tmp_path / "files-demo.sh").write_text(script)
    return subprocess.run(["bash", str(tmp_path / "files-demo.sh")], capture_output=True, text=True,
                          env={**os.environ, "DOCKER_HOST": dockerd.host}, timeout=300)


def _demo_container(tmp_path, dockerd) -> str:  # noqa: F811
    """A container of the demo service that reads its file at start; healthy while it starts with 'good'."""
    volumes = [a for m in service_mounts(str(tmp_path / "srv"), "demo", [HostFile(FILE, "")])
               for a in ("-v", f"{m.host_path}:{m.container_path}:ro")]
    return _docker(dockerd, "run", "-d", "--network", "none", "--label", "platform.stack=lab",
                   "--label", "platform.service=demo", "-v", "/usr:/usr:ro", *volumes,
                   "--health-cmd", "grep -q '^good' /tmp/read", "--health-interval", "1s",
                   "--health-timeout", "2s", "--health-retries", "2", "--health-start-period", "0s",
                   IMAGE, "/usr/bin/sh", "-c", f"cat {FILE} >/tmp/read; echo read: $(cat /tmp/read); exec sleep 600"
                   ).strip()


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


def test_every_running_container_of_the_service_is_restarted_onto_the_new_file(tmp_path, dockerd):  # noqa: F811
    """Two containers carry the service's labels (a create-first replacement that failed half-way
    leaves the new one beside the old): each is restarted and proven healthy, none is skipped,
    and two IDs are never passed to docker as one argument."""
    assert _deliver(tmp_path, dockerd, "good first\n").returncode == 0
    cids = [_demo_container(tmp_path, dockerd) for _ in range(2)]
    for cid in cids:
        assert _until(lambda cid=cid: _health(dockerd, cid) == "healthy", timeout=60), _health(dockerd, cid)
    second = _deliver(tmp_path, dockerd, "good second\n")
    assert second.returncode == 0, second.stdout + second.stderr
    for cid in cids:
        assert "read: good second" in _docker(dockerd, "logs", "--tail", "1", cid), cid
        assert _health(dockerd, cid) == "healthy"
