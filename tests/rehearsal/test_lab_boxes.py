"""Real boxes in a real lab: systemd as PID 1, sshd answering inside the namespace, a NoCloud
first boot, apt from the local repository, and a teardown that leaves nothing, also after a
failure and a Ctrl-C. Slow (the first run builds the box image): marker ``rehearsal``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rehearsal.lab import BoxSpec, Lab
from rehearsal.netns import LabBusy, LabError, LabLock, mounts_under
from tests.conftest import require_tool

pytestmark = pytest.mark.rehearsal

NETWORKS = {"public": "203.0.113.0/24", "private": "10.41.0.0/24"}
USER_DATA = """#cloud-config
disable_root: false
write_files:
  - path: /etc/platform-probe
    permissions: "0640"
    content: |
      written by cloud-init
runcmd:
  - [sh, -c, "echo ran > /var/tmp/runcmd-ran"]
"""


@pytest.fixture(scope="module")
def tools():
    for tool, why in [("dockerd", "the harness Docker daemon"), ("debootstrap", "the box image"),
                      ("dpkg-scanpackages", "the local apt repository"),
                      ("nsenter", "entering the lab namespace"), ("ssh", "reaching the boxes"),
                      ("ssh-keygen", "the harness key")]:
        require_tool(tool, why)


@pytest.fixture(scope="module")
def harness_key(tmp_path_factory, tools) -> Path:
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def lab(harness_key, tmp_path_factory):
    pubkey = Path(f"{harness_key}.pub").read_text().strip()
    boxes = [
        BoxSpec("onprem", {"private": "10.41.0.10"}, root_authorized_keys=(pubkey,),
                memory_mb=768),
        BoxSpec("droplet", {"public": "203.0.113.20", "private": "10.41.0.20"},
                user_data=USER_DATA, root_authorized_keys=(pubkey,)),
    ]
    lab = Lab(NETWORKS, boxes, lock_path=tmp_path_factory.mktemp("lock") / "lab.lock")
    with lab:
        yield lab
    assert_nothing_left(lab)


def assert_nothing_left(lab: Lab) -> None:
    _assert_nothing_left(lab.netns, lab.workdir, lab.run_dir, lab.harness_data_root)


def _assert_nothing_left(netns: str, workdir: Path, run_dir: Path, data_root: Path) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns not in namespaces
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(run_dir) not in ps, "a dockerd or containerd of the lab still runs"
    assert mounts_under(workdir) == [] and mounts_under(run_dir) == []
    assert mounts_under(data_root) == []
    assert not workdir.exists() and not run_dir.exists()


def ssh(lab: Lab, key: Path, target: str, command: str) -> subprocess.CompletedProcess:
    return lab.run_in_netns(["ssh", "-i", str(key), "-o", "BatchMode=yes",
                             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                             "-o", "ConnectTimeout=10", target, command], text=True, timeout=60)


def test_boxes_boot_systemd_as_pid1_and_answer_ssh_inside_the_namespace(lab, harness_key):
    for name, address in [("onprem", "10.41.0.10"), ("droplet", "203.0.113.20"),
                          ("droplet", "10.41.0.20")]:
        state = lab.exec(name, ["systemctl", "is-system-running"]).stdout.decode().strip()
        assert state in ("running", "degraded"), name
        assert lab.exec(name, ["cat", "/proc/1/comm"]).stdout.decode().strip() == "systemd"
        answer = ssh(lab, harness_key, f"root@{address}", "hostname")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == name


def test_each_box_has_its_own_machine_id_and_ssh_host_keys(lab):
    ids = {lab.exec(b, ["cat", "/etc/machine-id"]).stdout for b in lab.boxes}
    keys = {lab.exec(b, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout for b in lab.boxes}
    assert len(ids) == 2 and len(keys) == 2 and b"" not in ids


def test_droplet_boots_its_user_data_through_nocloud(lab):
    probe = lab.exec("droplet", ["stat", "-c", "%a %U", "/etc/platform-probe"])
    assert probe.stdout.decode().split() == ["640", "root"]
    assert lab.exec("droplet", ["cat", "/var/tmp/runcmd-ran"]).stdout == b"ran\n"
    status = lab.exec("droplet", ["cloud-init", "status", "--long"]).stdout.decode()
    assert "status: done" in status and "DataSourceNoCloud" in status


def test_apt_in_a_box_installs_from_the_local_repository_only(lab):
    assert lab.exec("onprem", ["sh", "-c", "command -v curl"]).returncode != 0, \
        "curl is preinstalled: a fresh box must not have what the stack installs"
    install = lab.exec("onprem", ["sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive"
                                  " apt-get install -y -q --no-install-recommends curl"])
    assert install.returncode == 0, install.stdout.decode()[-2000:] + install.stderr.decode()
    assert lab.exec("onprem", ["curl", "--version"]).returncode == 0
    policy = lab.exec("onprem", ["apt-cache", "policy", "curl"]).stdout.decode()
    assert lab.apt_url in policy
    # The box's only source names Debian's mirror, which inside the lab is the lab's repository.
    resolved = lab.exec("onprem", ["getent", "hosts", "deb.debian.org"]).stdout.decode()
    assert resolved.split()[0] == lab.service_address
    served = (lab.workdir / "services" / "apt.log").read_text()
    assert "GET /debian/dists/bookworm/" in served and "GET /debian/pool/curl_" in served


def test_the_namespace_has_no_route_out(lab):
    routes = lab.run_in_netns(["ip", "route", "show", "default"], text=True)
    assert routes.returncode == 0 and routes.stdout.strip() == ""
    probe = lab.exec("onprem", ["sh", "-c", "exec 3<>/dev/tcp/192.0.2.1/80"], timeout=30)
    assert probe.returncode != 0


def test_a_second_lab_on_the_same_lock_is_refused_before_making_anything(tmp_path):
    lock = tmp_path / "lab.lock"
    holder = LabLock(lock)
    holder.acquire()
    try:
        before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        second = Lab(NETWORKS, [BoxSpec("x", {"private": "10.41.0.30"})], lock_path=lock)
        with pytest.raises(LabBusy, match="another rehearsal is running"):
            second.start()
        after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert second.netns not in after and before.count("\n") == after.count("\n")
    finally:
        holder.release()


def test_a_box_that_fails_its_first_boot_names_itself_and_leaves_nothing(tools, tmp_path):
    broken = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo induced failure >&2; exit 3']\n"
    lab = Lab(NETWORKS, [BoxSpec("broken", {"private": "10.41.0.40"}, user_data=broken)],
              lock_path=tmp_path / "lab.lock")
    with pytest.raises(LabError, match=r"box broken: cloud-init did not finish cleanly"):
        lab.start()
    assert_nothing_left(lab)


def test_ctrl_c_inside_a_lab_tears_it_down(tools, tmp_path):
    lab = Lab(NETWORKS, [BoxSpec("one", {"public": "203.0.113.50"})],
              lock_path=tmp_path / "lab.lock")
    with pytest.raises(KeyboardInterrupt):
        with lab:
            assert lab.exec("one", ["true"]).returncode == 0
            raise KeyboardInterrupt
    assert_nothing_left(lab)


SIGTERM_PROGRAM = """
import json, sys, time
from rehearsal.lab import BoxSpec, Lab
lab = Lab({"public": "203.0.113.0/24"}, [BoxSpec("term", {"public": "203.0.113.60"})],
          lock_path=sys.argv[1])
with lab:
    print(json.dumps([lab.netns, str(lab.workdir), str(lab.run_dir),
                      str(lab.harness_data_root)]), flush=True)
    time.sleep(900)
"""


def test_sigterm_to_the_harness_tears_the_lab_down(tools, tmp_path):
    import json
    import sys

    from synth.engine import PROJECT_ROOT

    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_PROGRAM, str(tmp_path / "lab.lock")],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        netns, workdir, run_dir, data_root = json.loads(line)
        assert netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       text=True).stdout
        proc.terminate()
        assert proc.wait(timeout=180) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_nothing_left(netns, Path(workdir), Path(run_dir), Path(data_root))


def test_a_kept_lab_stays_up_and_its_cleanup_command_removes_it(tools, tmp_path):
    import sys

    from synth.engine import PROJECT_ROOT

    lab = Lab(NETWORKS, [BoxSpec("kept", {"public": "203.0.113.70"})], keep=True,
              lock_path=tmp_path / "lab.lock")
    try:
        with lab:
            pass
        assert lab.exec("kept", ["systemctl", "is-system-running"]).returncode in (0, 1)
        assert lab.netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout
    finally:
        cleanup = subprocess.run([sys.executable, "-m", "rehearsal.lab", "cleanup",
                                  str(lab.run_dir)], cwd=PROJECT_ROOT, capture_output=True,
                                 text=True)
    assert cleanup.returncode == 0, cleanup.stderr
    assert_nothing_left(lab)


def test_dockers_firewall_rules_land_in_the_namespace_not_on_the_machine(lab):
    require_tool("iptables-save", "reading the firewall")
    inside = lab.run_in_netns(["iptables-save"], text=True).stdout
    machine = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "-s 203.0.113.0/24" in inside and ":DOCKER" in inside
    assert "203.0.113.0/24" not in machine and "10.41.0.0/24" not in machine


def test_a_box_runs_its_own_docker_daemon_on_overlay2_from_the_local_repository(lab):
    install = lab.exec("droplet", ["sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive"
                                   " apt-get install -y -q --no-install-recommends docker.io"],
                       timeout=900)
    assert install.returncode == 0, install.stdout.decode()[-2000:] + install.stderr.decode()
    active = lab.exec("droplet", ["sh", "-c", "for i in $(seq 180); do systemctl is-active -q "
                                  "docker && break; sleep 1; done; systemctl is-active docker"],
                      timeout=300)
    assert active.stdout == b"active\n", lab.exec(
        "droplet", ["journalctl", "-u", "docker", "-n", "30", "--no-pager"]).stdout.decode()
    info = lab.exec("droplet", ["docker", "info", "--format", "{{.Driver}}"])
    assert info.stdout.decode().strip() == "overlay2", info.stderr.decode()
    # An image from the box's own files (nothing can be pulled), run by the box's daemon.
    run = lab.exec("droplet", ["sh", "-c",
                               "tar -chf - -C / usr/bin/true lib64/ld-linux-x86-64.so.2 "
                               "lib/x86_64-linux-gnu/libc.so.6 | docker import - lab/true "
                               "&& docker run --rm lab/true /usr/bin/true && echo ran"],
                   timeout=300)
    assert run.stdout.decode().strip().endswith("ran"), run.stderr.decode()
