"""A node's setup scripts, run twice for real inside a throwaway root filesystem: the second run
has nothing to do.

The sandbox is an overlay of this machine's root (writes land in a tmpfs, never in the real
/etc) in private mount and network namespaces, so UFW and iptables act on an empty network
namespace of their own. Real tools do the work (ufw, iptables-restore, sshd -t, fail2ban-client
-t, dpkg, install); only systemd, which does not run in a chroot, is replaced by a stand-in that
remembers which units were enabled.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from components import hostsetup
from synth.state import State
from tests.conftest import require_root, require_tool, synth_once
from tests.isolation import run_in_throwaway_root
from tests.test_pencom import _pencom_only

pytestmark = pytest.mark.realtool

NODE = "pencom-prod-data"
# In the order the program runs them; setup-user is what a node with a bootstrap user runs
# first. The docker script is left out: it installs docker.io, and the sandbox has no network.
SCRIPTS = ["setup-user", "setup-proxy", "setup-ufw", "setup-base", "setup-sshd", "setup-fail2ban", "setup-dirs",
           "docker-firewall"]
# Then the node's file deliveries (files-<service>, secrets-<service>), found in the stack. No
# container runs yet (a first deploy): the stand-in docker lists none.
FAKE_DOCKER = "#!/bin/sh\n[ \"$1\" = ps ] || exit 1\n"

FAKE_SYSTEMCTL = textwrap.dedent("""\
    #!/bin/bash
    # Stand-in for systemctl in the sandbox: remembers enabled and started units; fail2ban is
    # started for real (its server, in the sandbox), so its jail's status is the real answer.
    state=/var/lib/fake-systemd
    mkdir -p "$state"
    echo "$*" >>"$state/calls"
    unit="${!#}"
    case "$1" in
      is-enabled) [ -e "$state/$unit.enabled" ] ;;
      is-active) [ -e "$state/$unit.active" ] ;;
      enable) touch "$state/$unit.enabled" ;;
      start|restart)
        if [ "$unit" = fail2ban ]; then
          mkdir -p /run/fail2ban
          fail2ban-client stop >/dev/null 2>&1
          fail2ban-client start >/dev/null 2>&1 </dev/null || exit 1
        fi
        touch "$state/$unit.active" ;;
      *) exit 0 ;;
    esac
    """)


DRIVER = textwrap.dedent("""\
    #!/bin/bash
    set -u
    install -m 0755 /mnt/systemctl /usr/local/sbin/systemctl
    install -m 0755 /mnt/docker /usr/local/bin/docker
    mkdir -p /run/sshd
    for run in 1 2; do
      for name in @@SCRIPTS@@; do
        echo "=== $name run $run"
        bash "/mnt/$name.sh" 2>&1
        echo "=== exit $?"
      done
    done
    fail2ban-client stop >/dev/null 2>&1 || true
    """)


def _sandbox_tools() -> None:
    for tool, why in (("unshare", "util-linux"), ("ufw", "Debian package ufw"), ("sshd", "Debian package openssh-server"),
                      ("fail2ban-client", "Debian package fail2ban"), ("iptables-restore", "Debian package iptables"),
                      ("unattended-upgrade", "Debian package unattended-upgrades"), ("visudo", "Debian package sudo")):
        require_tool(tool, why)
    require_root("namespaces need root")


def test_setup_scripts_run_twice_leave_nothing_to_do(tmp_path):
    _sandbox_tools()
    state = State(synth_once("prod", document=_pencom_only("prod"), reveal_secrets=True))
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    deliveries = sorted(c["name"].removeprefix(f"{NODE}-") for c in state.of_type("command:remote:Command")
                        if re.match(rf"{NODE}-(files|secrets)-", c["name"]))
    assert {"files-postgres", "secrets-postgres"} <= set(deliveries), deliveries
    names = SCRIPTS + deliveries
    for name in names[1:]:
        (scripts / f"{name}.sh").write_text(state.named(f"{NODE}-{name}", "command:remote:Command")["inputs"]["stdin"])
    (scripts / "setup-user.sh").write_text(hostsetup.script(hostsetup.deploy_user_section(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnlyForTheSandboxTest test")))
    (scripts / "systemctl").write_text(FAKE_SYSTEMCTL)
    (scripts / "docker").write_text(FAKE_DOCKER)
    (scripts / "driver.sh").write_text(DRIVER.replace("@@SCRIPTS@@", " ".join(names)))
    watched = [Path("/home/deploy"), Path("/etc/sudoers.d/90-platform-deploy"), Path("/etc/platform"), Path("/etc/ssh/sshd_config.d/00-platform.conf"),
               Path("/etc/fail2ban/jail.local"), Path("/srv/pencom-prod-data"), Path("/etc/apt/apt.conf.d/90platform-proxy")]
    before = {p: p.exists() for p in watched}

    base = tmp_path / "sandbox"
    base.mkdir()
    result = run_in_throwaway_root(scripts, base, loopback=True, timeout=600)
    assert result.returncode == 0, result.stderr
    runs = re.findall(r"=== (\S+) run (\d)\n(.*?)=== exit (\d+)", result.stdout, re.S)
    assert len(runs) == 2 * len(names), result.stdout[-3000:]
    for name, run, output, status in runs:
        assert status == "0", f"{name} run {run} failed:\n{output}"
        changes = int(re.search(r"platform-setup: (\d+) changes", output).group(1))
        if run == "1":
            assert changes > 0, f"{name} did nothing on its first run:\n{output}"
        else:
            assert changes == 0, f"{name} changed things on its second run:\n{output}"
    first_ufw = next(o for n, r, o, _ in runs if n == "setup-ufw" and r == "1")
    assert "changed: /etc/platform/ufw-rules.sh" in first_ufw
    first_user = next(o for n, r, o, _ in runs if n == "setup-user" and r == "1")
    assert "changed: user deploy" in first_user and "changed: /etc/sudoers.d/90-platform-deploy" in first_user
    # The sandbox kept every write: the machine's own files are as they were.
    assert {p: p.exists() for p in watched} == before
