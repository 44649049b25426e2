"""The restore test's scratch server (docker mode) is bounded by its datastore's own limits
(new user finding 4: it had no --memory/--cpus and its data an unbounded tmpfs): started by the
rendered ``scratch_start`` against a real Docker daemon (tests/test_host_delivery.py's fixture),
with an image named as the job's tool image that holds this machine's sleep, cat and df; then
Docker's own view of it (memory, swap, CPUs) and the tmpfs's size as df sees it inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from components.backupscripts import BackupJob
from components.backupscripts.restore import scratch_server
from synth.state import State
from tests.conftest import synth_once
from tests.isolation import tool_image
from tests.test_host_delivery import _docker, dockerd  # noqa: F401 - dockerd is a fixture

IMAGE = "platform-test/scratch-bounds:1"


@pytest.mark.realtool
def test_the_scratch_postgres_is_started_with_the_jobs_memory_cpu_and_tmpfs_bounds(tmp_path, dockerd):  # noqa: F811
    job = BackupJob(job="bounds", kind="postgres", retention_days=7, tool_image=IMAGE,
                    scratch_memory_mb=300, scratch_cpus=0.5)
    imported = subprocess.run(dockerd.cli("import", "--change", 'CMD ["/usr/bin/sleep", "600"]', "-", IMAGE),
                              input=tool_image(*(shutil.which(t) for t in ("sleep", "cat", "df"))),
                              capture_output=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    script = tmp_path / "scratch.sh"
    script.write_text("set -euo pipefail\nJOB=bounds\n" + scratch_server(job, "postgres")
                      + 'scratch_start\necho "$SCRATCH_CONTAINER"\n')
    started = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "DOCKER_HOST": dockerd.host})
    assert started.returncode == 0, started.stderr
    name = started.stdout.strip()
    try:
        memory, swap, cpus = _docker(dockerd, "inspect", "-f",
                                     "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}}",
                                     name).split()
        assert (int(memory), int(swap), int(cpus)) == (300 << 20, 300 << 20, 500_000_000)
        df = _docker(dockerd, "exec", name, "df", "-m", "/var/lib/postgresql/data").splitlines()[-1].split()
        assert df[0] == "tmpfs" and int(df[1]) == 300, df
    finally:
        _docker(dockerd, "rm", "-f", name, check=False)


@pytest.mark.fast
def test_the_stacks_scratch_servers_take_their_datastores_limits():
    state = State(synth_once("staging"))
    script = state.named("vedfinance-staging-vedfinance-staging-backup-install", "command:remote:Command")["inputs"]["stdin"]
    memory_mb = state.named("vedfinance-staging-postgres", "docker:index/container:Container")["inputs"]["memory"]
    assert f"--memory {memory_mb}m --memory-swap {memory_mb}m" in script
    assert f"--tmpfs /var/lib/postgresql/data:size={memory_mb}m" in script
    with pytest.raises(ValueError, match="scratch_memory_mb"):
        BackupJob(job="x", kind="postgres", retention_days=7, scratch_memory_mb=10)
