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

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from components import wireguard
from synth.engine import PROJECT_ROOT
from synth.state import State
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


def _pencom_prod(peer_public: str) -> tuple[dict, State]:
    """Pencom alone on prod, with the test's key as the deploy runner's (the committed key is a
    placeholder whose private half nobody has): the stack document and its revealed capture."""
    from tests.test_pencom import _pencom_only

    document = _pencom_only("prod")
    document["config"]["platform:environment"]["management"]["peers"][0]["public_key"] = peer_public
    return document, State(synth_once("prod", document=document, reveal_secrets=True))


def _edge_scripts(peer_public: str) -> tuple[str, str]:
    """The prod Pencom edge's wireguard and ufw scripts (``_pencom_prod``)."""
    _, state = _pencom_prod(peer_public)
    return (state.named("pencom-prod-edge-setup-wireguard", COMMAND)["inputs"]["stdin"],
            state.named("pencom-prod-edge-setup-ufw", COMMAND)["inputs"]["stdin"])


def _client_conf(stack: str, document: dict, outputs: dict, tmp_path: Path, *extra: str) -> str:
    """The deploy runner's client config, by the documented command (scripts/wg_client.py)."""
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "wg_client.py"), stack,
                             "--stack-file", str(tmp_path / f"Pulumi.{stack}.yaml"), "--name", "deploy-runner",
                             "--outputs", str(tmp_path / "outputs.json"), *extra],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


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


def _edge(wg: str, tunnels: _Tunnels, edge: str, peer: str, edge_wg: str, stripped: str, suffix: str,
          tmp_path: Path) -> None:
    """The namespaces ``edge`` and ``peer`` joined by a veth (the "internet"), and in ``edge``
    the program's wg0.conf as wg-quick would load it: setconf of the stripped file, then the
    Address wg-quick reads itself."""
    outside, inside = f"wv{suffix}a"[:15], f"wv{suffix}b"[:15]
    ip("link", "add", outside, "type", "veth", "peer", "name", inside)
    ip("link", "set", outside, "netns", peer)
    ip("link", "set", inside, "netns", edge)
    ip("-n", edge, "addr", "add", f"{EDGE_VETH}/24", "dev", inside)
    ip("-n", peer, "addr", "add", f"{PEER_VETH}/24", "dev", outside)
    for ns, dev in ((edge, inside), (peer, outside)):
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")
    tunnels.add(edge, edge_wg)
    (tmp_path / "edge.conf").write_text(stripped)
    subprocess.run(["ip", "netns", "exec", edge, wg, "setconf", edge_wg, str(tmp_path / "edge.conf")],
                   check=True, capture_output=True, text=True)
    ip("-n", edge, "addr", "add", f"{EDGE_MGMT}/24", "dev", edge_wg)
    ip("-n", edge, "link", "set", edge_wg, "up")


def _listen_22(edge: str) -> subprocess.Popen:
    """A stand-in sshd in ``edge``: accepts on port 22 and closes."""
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
    return listener


def _tunnel_tools() -> tuple[str, str, bool, str | None]:
    """wg, wg-quick, whether the kernel has WireGuard, and else wireguard-go."""
    wg = require_tool("wg", "Debian package wireguard-tools")
    wg_quick = require_tool("wg-quick", "Debian package wireguard-tools")
    require_tool("ip", "Debian package iproute2")
    require_tool("unshare", "util-linux")
    require_root("network namespaces and WireGuard interfaces")
    kernel = _kernel_has_wireguard()
    wireguard_go = None
    if not kernel:
        # The kernel of this machine has no WireGuard (a microVM's kernel): the userspace tunnel
        # is the same protocol; without it nothing of the tunnel is proven here.
        wireguard_go = require_tool("wireguard-go", "Debian package wireguard-go: this kernel has no WireGuard")
    return wg, wg_quick, kernel, wireguard_go


def test_a_peer_reaches_ssh_through_the_tunnel_and_not_around_it(tmp_path):
    wg, wg_quick, kernel, wireguard_go = _tunnel_tools()
    require_tool("ufw", "Debian package ufw")
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
        _edge(wg, tunnels, edge, peer, edge_wg, stripped, suffix, tmp_path)

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

        listener = _listen_22(edge)
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



def test_the_client_config_passes_wg_quick_strip_with_no_private_key(tmp_path):
    wg_quick = require_tool("wg-quick", "Debian package wireguard-tools")
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    outputs = synth_once("staging")["outputs"]
    conf = _client_conf("staging", document, outputs, tmp_path)
    stripped = _strip(wg_quick, conf, tmp_path)
    # What wg(8) reads: no private key (PostUp loads the device's own), one peer per endpoint.
    assert "PrivateKey" not in stripped and "PostUp" not in stripped and "Address" not in stripped
    endpoints = outputs["management"]["endpoints"]
    assert stripped.count("[Peer]") == len(endpoints) == 4
    for endpoint in endpoints:
        assert (f"PublicKey = {endpoint['publicKey']}\nEndpoint = {endpoint['endpoint']}\n"
                f"AllowedIPs = {endpoint['address']}/32\nPersistentKeepalive = 25\n") in stripped


def test_wg_quick_up_of_the_client_config_reaches_the_edge_through_the_tunnel(tmp_path):
    """The deploy runner's client config, as the command prints it (its endpoint the edge's
    address on the test's veth in place of the public one), brought up by ``wg-quick up`` in a
    namespace: the key file it names is loaded by PostUp, and SSH's port on the edge's
    management address answers through the tunnel, the routes wg-quick adds covering the
    management network and nothing else."""
    wg, wg_quick, kernel, wireguard_go = _tunnel_tools()
    peer_private, peer_public = _genkey(wg)
    document, state = _pencom_prod(peer_public)
    stripped = _strip(wg_quick, _heredoc(state.named("pencom-prod-edge-setup-wireguard", COMMAND)["inputs"]["stdin"],
                                         wireguard.CONFIG_PATH), tmp_path)
    edge_private = next(line.split(" = ", 1)[1] for line in stripped.splitlines() if line.startswith("PrivateKey"))
    outputs = state.outputs["management"]
    [pencom] = outputs["endpoints"]
    assert (pencom["product"], pencom["publicKey"]) == ("pencom", wireguard.public_key(edge_private))
    pencom["endpoint"] = f"{EDGE_VETH}:51820"
    key_file = tmp_path / "runner.key"
    key_file.write_text(peer_private + "\n")
    key_file.chmod(0o600)
    conf = _client_conf("prod", document, outputs, tmp_path, "--public-key", peer_public,
                        "--key-file", str(key_file))
    assert peer_private not in conf

    suffix = str(os.getpid())
    edge, peer = f"wce{suffix}", f"wcp{suffix}"
    edge_wg, client = f"wce{suffix}"[:15], f"wcc{suffix}"[:15]
    (tmp_path / "client").mkdir(mode=0o700)
    client_conf = tmp_path / "client" / f"{client}.conf"
    client_conf.write_text(conf)
    client_conf.chmod(0o600)
    tunnels = _Tunnels(kernel, wireguard_go)
    listener = None
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    for ns in (edge, peer):
        ip("netns", "add", ns)
    try:
        _edge(wg, tunnels, edge, peer, edge_wg, stripped, suffix, tmp_path)
        listener = _listen_22(edge)
        # wg-quick itself: the kernel's interface, or (no module) wireguard-go, as on a laptop.
        up = subprocess.run(["ip", "netns", "exec", peer, wg_quick, "up", str(client_conf)], env=env,
                            capture_output=True, text=True, timeout=60)
        assert up.returncode == 0, up.stderr
        shown = subprocess.run(["ip", "netns", "exec", peer, wg, "show", client, "public-key"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert shown == peer_public, "PostUp did not load the device's own key"
        routes = subprocess.run(["ip", "-n", peer, "-4", "route", "show", "dev", client],
                                capture_output=True, text=True, check=True).stdout
        assert "default" not in routes and "10.99.0.0/24" in routes, routes
        deadline = time.monotonic() + 30
        while not _reachable(peer, EDGE_MGMT, 22):
            assert time.monotonic() < deadline, "SSH's port is not reachable through the client's tunnel"
            time.sleep(0.2)
        handshake = subprocess.run(["ip", "netns", "exec", peer, wg, "show", client, "latest-handshakes"],
                                   capture_output=True, text=True, check=True).stdout
        assert handshake.split()[-1] != "0", handshake
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "netns", "exec", peer, wg_quick, "down", str(client_conf)], env=env,
                       capture_output=True, timeout=60)
        _stop_in(peer)
        tunnels.close()
        for ns in (edge, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _stop_in(ns: str) -> None:
    """Stops what is still running in the namespace ``ns`` this test made (the wireguard-go that
    wg-quick started, should ``wg-quick down`` have left it), by process id."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
