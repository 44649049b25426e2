"""The management network on a converged box (issue #22, part 2): "SSH from outside WireGuard is
refused", proven on the rehearsal.

Pencom's staging edge node (the WireGuard gateway the issue names) is rehearsed alone
(``Rehearsal("staging", products=["pencom"], hosts=[EDGE], checks=False)``) from a variant of
the committed staging stack file whose ``management.peers`` also list the harness's own key
(``lab-harness``, made by ``wg genkey`` in this test, at the network's 17th address). The
README's first deploy, step by step:

1. **Break-glass on** (staging's committed state): the converge reaches the edge at its public
   address (the harness's gateway stands for ``admin_cidrs``) and installs the endpoint. On the
   box, ``wg show wg0`` answers with the stack's listen port and the harness's key as a peer,
   wg0 carries the endpoint's management address, and ``wg-quick@wg0`` is active. The box's
   kernel (this machine's) has no WireGuard, so it is Debian's ``wireguard-go`` that wg-quick
   fell back to: the test records which one runs.
2. **The runner's tunnel**: in the lab's namespace (the harness side) a ``wireguard-go``
   interface with the harness's private key, the endpoint's public key as ``wg show`` printed
   it on the box, the box's public lab address and port, ``AllowedIPs`` the endpoint's address.
   SSH as ``ops`` to the endpoint's management address, with a certificate that
   ``scripts/ssh_cert.py`` signed with the lab's CA key (principal ``oncall``), logs in, and sshd
   sees the peer's management address as the source. Control: the same login to the box's
   public address works too (break-glass admits the harness's address).
3. **Break-glass off** (a drill: the same stack file with ``break_glass: {enabled: false}``),
   converged *through the tunnel* (the program's ``connect_address`` is now the endpoint's
   management address), then converged again with 0 changes. After it: SSH to the public
   address from the harness's address on the lab network (outside WireGuard) gets no answer
   (UFW drops it: ``ssh`` times out, a TCP connect to port 22 fails), while SSH over the tunnel
   still logs in with the certificate.
4. The lab's namespace and the harness's tunnel (its ``wireguard-go``, stopped by its pid) are
   gone afterwards.

The numbers go to ``out/wireguard-lab-report.json``. What is not proven: the kernel module (the
tunnels on both sides are ``wireguard-go``; Ubuntu 24.04 hosts use the kernel's), a droplet's
cloud firewall (KRO's and GIV's SSH rules are DigitalOcean's, which the lab has no stand-in
for; only UFW, on the on-prem entry hosts, is exercised), and Pencom's internal nodes through
the edge with break-glass off (only the edge has a box here).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root, require_tool
from tests.rehearsal.ops_proofs import engineer_certificate, write_stack_docs

pytestmark = pytest.mark.rehearsal

EDGE = "pencom-staging-edge"
PEER_NAME, PEER_STACK_ADDRESS = "lab-harness", "10.98.0.17"
TUNNEL = f"wglab{os.getpid() % 100000}"  # the harness's interface in the lab's namespace
ENDPOINT_OFFSET = 3  # stacks.management.GATEWAY_OFFSETS["pencom"]
ROOT = Path(__file__).resolve().parents[2]
SSH = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "ConnectTimeout=8", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]


def genkey() -> tuple[str, str]:
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip()
    return private, public


def stack_files(tmp: Path, peer_public: str) -> dict[str, Path]:
    """The committed staging stack file with the harness's key as a management peer: ``glass``
    (break-glass on, as committed) and ``closed`` (break-glass off)."""
    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path("staging").read_text())
    management = doc["config"]["platform:environment"]["management"]
    assert management["break_glass"]["enabled"] is True, management  # the committed first-deploy state
    management["peers"].append({"name": PEER_NAME, "public_key": peer_public, "address": PEER_STACK_ADDRESS})
    docs = {"glass": copy.deepcopy(doc)}
    management["break_glass"] = {"enabled": False}
    docs["closed"] = doc
    return write_stack_docs(tmp, docs, prefix="wg-")


def sh(lab, script: str) -> subprocess.CompletedProcess:
    return lab.exec(EDGE, ["bash", "-c", script], timeout=120)


def text(proc) -> str:
    out = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else proc.stdout
    err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
    return (out + err).strip()


def endpoint_state(lab) -> dict:
    """What the box's endpoint runs: ``wg show``, wg0's address, the unit, and which WireGuard."""
    return {"wg_show": text(sh(lab, "wg show wg0")),
            "public_key": sh(lab, "wg show wg0 public-key").stdout.decode().strip(),
            "listen_port": sh(lab, "wg show wg0 listen-port").stdout.decode().strip(),
            "address": sh(lab, "ip -o -4 addr show dev wg0 | awk '{print $4}'").stdout.decode().strip(),
            "unit": sh(lab, "systemctl is-active wg-quick@wg0").stdout.decode().strip(),
            "kernel_module": sh(lab, "[ -d /sys/module/wireguard ]").returncode == 0,
            "wireguard_go": sh(lab, "pgrep -x wireguard-go >/dev/null").returncode == 0}


class HarnessTunnel:
    """The harness's WireGuard interface in the lab's namespace: a ``wireguard-go`` process this
    test started (stopped by its pid at ``close``), loaded with ``wg set``."""

    def __init__(self, lab, name: str):
        self.lab, self.name, self.proc = lab, name, None

    def up(self, key_file: Path, endpoint_key: str, endpoint: str, allowed: str, address: str) -> None:
        env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
        self.proc = subprocess.Popen(self.lab.netns_argv(["wireguard-go", "-f", self.name]), env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not Path(f"/var/run/wireguard/{self.name}.sock").exists():
            assert self.proc.poll() is None, f"wireguard-go exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "wireguard-go made no socket"
            time.sleep(0.05)
        for argv in (["wg", "set", self.name, "private-key", str(key_file), "peer", endpoint_key,
                      "endpoint", endpoint, "allowed-ips", allowed, "persistent-keepalive", "25"],
                     ["ip", "addr", "add", address, "dev", self.name],
                     ["ip", "link", "set", self.name, "up"]):
            proc = self.lab.run_in_netns(argv, text=True)
            assert proc.returncode == 0, f"{argv}: {proc.stderr}"

    def show(self, what: str) -> str:
        return subprocess.run(self.lab.netns_argv(["wg", "show", self.name, what]), capture_output=True,
                              text=True).stdout.strip()

    def close(self) -> None:
        if self.proc is None:
            return
        subprocess.run(self.lab.netns_argv(["ip", "link", "del", self.name]), capture_output=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        Path(f"/var/run/wireguard/{self.name}.sock").unlink(missing_ok=True)
        self.proc = None


def ssh_login(lab, key: Path, certificate: Path, address: str, timeout: float = 40) -> dict:
    """``ssh ops@address`` from the lab's namespace with the certificate; what it printed of
    ``id -un`` and ``$SSH_CONNECTION`` (the source sshd saw), its exit status and seconds."""
    argv = lab.netns_argv(["ssh", *SSH, "-i", str(key), "-o", f"CertificateFile={certificate}",
                           f"ops@{address}", 'echo "$(id -un) $SSH_CONNECTION"'])
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        status, out, err = proc.returncode, proc.stdout.strip(), proc.stderr.strip()[-300:]
    except subprocess.TimeoutExpired:
        status, out, err = 124, "", f"timed out after {timeout} s"
    return {"status": status, "out": out, "err": err, "seconds": round(time.monotonic() - t0, 2)}


def tcp_connect(lab, address: str, port: int = 22) -> bool:
    return subprocess.run(lab.netns_argv(["nc", "-z", "-w", "5", address, str(port)]),
                          capture_output=True).returncode == 0


def wait_for(probe, seconds: float) -> tuple[bool, float]:
    t0 = time.monotonic()
    while True:
        if probe():
            return True, round(time.monotonic() - t0, 2)
        if time.monotonic() - t0 > seconds:
            return False, round(time.monotonic() - t0, 2)
        time.sleep(0.5)


def prove(held, work: Path, files: dict[str, Path], peer_private: str) -> dict:
    """Steps 1 to 3 on the held lab (``work``: a private directory for keys)."""
    from rehearsal.rehearse import Drill

    lab, results = held.lab, {}
    edge = held.lab_capture.hosts[EDGE]
    public = edge.address  # the converge's address under break-glass: the box's public lab address
    endpoint = held.overlay.address(str(_stack_endpoint()))
    peer_address = held.overlay.address(PEER_STACK_ADDRESS)
    results["addresses"] = {"public": public, "endpoint": endpoint, "peer": peer_address}
    run1 = json.loads((held.workdir / "results-1.json").read_text())
    results["wireguard_step"] = [{"status": r["status"], "changes": r["changes"], "changed": r.get("changed")}
                                 for r in run1 if r["name"] == f"{EDGE}-setup-wireguard"]
    results["endpoint"] = endpoint_state(lab)

    key, certificate = engineer_certificate(held, work, "lab-wireguard@example.com")
    key_file = work / "harness.key"
    key_file.touch(mode=0o600)
    key_file.write_text(peer_private + "\n")

    tunnel = HarnessTunnel(lab, TUNNEL)
    try:
        tunnel.up(key_file, results["endpoint"]["public_key"], f"{public}:{results['endpoint']['listen_port']}",
                  f"{endpoint}/32", f"{peer_address}/24")
        ok, seconds = wait_for(lambda: tcp_connect(lab, endpoint), 30)
        results["tunnel"] = {"port_22_through_tunnel": ok, "seconds": seconds,
                             "latest_handshake": tunnel.show("latest-handshakes")}
        results["glass_on"] = {"tunnel": ssh_login(lab, key, certificate, endpoint),
                               "outside": ssh_login(lab, key, certificate, public)}
        transfer_before = tunnel.show("transfer")

        def observe(context) -> dict:
            return {"connect_address": context.after.hosts[EDGE].address,
                    "docker_host": context.after.hosts[EDGE].docker_host}

        results["drill"] = held.drill(Drill("break-glass-off", observe, stack_file=files["closed"], hosts=[EDGE]))
        results["transfer"] = {"before_drill": transfer_before, "after_drill": tunnel.show("transfer")}
        results["glass_off"] = {"outside": ssh_login(lab, key, certificate, public),
                                "outside_tcp_22": tcp_connect(lab, public),
                                "tunnel": ssh_login(lab, key, certificate, endpoint),
                                "endpoint": endpoint_state(lab),
                                "ufw": text(sh(lab, "ufw status | grep -E '22|51820'"))}
    finally:
        tunnel.close()
    return results


def _stack_endpoint():
    import ipaddress

    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path("staging").read_text())
    network = doc["config"]["platform:environment"]["management"]["network"]
    return ipaddress.ip_network(network).network_address + ENDPOINT_OFFSET


@pytest.fixture(scope="module")
def wireguard_lab(tmp_path_factory):
    require_root("network namespaces, a Docker daemon, boxes, a WireGuard interface")
    for tool, why in (("dockerd", "the lab's harness daemon"), ("docker-registry", "the stand-in images' registry"),
                      ("wg", "wireguard-tools"), ("wireguard-go", "the harness's tunnel (no WireGuard in this kernel)"),
                      ("nc", "the TCP probe"), ("ssh", "the logins")):
        require_tool(tool, why)
    from rehearsal.rehearse import Rehearsal

    work = tmp_path_factory.mktemp("wireguard-lab")
    work.chmod(0o700)
    peer_private, peer_public = genkey()
    files = stack_files(work, peer_public)
    started = time.monotonic()
    results: dict = {"peer_public": peer_public}
    with Rehearsal("staging", products=["pencom"], hosts=[EDGE], stack_file=files["glass"], checks=False) as held:
        results["error"] = held.report.error
        results["timings"] = dict(held.report.timings)
        if held.report.error is None:
            try:
                results.update(prove(held, work, files, peer_private))
            except Exception as exc:  # noqa: BLE001 - the report keeps it; every test fails on it
                results["error"] = f"{type(exc).__name__}: {exc}"
    results["seconds"] = round(time.monotonic() - started, 1)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    results["teardown"] = {"error": held.report.teardown_error, "netns": held.report.netns,
                           "netns_left": held.report.netns in namespaces,
                           "tunnel_socket_left": Path(f"/var/run/wireguard/{TUNNEL}.sock").exists()}
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "wireguard-lab-report.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str)[:20000])
    return results


def test_the_endpoint_is_up_after_the_converge(wireguard_lab):
    assert wireguard_lab["error"] is None, wireguard_lab["error"]
    (step,) = wireguard_lab["wireguard_step"]
    assert step["status"] == "ok" and step["changes"], step  # it installed the endpoint (not skipped: the unit runs)
    state = wireguard_lab["endpoint"]
    assert state["unit"] == "active", state
    assert state["listen_port"] == "51820", state
    assert state["address"] == f"{wireguard_lab['addresses']['endpoint']}/24", state
    # The harness's key, which the stack file lists as a management peer, at its one address.
    assert f"peer: {wireguard_lab['peer_public']}" in state["wg_show"], state["wg_show"]
    assert f"allowed ips: {wireguard_lab['addresses']['peer']}/32" in state["wg_show"], state["wg_show"]
    # The kernel here has no WireGuard: the box runs wireguard-go, which wg-quick fell back to.
    assert state["kernel_module"] or state["wireguard_go"], state


def test_ssh_over_the_tunnel_logs_in_with_a_certificate(wireguard_lab):
    assert wireguard_lab["error"] is None, wireguard_lab["error"]
    assert wireguard_lab["tunnel"]["port_22_through_tunnel"], wireguard_lab["tunnel"]
    login = wireguard_lab["glass_on"]["tunnel"]
    assert login["status"] == 0, login
    user, source = login["out"].split()[:2]
    assert (user, source) == ("ops", wireguard_lab["addresses"]["peer"]), login
    # Control: under break-glass the harness's own address reaches sshd too.
    outside = wireguard_lab["glass_on"]["outside"]
    assert outside["status"] == 0 and outside["out"].startswith("ops "), outside


def test_with_break_glass_off_ssh_from_outside_wireguard_is_refused(wireguard_lab):
    assert wireguard_lab["error"] is None, wireguard_lab["error"]
    drill = wireguard_lab["drill"]
    assert "error" not in drill, drill["error"]
    # The converge went through the tunnel: the program's connect address is the endpoint's.
    assert drill["observation"]["connect_address"] == wireguard_lab["addresses"]["endpoint"], drill["observation"]
    (_, apply), (_, settle) = sorted(drill["runs"].items())
    assert not apply["failed"], apply["failed"]
    assert f"{EDGE}-setup-ufw" in apply["changed_steps"], apply["changed_steps"]
    assert not settle["failed"] and not any(settle["changes"].values()), settle
    off = wireguard_lab["glass_off"]
    assert off["outside"]["status"] != 0 and off["outside"]["out"] == "", off["outside"]
    assert off["outside_tcp_22"] is False, off
    tunnel = off["tunnel"]
    assert tunnel["status"] == 0, tunnel
    assert tunnel["out"].split()[:2] == ["ops", wireguard_lab["addresses"]["peer"]], tunnel


def test_the_lab_and_the_harness_tunnel_are_gone_afterwards(wireguard_lab):
    teardown = wireguard_lab["teardown"]
    assert teardown["error"] is None and teardown["netns"], teardown
    assert not teardown["netns_left"] and not teardown["tunnel_socket_left"], teardown
