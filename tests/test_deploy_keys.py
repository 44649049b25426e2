"""One deploy key per product, from the repository secrets to the ssh-agent of the deploy job."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from synth.engine import PROJECT_ROOT
from tests.conftest import require_tool

SCRIPT = str(PROJECT_ROOT / "scripts" / "deploy_keys.py")


@pytest.mark.fast
def test_the_deploy_workflow_maps_a_secret_per_product_of_every_stack():
    deploy = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    steps = deploy["jobs"]["up"]["steps"]
    load = next(s for s in steps if "deploy_keys.py" in s.get("run", ""))
    tunnel = next(i for i, s in enumerate(steps) if "pencom_tunnel.py" in s.get("run", ""))
    assert steps.index(load) < tunnel, "keys are in the agent before the tunnel opens"
    assert "DEPLOY_SSH_PRIVATE_KEY" not in str(deploy)
    for stack in ("staging", "prod"):
        names = subprocess.run([sys.executable, SCRIPT, stack, "--names"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert names, stack
        for name in names:
            assert load["env"][name] == "${{ secrets.%s }}" % name


@pytest.mark.realtool
def test_keys_reach_a_real_agent_and_a_missing_one_is_named(tmp_path):
    agent = require_tool("ssh-agent", "Debian package openssh-client")
    keygen = require_tool("ssh-keygen", "Debian package openssh-client")
    require_tool("ssh-add", "Debian package openssh-client")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SSH_PRIVATE_KEY")}
    socket = tmp_path / "agent.sock"
    started = subprocess.run([agent, "-a", str(socket), "-s"], capture_output=True, text=True, check=True)
    pid = next(line.split("=")[1].split(";")[0] for line in started.stdout.split("\n") if "SSH_AGENT_PID=" in line)
    try:
        env["SSH_AUTH_SOCK"] = str(socket)
        names = subprocess.run([sys.executable, SCRIPT, "prod", "--names"], capture_output=True,
                               text=True, check=True).stdout.split()
        fingerprints = []
        for name in names:
            key = tmp_path / name.lower()
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            fingerprints.append(subprocess.run([keygen, "-lf", str(key)], capture_output=True, text=True,
                                               check=True).stdout.split()[1])
            env[name] = key.read_text()
        missing = dict(env)
        del missing[names[-1]]
        refused = subprocess.run([sys.executable, SCRIPT, "prod"], env=missing, capture_output=True, text=True)
        assert refused.returncode == 2 and names[-1] in refused.stderr
        assert subprocess.run(["ssh-add", "-l"], env=env, capture_output=True).returncode == 1, "nothing added"
        result = subprocess.run([sys.executable, SCRIPT, "prod"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True).stdout
        assert sorted(line.split()[1] for line in listed.splitlines()) == sorted(fingerprints)
        assert "PRIVATE KEY" not in result.stdout + result.stderr
    finally:
        subprocess.run(["kill", pid])


@pytest.mark.fast
@pytest.mark.parametrize("text,expected", [
    (b"\xff\xfe", "UTF-8"),
    (b"- a\n", "mapping"),
    (b"config: [1]\n", "config"),
])
def test_a_bad_stack_file_is_one_error_exit_2(tmp_path, text, expected):
    """The deploy job runs this first: a stack the program would refuse stops it here, in words."""
    stack_file = tmp_path / "Pulumi.qa.yaml"
    stack_file.write_bytes(text)
    result = subprocess.run([sys.executable, SCRIPT, "qa", "--stack-file", str(stack_file), "--names"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr
