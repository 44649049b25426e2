"""The rendered UFW rules, applied by real UFW inside network namespaces this test creates.

UFW runs in its own network namespace (its iptables rules exist only there) and its own mount
namespace, over private copies of /etc/ufw and /etc/default/ufw and a private /run: the host's
firewall and configuration are never touched. Two client namespaces probe over TCP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from components import hostsetup, tiers
from tests.conftest import require_root, require_tool
from tests.isolation import apply_ufw, ip

pytestmark = pytest.mark.realtool

FW_A, CLIENT_A = "10.231.1.1", "10.231.1.2"
FW_B, CLIENT_B = "10.231.2.1", "10.231.2.2"
PORTS = (22, 80, 443, 5432, 6379)


@pytest.fixture
def namespaces():
    require_tool("ip", "Debian package iproute2")
    require_tool("ufw", "Debian package ufw")
    require_tool("unshare", "util-linux")
    require_root("network namespaces")
    suffix = str(os.getpid())
    fw, a, b = f"ufwfw{suffix}", f"ufwa{suffix}", f"ufwb{suffix}"
    for ns in (fw, a, b):
        ip("netns", "add", ns)
    listener = None
    try:
        for client, fw_addr, client_addr, tag in ((a, FW_A, CLIENT_A, "a"), (b, FW_B, CLIENT_B, "b")):
            outside, inside = f"u{tag}c{suffix}"[:15], f"u{tag}f{suffix}"[:15]
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", outside, "netns", client)
            ip("link", "set", inside, "netns", fw)
            ip("-n", client, "addr", "add", f"{client_addr}/24", "dev", outside)
            ip("-n", fw, "addr", "add", f"{fw_addr}/24", "dev", inside)
            ip("-n", client, "link", "set", outside, "up")
            ip("-n", fw, "link", "set", inside, "up")
        for ns in (fw, a, b):
            ip("-n", ns, "link", "set", "lo", "up")
        server = textwrap.dedent(f"""
            import socket, threading
            def serve(port):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port)); s.listen()
                while True:
                    c, _ = s.accept(); c.close()
            for p in {PORTS + (27017,)!r}:
                threading.Thread(target=serve, args=(p,), daemon=True).start()
            threading.Event().wait()
        """)
        listener = subprocess.Popen(["ip", "netns", "exec", fw, sys.executable, "-c", server])
        _wait_listening(fw, PORTS + (27017,))
        yield {"fw": fw, "a": a, "b": b}
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        for ns in (fw, a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _wait_listening(ns: str, ports: tuple[int, ...], timeout: float = 60) -> None:
    """Until every port answers on the namespace's loopback (a fixed sleep loses on a busy machine)."""
    probe = textwrap.dedent(f"""
        import socket, time
        deadline = time.monotonic() + {timeout}
        for port in {ports!r}:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"nothing listens on {{port}}")
                    time.sleep(0.05)
    """)
    result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _reachable(ns: str, address: str, port: int) -> bool:
    probe = (f"import socket; s = socket.socket(); s.settimeout(1.5); "
             f"s.connect(({address!r}, {port})); s.close()")
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                          capture_output=True).returncode == 0


def _matrix(namespaces, ports=PORTS) -> dict[tuple[str, int], bool]:
    """{(client, port): reachable}, probed at once: a refused cell waits out its 1.5 s timeout."""
    cells = [(client, port) for client in ("a", "b") for port in ports]
    with ThreadPoolExecutor(len(cells)) as pool:
        results = pool.map(lambda cell: _reachable(namespaces[cell[0]], FW_A if cell[0] == "a" else FW_B, cell[1]),
                           cells)
        return dict(zip(cells, results))


def _apply_ufw(namespaces, commands: str, tmp_path) -> subprocess.CompletedProcess:
    return apply_ufw(["ip", "netns", "exec", namespaces["fw"]], commands, tmp_path, timeout=120)


def test_ufw_allows_exactly_what_the_tier_model_allows(namespaces, tmp_path):
    before = _matrix(namespaces)
    assert all(before.values()), f"control: every port answers before UFW: {before}"

    role = tiers.HostRole(tier=tiers.Tier.EDGE, ssh_cidrs=(f"{CLIENT_A}/32",),
                          service_ports=(5432,), peer_cidrs=(f"{CLIENT_B}/32",))
    commands = hostsetup.render_ufw_commands(tiers.inbound_rules(role))
    result = _apply_ufw(namespaces, commands, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Default: deny (incoming)" in result.stdout

    after = _matrix(namespaces)
    expected = {
        ("a", 22): True, ("a", 80): True, ("a", 443): True, ("a", 5432): False, ("a", 6379): False,
        ("b", 22): False, ("b", 80): True, ("b", 443): True, ("b", 5432): True, ("b", 6379): False,
    }
    assert after == expected


def test_pencom_data_node_rules_admit_the_app_node_and_the_waiver_only(namespaces, tmp_path):
    """The committed Pencom data node's own UFW commands, with the client namespaces standing in
    for the app node (a) and the edge node (b): the edge reaches Postgres only (the waiver)."""
    from synth.state import State
    from tests.conftest import synth_once
    from tests.test_pencom import _pencom_only

    state = State(synth_once("prod", document=_pencom_only("prod")))
    script = state.named("pencom-prod-data-setup-ufw", "command:remote:Command")["inputs"]["stdin"]
    commands = script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
    app, edge = "10.40.0.12/32", "10.40.0.11/32"
    assert f"from {app} to any port 5432" in commands and f"from {edge} to any port 5432" in commands
    commands = commands.replace(app, f"{CLIENT_A}/32").replace(edge, f"{CLIENT_B}/32")
    assert "ufw default deny outgoing" in commands  # kept: replies to admitted flows still leave
    result = _apply_ufw(namespaces, commands, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    after = _matrix(namespaces, ports=(22, 5432, 6379, 27017, 80))
    assert after == {
        ("a", 22): False, ("a", 5432): True, ("a", 6379): True, ("a", 27017): True, ("a", 80): False,
        ("b", 22): True, ("b", 5432): True, ("b", 6379): False, ("b", 27017): False, ("b", 80): False,
    }


def test_pencom_edge_host_never_opens_the_oracle_route(namespaces, tmp_path):
    """The staging matrix's finding: the edge host (open egress: it runs the proxy and certbot)
    reached Oracle ECRS on 1521, a route the tier model gives the app node alone. The committed
    edge node's UFW commands, with client b standing in for Oracle: 1521 there is denied, other
    egress (443) still leaves."""
    from synth.state import State
    from tests.conftest import synth_once
    from tests.test_pencom import _pencom_only

    server = textwrap.dedent("""
        import socket, threading
        def serve(port):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port)); s.listen()
            while True:
                c, _ = s.accept(); c.close()
        for p in (1521, 443):
            threading.Thread(target=serve, args=(p,), daemon=True).start()
        threading.Event().wait()
    """)
    oracle = subprocess.Popen(["ip", "netns", "exec", namespaces["b"], sys.executable, "-c", server])
    try:
        _wait_listening(namespaces["b"], (1521, 443))
        fw = namespaces["fw"]
        assert _reachable(fw, CLIENT_B, 1521) and _reachable(fw, CLIENT_B, 443), "control: open before UFW"
        state = State(synth_once("prod", document=_pencom_only("prod")))
        script = state.named("pencom-prod-edge-setup-ufw", "command:remote:Command")["inputs"]["stdin"]
        commands = script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
        assert "ufw deny out proto tcp to 10.50.8.20/32 port 1521" in commands, commands
        assert "ufw default allow outgoing" in commands
        result = _apply_ufw(namespaces, commands.replace("10.50.8.20/32", f"{CLIENT_B}/32"), tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not _reachable(fw, CLIENT_B, 1521), "the edge host reaches Oracle ECRS"
        assert _reachable(fw, CLIENT_B, 443), "the edge host's other egress stays open"
        for node in ("data", "storage"):
            other = state.named(f"pencom-prod-{node}-setup-ufw", "command:remote:Command")["inputs"]["stdin"]
            assert "ufw deny out proto tcp to 10.50.8.20/32 port 1521" in other, node
        app = state.named("pencom-prod-app-setup-ufw", "command:remote:Command")["inputs"]["stdin"]
        assert "10.50.8.20" not in app, "the app node's containers use the route (DOCKER-USER), not UFW"
    finally:
        oracle.kill()
        oracle.wait()


CONTAINER, STRANGER = "172.30.7.2", "10.231.9.2"


def test_a_locked_node_reaches_its_own_containers_and_its_own_published_port_only(tmp_path):
    """The committed Pencom storage node's UFW commands (outgoing denied but for the internal
    network, its bridge, DNS and NTP), in a namespace whose ``pencom-storage`` interface leads to
    a "container" at a Docker-pool address, and another interface to a stranger outside the
    internal network. The host reaches the container's own address; the stranger stays refused.
    Without the bridge rule the container's own address was refused too (the rehearsal matrix's
    "host to own container" cells on the internal nodes). The host's own published port (MinIO
    on its private address, DNATed to the container as Docker does with ``userland-proxy`` off:
    the mirror backup's path) answers either way: the kernel hands a local connection to the
    OUTPUT chains with the loopback device it was routed to first, which UFW accepts."""
    require_tool("ip", "Debian package iproute2")
    require_tool("ufw", "Debian package ufw")
    require_tool("iptables", "Debian package iptables")
    require_tool("unshare", "util-linux")
    require_root("network namespaces")
    from synth.state import State
    from tests.conftest import synth_once
    from tests.test_pencom import _pencom_only

    state = State(synth_once("prod", document=_pencom_only("prod")))
    script = state.named("pencom-prod-storage-setup-ufw", "command:remote:Command")["inputs"]["stdin"]
    commands = script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
    assert "ufw default deny outgoing" in commands and "ufw allow out on pencom-storage to any" in commands
    private = "10.40.0.14"  # the storage node's private address in the prod stack
    suffix = str(os.getpid())
    node, box, stranger = f"ulnode{suffix}", f"ulbox{suffix}", f"ulstr{suffix}"
    listeners = []
    try:
        for ns in (node, box, stranger):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for peer, name, far, near in ((box, "pencom-storage", CONTAINER, "172.30.7.1"),
                                      (stranger, "uplink0", STRANGER, "10.231.9.1")):
            outer, inner = f"ulo{peer[-6:]}"[:15], f"uli{peer[-6:]}"[:15]
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", outer, "netns", node)
            ip("link", "set", inner, "netns", peer)
            ip("-n", node, "link", "set", outer, "name", name)
            ip("-n", node, "addr", "add", f"{near}/24", "dev", name)
            ip("-n", peer, "addr", "add", f"{far}/24", "dev", inner)
            ip("-n", node, "link", "set", name, "up")
            ip("-n", peer, "link", "set", inner, "up")
            listeners.append(subprocess.Popen(["ip", "netns", "exec", peer, sys.executable, "-c", textwrap.dedent("""
                import socket
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", 9000)); s.listen()
                while True:
                    c, _ = s.accept(); c.close()
            """)]))
            _wait_listening(peer, (9000,))
        ip("-n", box, "route", "add", "default", "via", "172.30.7.1")  # as a container's gateway
        ip("-n", node, "addr", "add", f"{private}/32", "dev", "lo")
        # Docker's DNAT of a port published on the private address, for the host's own connections.
        subprocess.run(["ip", "netns", "exec", node, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", private, "-p", "tcp",
                        "--dport", "9000", "-j", "DNAT", "--to-destination", f"{CONTAINER}:9000"], check=True)

        def cells() -> dict[str, bool]:
            return {"own container": _reachable(node, CONTAINER, 9000), "own published port": _reachable(node, private, 9000),
                    "stranger": _reachable(node, STRANGER, 9000)}

        assert cells() == {"own container": True, "own published port": True, "stranger": True}, "control"
        without = "\n".join(l for l in commands.splitlines() if "allow out on pencom-storage" not in l)
        result = apply_ufw(["ip", "netns", "exec", node], without, tmp_path / "without", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert cells() == {"own container": False, "own published port": True, "stranger": False}
        # A fresh filter table: UFW's private configuration says "disabled", so its enable would
        # find its chains standing and keep the first rules.
        for tool in ("iptables-restore", "ip6tables-restore"):
            subprocess.run(["ip", "netns", "exec", node, tool], input="*filter\nCOMMIT\n", text=True, check=True)
        result = apply_ufw(["ip", "netns", "exec", node], commands, tmp_path / "with", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert cells() == {"own container": True, "own published port": True, "stranger": False}
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait()
        for ns in (node, box, stranger):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
