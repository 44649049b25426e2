"""A restart or reload that a service's new files need counts only once the container is back
and healthy (``wait_restarted`` in the rendered script); otherwise the previous files are put
back, the container is restarted onto them, and the step fails with the container's own output,
so the next run finds the files different and tries again.

The rendered script runs for real with bash; ``docker`` is a stub on PATH that plays a container
whose server reads its file at every start and then, by what the file says, turns healthy,
exits, turns unhealthy, is restarted by its restart policy, never leaves "starting", or has no
healthcheck. What Docker itself reports after a real restart is proven by
tests/test_service_files_restart_docker.py (a real dockerd) and on the rehearsal
(tests/rehearsal/test_drills.py, the certificate drill).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from components.service_files import WAIT_RESTARTED, HostFile, Reload, render_service_script
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.realtool

# The container "c0ffee" of service demo. restart: a new start (StartedAt n), whose behaviour is
# the first word of the file the server reads (good, crash, unhealthy, loop, slow, nohealth).
# inspect: the state after that many polls since the start. Every call is logged.
STUB = r"""#!/bin/bash
set -u
S="$STUB_STATE"
echo "$*" >>"$S/calls"
start() {
  n=$(( $(cat "$S/starts" 2>/dev/null || echo 0) + 1 ))
  echo "$n" >"$S/starts"
  echo 0 >"$S/polls"
  read -r mode _ <"$STUB_FILE" || mode=good
  echo "$mode" >"$S/mode"
}
case "$1" in
  ps) [ -e "$S/running" ] && echo c0ffee; exit 0 ;;
  exec) exit 0 ;;
  kill) exit 0 ;;
  restart) start; exit 0 ;;
  logs) echo "demo: FATAL: could not load server certificate \"/etc/demo/value.conf\""; exit 0 ;;
  inspect)
    format="$3"
    n="$(cat "$S/starts")"; mode="$(cat "$S/mode")"
    case "$format" in
      *Health.Log*) echo "healthcheck: connection refused on 127.0.0.1:5432"; exit 0 ;;
      '{{.State.StartedAt}}') echo "2026-12-02T05:00:0${n}Z"; exit 0 ;;
    esac
    polls=$(( $(cat "$S/polls") + 1 )); echo "$polls" >"$S/polls"
    started="2026-12-02T05:00:0${n}Z"
    case "$mode" in
      good) [ "$polls" -ge 3 ] && echo "running healthy $started" || echo "running starting $started" ;;
      crash) echo "exited starting $started" ;;
      unhealthy) [ "$polls" -ge 2 ] && echo "running unhealthy $started" || echo "running starting $started" ;;
      loop) [ "$polls" -ge 2 ] && echo "running starting 2026-12-02T05:09:59Z" || echo "running starting $started" ;;
      slow) echo "running starting $started" ;;
      nohealth) echo "running none $started" ;;
    esac
    exit 0 ;;
esac
echo "stub docker: unexpected $*" >&2
exit 3
"""


class Host:
    """A data directory, the stubbed docker and the rendered delivery of demo's one file."""

    def __init__(self, tmp: Path):
        require_root("put_file installs files as root:root")
        self.bash = require_tool("bash", "Debian package bash")
        self.tmp = tmp
        self.data = tmp / "srv"
        self.state = tmp / "docker-state"
        self.state.mkdir()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        (bin_dir / "docker").write_text(STUB)
        (bin_dir / "docker").chmod(0o755)
        self.file = self.data / "files" / "demo" / "etc" / "demo" / "value.conf"
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_STATE": str(self.state),
                    "STUB_FILE": str(self.file)}

    def run_container(self, mode: str = "good") -> None:
        """The container runs, started on the file as it is now (``mode`` if there is none)."""
        (self.state / "running").touch()
        (self.state / "mode").write_text(mode + "\n")
        (self.state / "starts").write_text("1\n")
        (self.state / "polls").write_text("0\n")

    def deliver(self, value: str, reload: Reload = Reload()) -> subprocess.CompletedProcess:
        script = render_service_script("lab", str(self.data), "demo", [HostFile("/etc/demo/value.conf", value)],
                                       [value], reload, textfile_dir=str(self.tmp / "textfile"))
        path = self.tmp / "files-demo.sh"
        path.write_text(script)
        (self.state / "calls").write_text("")
        return subprocess.run([self.bash, str(path)], capture_output=True, text=True, env=self.env, timeout=120)

    def calls(self, verb: str) -> int:
        return sum(1 for line in (self.state / "calls").read_text().splitlines() if line.split(" ", 1)[0] == verb)


def _changes(out: str) -> int:
    return int(re.search(r"platform-setup: (\d+) changes", out).group(1))


def test_a_restart_that_comes_back_healthy_is_waited_for_and_committed(tmp_path):
    host = Host(tmp_path)
    assert host.deliver("good first\n").returncode == 0
    host.run_container()
    done = host.deliver("good second\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _changes(done.stdout) == 1
    assert host.calls("restart") == 1
    # Polled until Docker said healthy (the stub: at the third look), not trusted at once.
    assert (host.state / "polls").read_text().strip() == "3"
    assert host.file.read_text() == "good second\n"
    again = host.deliver("good second\n")
    assert again.returncode == 0 and _changes(again.stdout) == 0 and host.calls("restart") == 0


@pytest.mark.parametrize("mode, said", [
    ("crash", "status, health, start: exited starting"),
    ("unhealthy", "status, health, start: running unhealthy"),
    # Restarted by its restart policy: a new start is not the one that was awaited.
    ("loop", "running starting 2026-12-02T05:09:59Z"),
])
def test_a_restart_that_does_not_come_back_puts_the_previous_file_back_and_fails(tmp_path, mode, said):
    host = Host(tmp_path)
    host.deliver("good first\n")
    host.run_container()
    failed = host.deliver(f"{mode} second\n")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # The step fails with what went wrong, in the container's own words.
    assert said in failed.stderr, failed.stderr
    assert "container c0ffee is not back after its restart or reload" in failed.stderr
    assert "FATAL: could not load server certificate" in failed.stderr
    assert "connection refused on 127.0.0.1:5432" in failed.stderr
    assert "the previous version is back in place and applied" in failed.stderr
    # The previous file is back, and the container was restarted onto it and came back.
    assert host.file.read_text() == "good first\n"
    assert host.calls("restart") == 2
    assert (host.state / "mode").read_text().strip() == "good"
    # The next run finds the file different and tries again (it is not skipped as current).
    retried = host.deliver(f"{mode} second\n")
    assert retried.returncode == 1 and host.calls("restart") == 2
    # With the cause removed, the next run applies the change.
    fixed = host.deliver("good third\n")
    assert fixed.returncode == 0 and _changes(fixed.stdout) == 1 and host.file.read_text() == "good third\n"


def test_a_reload_is_also_judged_by_the_container_staying_up(tmp_path):
    """A signal reload does not restart: the container keeps its start, and is judged by it."""
    host = Host(tmp_path)
    host.deliver("good first\n")
    host.run_container("nohealth")
    done = host.deliver("nohealth second\n", Reload(signal="HUP"))
    assert done.returncode == 0, done.stderr
    assert host.calls("kill") == 1 and host.calls("restart") == 0
    # No healthcheck: back once it kept running on the same start for three looks.
    assert (host.state / "polls").read_text().strip() == "3"


def test_a_container_that_never_leaves_starting_fails_after_the_given_seconds(tmp_path):
    host = Host(tmp_path)
    host.file.parent.mkdir(parents=True)
    host.file.write_text("slow\n")
    host.run_container("slow")
    script = tmp_path / "wait.sh"
    script.write_text("set -euo pipefail\n" + WAIT_RESTARTED + 'wait_restarted c0ffee 3\n')
    result = subprocess.run([host.bash, str(script)], capture_output=True, text=True, env=host.env, timeout=60)
    assert result.returncode == 1
    assert (host.state / "polls").read_text().strip() == "3"
    assert "status, health, start: running starting" in result.stderr
