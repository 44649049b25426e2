"""The management network with the real WireGuard tools: the wg0.conf the program delivers to
Pencom's edge node (prod, break-glass off), parsed by ``wg-quick strip`` and loaded by ``wg
setconf``; then, in two network namespaces this test creates, a peer reaches SSH's port on the
edge's management address through the tunnel, while the same port on the edge's own address is
refused by the edge's rendered UFW rules.

The tunnel is the kernel's WireGuard where the kernel has it, else ``wireguard-go`` (the
userspace implementation, Debian's package, on the same netlink-free UAPI that ``wg`` drives):
the packets, keys, handshake and AllowedIPs filtering are WireGuard's either way. What a
userspace tunnel does not prove is the kernel module's own loading on the target host (Debian
12's kernels ship it).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from components import wireguard
from tests.conftest import require_root, require_tool, synth_once
from tests.isolation import apply_ufw, ip

pytestmark = pytest.mark.realtool

EDGE_VETH, PEER_VETH = "10.232.1.1", "10.232.1.2"
EDGE_MGMT, PEER_MGMT = "10.99.0.3", "10.99.0.16"
COMMAND = "command:remote:Command"


def _heredoc(script: str, path: str) -> str:
    """The content ``put_file PATH`` writes in a rendered script."""
    head = script.split(f"put_file {path} ", 1)[1]
    marker = head.split("<<'", 1)[1].split("'", 1)[0]
    return head.split("\n", 1)[1].split(f"\n{marker}\n", 1)[0] + "\n"


def _genkey(wg: str) -> tuple[str, str]:
    private = subprocess.run([wg, "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run([wg, "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
    return private, public


def _edge_scripts(peer_public: str) -> tuple[str, str]:
    """The prod Pencom edge's wireguard and ufw scripts, with the test's peer key as the deploy
    runner's (the committed key is a placeholder whose private half nobody has)."""
    from synth.state import State
    from tests.test_pencom import _pencom_only

    document = _pencom_only("prod")
    document["config"]["platform:environment"]["management"]["peers"][0]["public_key"] = peer_public
    state = State(synth_once("prod", document=document, reveal_secrets=True))
    return (state.named("pencom-prod-edge-setup-wireguard", COMMAND)["inputs"]["stdin"],
            state.named("pencom-prod-edge-setup-ufw", COMMAND)["inputs"]["stdin"])


def _strip(wg_quick: str, conf: str, tmp_path: Path) -> str:
    directory = tmp_path / "wireguard"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{wireguard.INTERFACE}.conf"
    path.write_text(conf)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = subprocess.run([wg_quick, "strip", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_rendered_config_parses_and_its_public_key_is_wgs(tmp_path):
    wg = require_tool("wg", "Debian package wireguard-tools")
    wg_quick = require_tool("wg-quick", "Debian package wireguard-tools")
    _, peer_public = _genkey(wg)
    script, _ = _edge_scripts(peer_public)
    conf = _heredoc(script, wireguard.CONFIG_PATH)
    assert "put_file /etc/wireguard/wg0.conf 0600 root:root" in script
    stripped = _strip(wg_quick, conf, tmp_path)
    # wg-quick's own keys (Address) are gone; what wg(8) reads remains.
    assert "Address" not in stripped and f"Address = {EDGE_MGMT}/24" in conf
    assert "ListenPort = 51820" in stripped and f"AllowedIPs = {PEER_MGMT}/32" in stripped
    private = next(line.split(" = ", 1)[1] for line in stripped.splitlines() if line.startswith("PrivateKey"))
    from_wg = subprocess.run([wg, "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
    assert wireguard.public_key(private) == from_wg


def _kernel_has_wireguard() -> bool:
    probe = subprocess.run(["unshare", "--net", "ip", "link", "add", "wgprobe", "type", "wireguard"],
                           capture_output=True, text=True)
    return probe.returncode == 0


class _Tunnels:
    """wg interfaces in namespaces: the kernel's, or wireguard-go processes (stopped at close)."""

    def __init__(self, kernel: bool, wireguard_go: str | None):
        self.kernel, self.wireguard_go, self.processes = kernel, wireguard_go, []

    def add(self, ns: str, name: str) -> None:
        if self.kernel:
            ip("-n", ns, "link", "add", name, "type", "wireguard")
            return
        env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
        process = subprocess.Popen(["ip", "netns", "exec", ns, self.wireguard_go, "-f", name], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append((process, name))
        deadline = time.monotonic() + 30
        while not Path(f"/var/run/wireguard/{name}.sock").exists():
            assert process.poll() is None, f"wireguard-go {name} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"wireguard-go {name} made no socket"
            time.sleep(0.05)

    def close(self) -> None:
        for process, name in self.processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            Path(f"/var/run/wireguard/{name}.sock").unlink(missing_ok=True)


def _reachable(ns: str, address: str, port: int) -> bool:
    probe = f"import socket; s = socket.socket(); s.settimeout(3); s.connect(({address!r}, {port})); s.close()"
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True).returncode == 0


def test_a_peer_reaches_ssh_through_the_tunnel_and_not_around_it(tmp_path):
    wg = require_tool("wg", "Debian package wireguard-tools")
    wg_quick = require_tool("wg-quick", "Debian package wireguard-tools")
    require_tool("ip", "Debian package iproute2")
    require_tool("ufw", "Debian package ufw")
    require_tool("unshare", "util-linux")
    require_root("network namespaces and WireGuard interfaces")
    kernel = _kernel_has_wireguard()
    wireguard_go = None
    if not kernel:
        # The kernel of this machine has no WireGuard (a microVM's kernel): the userspace tunnel
        # is the same protocol; without it nothing of the tunnel is proven here.
        wireguard_go = require_tool("wireguard-go", "Debian package wireguard-go: this kernel has no WireGuard")
    peer_private, peer_public = _genkey(wg)
    script, ufw_script = _edge_scripts(peer_public)
    stripped = _strip(wg_quick, _heredoc(script, wireguard.CONFIG_PATH), tmp_path)
    edge_private = next(line.split(" = ", 1)[1] for line in stripped.splitlines() if line.startswith("PrivateKey"))

    suffix = str(os.getpid())
    edge, peer = f"wge{suffix}", f"wgp{suffix}"
    edge_wg, peer_wg = f"wge{suffix}"[:15], f"wgp{suffix}"[:15]
    tunnels = _Tunnels(kernel, wireguard_go)
    listener = None
    for ns in (edge, peer):
        ip("netns", "add", ns)
    try:
        outside, inside = f"wv{suffix}a"[:15], f"wv{suffix}b"[:15]
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", outside, "netns", peer)
        ip("link", "set", inside, "netns", edge)
        ip("-n", edge, "addr", "add", f"{EDGE_VETH}/24", "dev", inside)
        ip("-n", peer, "addr", "add", f"{PEER_VETH}/24", "dev", outside)
        for ns, dev in ((edge, inside), (peer, outside)):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")

        # The edge: the program's wg0.conf, as wg-quick would load it (setconf of the stripped
        # file, then the Address wg-quick reads itself).
        tunnels.add(edge, edge_wg)
        (tmp_path / "edge.conf").write_text(stripped)
        subprocess.run(["ip", "netns", "exec", edge, wg, "setconf", edge_wg, str(tmp_path / "edge.conf")],
                       check=True, capture_output=True, text=True)
        ip("-n", edge, "addr", "add", f"{EDGE_MGMT}/24", "dev", edge_wg)
        ip("-n", edge, "link", "set", edge_wg, "up")

        # The peer (an engineer or the deploy runner): its own key, the edge's public key.
        tunnels.add(peer, peer_wg)
        key_file = tmp_path / "peer.key"
        key_file.write_text(peer_private + "\n")
        key_file.chmod(0o600)
        subprocess.run(["ip", "netns", "exec", peer, wg, "set", peer_wg, "private-key", str(key_file),
                        "peer", wireguard.public_key(edge_private), "endpoint", f"{EDGE_VETH}:51820",
                        "allowed-ips", f"{EDGE_MGMT}/32"], check=True, capture_output=True, text=True)
        ip("-n", peer, "addr", "add", f"{PEER_MGMT}/24", "dev", peer_wg)
        ip("-n", peer, "link", "set", peer_wg, "up")

        server = textwrap.dedent("""
            import socket
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 22)); s.listen()
            while True:
                c, _ = s.accept(); c.close()
        """)
        listener = subprocess.Popen(["ip", "netns", "exec", edge, sys.executable, "-c", server])
        deadline = time.monotonic() + 30
        while not _reachable(edge, "127.0.0.1", 22):
            assert time.monotonic() < deadline, "the stand-in sshd does not listen"
            time.sleep(0.1)
        assert _reachable(peer, EDGE_VETH, 22), "control: port 22 answers outside the tunnel before UFW"

        commands = ufw_script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
        assert "ufw allow proto tcp from 10.99.0.0/24 to any port 22" in commands
        assert "ufw allow proto udp from 0.0.0.0/0 to any port 51820" in commands
        result = apply_ufw(["ip", "netns", "exec", edge], commands, tmp_path, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

        # The handshake happens now, through the UFW just applied (the UDP port is admitted).
        deadline = time.monotonic() + 30
        while not _reachable(peer, EDGE_MGMT, 22):
            assert time.monotonic() < deadline, "SSH's port is not reachable through the tunnel"
            time.sleep(0.2)
        handshake = subprocess.run(["ip", "netns", "exec", peer, wg, "show", peer_wg, "latest-handshakes"],
                                   capture_output=True, text=True, check=True).stdout
        assert handshake.split()[-1] != "0", handshake
        assert not _reachable(peer, EDGE_VETH, 22), "SSH's port answers outside the tunnel"
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        tunnels.close()
        for ns in (edge, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

