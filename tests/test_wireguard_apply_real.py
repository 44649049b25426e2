"""wg0.conf applied to a running tunnel, with the real WireGuard tools: the rendered wireguard
script of Pencom's prod edge runs in a network namespace this test makes, against a stand-in
``systemctl`` whose ``wg-quick@wg0`` does what the Debian unit does (start/stop: ``wg-quick
up/down``, reload: ``wg syncconf wg0 <(wg-quick strip wg0)``) on the test's copy of the file.
The interface is the kernel's where it has WireGuard, else ``wireguard-go`` (as wg-quick picks).

A change of the interface's address restarts the tunnel and wg0 then carries the new address
(a reload, ``wg syncconf``, leaves the old one: new user finding 1); a change of peers reloads
and keeps the running tunnel; a host whose tunnel kept an old address is restarted on its file;
an interface change the tunnel cannot start on is put back and the tunnel restarted on it.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.test_wireguard_real import _edge_scripts, _genkey, _stop_in, _tunnel_tools

pytestmark = pytest.mark.realtool

FAKE_SYSTEMCTL = textwrap.dedent("""\
    #!/bin/bash
    verb="$1"; shift
    while [ "${1#-}" != "$1" ]; do
      case "$1" in -p|-n) shift 2 ;; *) shift ;; esac
    done
    echo "$verb $1" >>"$UNITS/calls"
    up() { wg-quick up "$WGCONF" >>"$UNITS/log" 2>&1 && echo "$RANDOM$RANDOM" >"$UNITS/run"; }
    down() { wg-quick down "$WGCONF" >>"$UNITS/log" 2>&1 || true; }
    case "$verb" in
      is-active) wg show wg0 >/dev/null 2>&1 ;;
      is-enabled) true ;;
      is-failed) ! wg show wg0 >/dev/null 2>&1 ;;
      start) up ;;
      restart) down; up ;;
      reload) wg syncconf wg0 <(wg-quick strip "$WGCONF") ;;
      show) cat "$UNITS/run" 2>/dev/null ;;
      status) echo "wg-quick@wg0 - stand-in" ;;
      *) exit 0 ;;
    esac
    """)


def _addresses(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "wg0"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines()]


def _run(ns: str, tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    for directory in (bin_dir, units):
        directory.mkdir(exist_ok=True)
    for name, text in {"systemctl": FAKE_SYSTEMCTL, "journalctl": "#!/bin/sh\necho stand-in journal\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    path = tmp_path / "setup.sh"
    path.write_text(script.replace("/etc/wireguard", str(tmp_path / "wireguard"))
                    .replace("PENDING=/var/lib/platform/pending", f"PENDING={tmp_path}/pending"))
    (units / "calls").write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "UNITS": str(units),
           "WGCONF": str(tmp_path / "wireguard" / "wg0.conf"), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    return subprocess.run(["ip", "netns", "exec", ns, "bash", str(path)], capture_output=True, text=True,
                          env=env, timeout=300)


def _calls(tmp_path: Path) -> list[str]:
    return [c for c in (tmp_path / "units" / "calls").read_text().splitlines()
            if c.split()[0] in ("restart", "reload", "start")]


def test_an_address_change_restarts_the_tunnel_and_a_peer_change_reloads_it(tmp_path):
    wg, _, _, _ = _tunnel_tools()
    _, peer_public = _genkey(wg)
    v1, _ = _edge_scripts(peer_public)
    assert "Address = 10.99.0.3/24" in v1 and "AllowedIPs = 10.99.0.16/32" in v1
    v2 = v1.replace("Address = 10.99.0.3/24", "Address = 10.98.0.3/24")
    v3 = v2.replace("AllowedIPs = 10.99.0.16/32", "AllowedIPs = 10.98.0.16/32")
    # An interface setting wg-quick cannot bring up (its PostUp fails): put back, restarted on v3.
    v4 = v3.replace("Address = 10.98.0.3/24", "Address = 10.97.0.3/24\nPostUp = false")
    ns = f"wga{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        first = _run(ns, tmp_path, v1)
        assert first.returncode == 0, first.stdout + first.stderr
        assert _addresses(ns) == ["10.99.0.3/24"] and _calls(tmp_path) == ["start wg-quick@wg0"]

        moved = _run(ns, tmp_path, v2)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert _addresses(ns) == ["10.98.0.3/24"], "wg0 kept its old address after the network changed"
        assert _calls(tmp_path) == ["restart wg-quick@wg0"]

        run_before = (tmp_path / "units" / "run").read_text()
        peers = _run(ns, tmp_path, v3)
        assert peers.returncode == 0, peers.stdout + peers.stderr
        assert _calls(tmp_path) == ["reload wg-quick@wg0"], "a change of peers only must not drop the tunnel"
        assert (tmp_path / "units" / "run").read_text() == run_before
        assert "10.98.0.16/32" in subprocess.run(["ip", "netns", "exec", ns, wg, "show", "wg0", "allowed-ips"],
                                                 capture_output=True, text=True).stdout

        again = _run(ns, tmp_path, v3)
        assert again.returncode == 0 and re.search(r"platform-setup: 0 changes", again.stdout), again.stdout
        assert _calls(tmp_path) == []

        bad = _run(ns, tmp_path, v4)
        assert bad.returncode != 0 and "wg-quick@wg0" in bad.stderr, bad.stdout + bad.stderr
        assert _calls(tmp_path) == ["restart wg-quick@wg0", "restart wg-quick@wg0"]
        assert _addresses(ns) == ["10.98.0.3/24"], "the tunnel is not back on the previous file"
        assert "PostUp" not in (tmp_path / "wireguard" / "wg0.conf").read_text()

        # A host an earlier script left on its old address (reloaded only): the file is current,
        # the tunnel is restarted on it.
        subprocess.run(["ip", "-n", ns, "addr", "flush", "dev", "wg0"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.99.0.3/24", "dev", "wg0"], check=True)
        healed = _run(ns, tmp_path, v3)
        assert healed.returncode == 0, healed.stdout + healed.stderr
        assert _addresses(ns) == ["10.98.0.3/24"] and _calls(tmp_path) == ["restart wg-quick@wg0"]
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "wg-quick", "down", str(tmp_path / "wireguard" / "wg0.conf")],
                       capture_output=True, timeout=60,
                       env={**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"})
        _stop_in(ns)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
