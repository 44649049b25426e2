"""The lab's pure parts: the package list against the captured scripts, the rootfs recipe key,
the mirror lookup, the NoCloud seed, spec validation, the lock and the cleanup stack."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest
import yaml

from rehearsal import aptrepo, rootfs
from synth.engine import PROJECT_ROOT
from rehearsal.box import seed_tar
from rehearsal.lab import BoxSpec, Lab
from rehearsal.netns import Cleanup, LabBusy, LabError, LabLock, mounts_under


pytestmark = pytest.mark.fast



def _captured_scripts(state) -> list[str]:
    return [c["inputs"].get("stdin") or "" for c in state.of_type("command:remote:Command")] + \
        [c["inputs"].get("create") or "" for c in state.of_type("command:remote:Command")]


def test_staging_scripts_install_only_packages_the_repo_serves(synth):
    installed = aptrepo.packages_in_scripts(_captured_scripts(synth("staging")))
    assert {"docker.io", "ufw", "fail2ban"} <= installed, "the capture or the parser broke"
    assert installed <= set(aptrepo.STACK_PACKAGES), (
        f"add to aptrepo.STACK_PACKAGES: {sorted(installed - set(aptrepo.STACK_PACKAGES))}")


def test_stack_packages_are_what_the_components_can_install():
    """Every literal ``ensure_packages`` argument in components/ (its packages too), plus the backup jobs' host
    tools (appended to ``ensure_packages rclone`` per job kind)."""
    from components import backup

    sources = "\n".join(p.read_text() for p in (PROJECT_ROOT / "components").rglob("*.py"))
    literal = {word for line in re.findall(r'"ensure_packages ([a-z0-9.+ -]+)"', sources)
               for word in line.split()}
    host_tools = {word for tools in [backup.BASE_TOOLS, *backup.HOST_TOOLS.values()]
                  for word in tools.split()}
    assert literal | host_tools == set(aptrepo.STACK_PACKAGES)


def test_packages_in_scripts_reads_calls_not_the_definition():
    script = ("ensure_packages() {\n  local missing=()\n}\n"
              "ensure_packages fail2ban\n  ensure_packages rclone postgresql-client\n")
    assert aptrepo.packages_in_scripts([script]) == {"fail2ban", "rclone", "postgresql-client"}


def test_packages_in_scripts_refuses_a_variable():
    with pytest.raises(ValueError, match=r"\$PKG"):
        aptrepo.packages_in_scripts(["ensure_packages curl $PKG\n"])


def test_recipe_key_changes_with_packages_or_script_and_only_then():
    base = rootfs.recipe_key()
    assert base == rootfs.recipe_key(tuple(reversed(rootfs.PACKAGES)))
    assert base != rootfs.recipe_key(rootfs.PACKAGES + ("curl",))
    assert base != rootfs.recipe_key(finish=rootfs.FINISH_SCRIPT + "true\n")


def test_box_recipe_preinstalls_nothing_the_stack_installs_except_what_every_cloud_image_has():
    # ca-certificates and iproute2 are in every cloud image (Ubuntu 24.04's included), and the
    # stack ensures both too (apply_unit's listening check uses iproute2's ss).
    assert set(rootfs.PACKAGES) & set(aptrepo.STACK_PACKAGES) == {"ca-certificates", "iproute2"}


def test_debian_mirror_from_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n")
    assert rootfs.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://ftp.example/debian bookworm main\n")
    assert rootfs.debian_mirror(tmp_path) == "http://ftp.example/debian"
    (tmp_path / "sources.list").write_text("deb http://ftp.example/debian trixie main\n")
    with pytest.raises(LabError, match="no source for Debian bookworm"):
        rootfs.debian_mirror(tmp_path)


def _tar_files(data: bytes) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers() if m.isfile()}


def test_seed_of_a_droplet_gives_root_keys_through_metadata():
    spec = BoxSpec("kro-droplet", {"public": "203.0.113.10"}, user_data="#cloud-config\n{}\n",
                   root_authorized_keys=("ssh-ed25519 AAAA harness",))
    files = _tar_files(seed_tar(spec, "abcd"))
    meta = yaml.safe_load(files["var/lib/cloud/seed/nocloud/meta-data"][0])
    assert meta == {"instance-id": "kro-droplet-abcd", "local-hostname": "kro-droplet",
                    "public-keys": ["ssh-ed25519 AAAA harness"]}
    assert files["var/lib/cloud/seed/nocloud/user-data"][0] == b"#cloud-config\n{}\n"
    assert "root/.ssh/authorized_keys" not in files


def test_seed_of_an_onprem_box_writes_root_keys_and_host_keys_of_its_own():
    spec = BoxSpec("pencom-edge", {"private": "10.41.0.10"},
                   root_authorized_keys=("ssh-ed25519 AAAA harness",))
    first, second = _tar_files(seed_tar(spec, "abcd")), _tar_files(seed_tar(spec, "abcd"))
    assert first["root/.ssh/authorized_keys"] == (b"ssh-ed25519 AAAA harness\n", 0o600)
    assert "etc/cloud/cloud-init.disabled" in first
    assert not any(p.startswith("var/lib/cloud/seed") for p in first)
    for kind in ("rsa", "ecdsa", "ed25519"):
        key, mode = first[f"etc/ssh/ssh_host_{kind}_key"]
        assert mode == 0o600 and key.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        assert key != second[f"etc/ssh/ssh_host_{kind}_key"][0]


@pytest.mark.parametrize("boxes, message", [
    ([BoxSpec("a", {"dmz": "10.0.0.5"})], "unknown network 'dmz'"),
    ([BoxSpec("a", {"private": "10.41.0.1"})], "other than its gateway"),
    ([BoxSpec("a", {"private": "10.42.0.5"})], "not a host address of 10.41.0.0/24"),
    ([BoxSpec("a", {})], "no address"),
    ([BoxSpec("a", {"private": "10.41.0.5"}), BoxSpec("a", {"private": "10.41.0.6"})],
     "share a name"),
])
def test_lab_refuses_bad_specs_before_creating_anything(boxes, message):
    with pytest.raises(LabError, match=message):
        Lab({"private": "10.41.0.0/24"}, boxes)


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first, second = LabLock(tmp_path / "lock"), LabLock(tmp_path / "lock")
    first.acquire()
    try:
        with pytest.raises(LabBusy, match=r"another rehearsal is running \(pid \d+"):
            second.acquire()
    finally:
        first.release()
    second.acquire()
    second.release()


def test_cleanup_runs_every_step_newest_first_even_when_one_fails():
    done = []
    steps = Cleanup()
    steps.push("first", lambda: done.append("first"))
    steps.push("broken", lambda: 1 / 0)
    steps.push("last", lambda: done.append("last"))
    with pytest.raises(LabError, match="broken: division by zero"):
        steps.run(raise_errors=True)
    assert done == ["last", "first"]
    assert steps.run(raise_errors=True) == []


def test_mounts_under_finds_nothing_outside_the_root(tmp_path):
    assert mounts_under(tmp_path) == []
    assert "/proc" in mounts_under(Path("/proc")) or mounts_under(Path("/proc"))[-1] == "/proc"


def test_seed_carries_extra_files_root_owned():
    spec = BoxSpec("b", {"private": "10.41.0.10"},
                   files={"/usr/local/share/ca-certificates/lab.crt": b"PEM"})
    files = _tar_files(seed_tar(spec, "abcd"))
    assert files["usr/local/share/ca-certificates/lab.crt"] == (b"PEM", 0o644)



def _host_key():
    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()).decode()
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem))


def _known_hosts_line(address: str) -> str:
    key = _host_key()
    return f"{address} {key.get_name()} {key.get_base64()}\n"


def test_the_converge_keeps_the_host_keys_earlier_runs_recorded(tmp_path):
    """A second run's connections start from the known_hosts the first one wrote: rewriting it
    from its own connections alone would drop hosts whose Docker steps read it."""
    from rehearsal.capture import StackCapture
    from rehearsal.ssh_transport import Connections

    known = tmp_path / ".ssh" / "known_hosts"
    known.parent.mkdir()
    known.write_text(_known_hosts_line("10.200.0.12"))
    connections = Connections(StackCapture(stack="staging", hosts={}, steps=[], products=[]), tmp_path)
    connections.host_keys.add("10.200.0.13", "ssh-ed25519", _host_key())
    connections._save_known_hosts()
    saved = {line.split()[0] for line in known.read_text().splitlines()}
    assert saved == {"10.200.0.12", "10.200.0.13"}


def test_known_hosts_is_never_seen_truncated_while_it_is_written(tmp_path, monkeypatch):
    """The docker library's ssh reads the file while other hosts' connections add to it: the
    reader sees the old file or the new one whole ("No ED25519 host key is known", lab run 2)."""
    import paramiko

    from rehearsal.capture import StackCapture
    from rehearsal.ssh_transport import Connections

    known = tmp_path / ".ssh" / "known_hosts"
    known.parent.mkdir()
    before = _known_hosts_line("10.200.0.12")
    known.write_text(before)
    connections = Connections(StackCapture(stack="staging", hosts={}, steps=[], products=[]), tmp_path)
    seen_during_save = []
    save = paramiko.HostKeys.save

    def watched(self, filename):
        save(self, filename)
        seen_during_save.append(known.read_text())  # what a reader would find right then

    monkeypatch.setattr(paramiko.HostKeys, "save", watched)
    connections._save_known_hosts()
    assert seen_during_save == [before]
    assert known.read_text().strip() == before.strip()
