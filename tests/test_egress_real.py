"""The egress allow-list and the DOCKER-USER filter, run by the real tools.

- squid parses the committed stack's proxy config, and a squid on loopback, started from the
  same renderer, lets each client port reach only its own providers.
- The committed app node's DOCKER-USER rules are loaded by real iptables inside network
  namespaces this test creates (a "host" with Docker's DNAT and forwarding, a "container", and
  a network standing in for the other nodes, the internet and Oracle ECRS). TCP probes show
  that a published port answers only the sources UFW admits, and that the container reaches
  the internal network and Oracle but not the internet. The host's own firewall is never touched.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from components import egress
from synth.engine import PROJECT_ROOT
from tests.conftest import require_root, require_tool, synth_once
from tests.realtools import free_port, wait_for_port

pytestmark = pytest.mark.realtool


def _stack_egress(stack: str = "prod") -> dict:
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return document["config"]["platform:pencom"]


def _routes(cfg: dict) -> list[egress.ProxyRoute]:
    routes = [egress.ProxyRoute(r["name"], tuple(r["domains"]), tuple(r["services"])) for r in cfg["egress"]["https"]]
    return routes + [egress.ProxyRoute("nodes", tuple(cfg["egress"]["host_domains"]), (egress.HOST_ROUTE,))]


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_committed_proxy_config_parses(stack, tmp_path):
    squid = require_tool("squid", "Debian package squid")
    cfg = _stack_egress(stack)
    routes = _routes(cfg)
    conf = tmp_path / "squid.conf"
    conf.write_text(egress.render_squid_conf(routes, egress.proxy_ports(routes),
                                             allowed_sources=[cfg["internal_cidr"], "172.16.0.0/12"]))
    result = subprocess.run([squid, "-k", "parse", "-f", str(conf)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "FATAL" not in output and "ERROR" not in output, output
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace("acl web_ports port 80 443", "acl web_ports prot 80 443"))
    assert subprocess.run([squid, "-k", "parse", "-f", str(broken)], capture_output=True).returncode != 0


@pytest.fixture(scope="module")
def proxy():
    squid = require_tool("squid", "Debian package squid")
    cfg = _stack_egress()
    routes = _routes(cfg)
    ports = _free_port_block(routes)
    # Not under pytest's base temp directory (0700 root): squid reads its hosts file as its own
    # user, after dropping root, and must reach it.
    workdir = Path(tempfile.mkdtemp(prefix="squid-"))
    os.chmod(workdir, 0o777)
    # Offline here: every probed name resolves from this file to loopback, where nothing answers
    # on 443, so an allowed CONNECT passes the ACLs and fails at once (503) instead of waiting
    # seconds for a resolver; any other name fails its lookup at once (no resolver on 127.0.0.1).
    hosts = workdir / "hosts"
    hosts.write_text("".join(f"127.0.0.1 {target.rsplit(':', 1)[0]}\n" for _, target, _ in CONNECTS))
    conf = workdir / "squid.conf"
    conf.write_text(egress.render_squid_conf(routes, ports, allowed_sources=["127.0.0.0/8"],
                                             listen_address="127.0.0.1")
                    + f"pid_filename {workdir}/squid.pid\nhosts_file {hosts}\ndns_nameservers 127.0.0.1\n"
                    "dns_timeout 2 seconds\nconnect_timeout 2 seconds\n"
                    # Stop at once on SIGTERM instead of draining clients for 30 s.
                    "shutdown_lifetime 0 seconds\n")
    process = subprocess.Popen([squid, "-N", "-f", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        wait_for_port(min(ports.values()), process, timeout=30)
        for port in ports.values():
            wait_for_port(port, process, timeout=10)
        yield ports
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _free_port_block(routes: list[egress.ProxyRoute]) -> dict[str, int]:
    """The proxy's consecutive ports (egress.proxy_ports) from a base where all of them are free."""
    for _ in range(20):
        ports = egress.proxy_ports(routes, base=free_port())
        if all(_port_free(p) for p in ports.values()):
            return ports
    pytest.fail("no block of consecutive free ports for the proxy on 127.0.0.1 after 20 tries")


CONNECTS = [
    ("notifications", "api.sendgrid.com:443", True),
    ("notifications", "login.remita.net:443", False),
    ("payments", "login.remita.net:443", True),
    ("payments", "api.sendgrid.com:443", False),
    ("core", "pub.highlight.io:443", True),
    ("core", "us.i.posthog.com:443", False),
    ("api-gateway", "us.i.posthog.com:443", True),
    ("hosts", "deb.debian.org:443", True),
    ("hosts", "example.r2.cloudflarestorage.com:443", True),
    ("hosts", "api.sendgrid.com:443", False),
    ("notifications", "api.sendgrid.com:22", False),
    ("notifications", "evil.example:443", False),
]


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _connect_status(port: int, target: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request("CONNECT", target, headers={"Host": target})
    status = connection.getresponse().status
    connection.close()
    return status


@pytest.mark.parametrize("client,target,allowed", CONNECTS)
def test_each_proxy_port_reaches_only_its_providers(proxy, client, target, allowed):
    status = _connect_status(proxy[client], target)
    # Allowed destinations get past the ACLs and then fail offline (nothing listens): not 403.
    assert (status != 403) == allowed, status


# --- DOCKER-USER in network namespaces ----------------------------------------------------------

HOST_ADDR, EDGE, DATA, STORAGE = "10.40.0.12", "10.40.0.11", "10.40.0.13", "10.40.0.14"
INTERNET, ORACLE = "198.51.100.7", "10.50.8.20"
CONTAINER_ADDR, CONTAINER_GW, EXEMPT_ADDR = "172.30.0.2", "172.30.0.1", "172.30.0.3"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _in(ns: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kwargs)


def _app_rules(node: str = "app") -> str:
    from synth.state import State
    from tests.test_pencom import _pencom_only

    state = State(synth_once("prod", document=_pencom_only("prod")))
    script = state.named(f"pencom-prod-{node}-docker-firewall", "command:remote:Command")["inputs"]["stdin"]
    heredoc = script.split("<<'PLATFORM_EOF'", 1)[1]
    return heredoc.split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]


@pytest.fixture
def docker_host():
    require_tool("ip", "Debian package iproute2")
    iptables = require_tool("iptables", "Debian package iptables")
    require_tool("iptables-restore", "Debian package iptables")
    require_root("network namespaces need root")
    suffix = str(os.getpid())
    host, net, ctr = f"dkh{suffix}", f"dkn{suffix}", f"dkc{suffix}"
    for ns in (host, net, ctr):
        _ip("netns", "add", ns)
    listeners = []
    try:
        _ip("link", "add", f"dkx{suffix}"[:15], "type", "veth", "peer", "name", f"dky{suffix}"[:15])
        _ip("link", "set", f"dkx{suffix}"[:15], "netns", net)
        _ip("link", "set", f"dky{suffix}"[:15], "netns", host)
        _ip("-n", host, "link", "set", f"dky{suffix}"[:15], "name", "eth0")
        # The host's end of the container link carries the Docker bridge's name, as the rules expect.
        _ip("link", "add", "pencom-app", "netns", host, "type", "veth", "peer", "name", f"dkz{suffix}"[:15], "netns", ctr)
        _ip("-n", host, "addr", "add", f"{HOST_ADDR}/24", "dev", "eth0")
        for address in (EDGE, DATA, STORAGE):
            _ip("-n", net, "addr", "add", f"{address}/24", "dev", f"dkx{suffix}"[:15])
        for address in (INTERNET, ORACLE):
            _ip("-n", net, "addr", "add", f"{address}/32", "dev", f"dkx{suffix}"[:15])
        _ip("-n", host, "addr", "add", f"{CONTAINER_GW}/24", "dev", "pencom-app")
        _ip("-n", ctr, "addr", "add", f"{CONTAINER_ADDR}/24", "dev", f"dkz{suffix}"[:15])
        _ip("-n", ctr, "addr", "add", f"{EXEMPT_ADDR}/24", "dev", f"dkz{suffix}"[:15])
        for ns, dev in ((host, "eth0"), (host, "pencom-app"), (net, f"dkx{suffix}"[:15]), (ctr, f"dkz{suffix}"[:15])):
            _ip("-n", ns, "link", "set", dev, "up")
        for ns in (host, net, ctr):
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ctr, "route", "add", "default", "via", CONTAINER_GW)
        _ip("-n", host, "route", "add", f"{INTERNET}/32", "via", EDGE)
        _ip("-n", host, "route", "add", f"{ORACLE}/32", "via", EDGE)
        _in(host, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        # What Docker does for a container publishing 14000 on the private address (the
        # mutual-TLS terminator's port for core; the services themselves publish nothing).
        for rule in (["-t", "nat", "-A", "PREROUTING", "-d", HOST_ADDR, "-p", "tcp", "--dport", "14000",
                      "-j", "DNAT", "--to-destination", f"{CONTAINER_ADDR}:14000"],
                     ["-t", "nat", "-A", "POSTROUTING", "-s", "172.30.0.0/24", "!", "-o", "pencom-app", "-j", "MASQUERADE"],
                     ["-N", "DOCKER-USER"], ["-A", "FORWARD", "-j", "DOCKER-USER"], ["-A", "FORWARD", "-j", "ACCEPT"]):
            _in(host, iptables, *rule, check=True)
        server = textwrap.dedent("""
            import socket, sys, threading
            def serve(address, port):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port)); s.listen()
                while True:
                    c, _ = s.accept(); c.close()
            pairs = [p.split(":") for p in sys.argv[1:]]
            for address, port in pairs:
                threading.Thread(target=serve, args=(address, int(port)), daemon=True).start()
            threading.Event().wait()
        """)
        listeners.append(subprocess.Popen(["ip", "netns", "exec", ctr, sys.executable, "-c", server,
                                           f"{CONTAINER_ADDR}:14000"]))
        listeners.append(subprocess.Popen(["ip", "netns", "exec", net, sys.executable, "-c", server,
                                           f"{INTERNET}:443", f"{INTERNET}:22", f"{ORACLE}:1521", f"{ORACLE}:443",
                                           f"{DATA}:5432", f"{DATA}:22", f"{DATA}:27017", f"{DATA}:9100",
                                           f"{STORAGE}:9000", f"{STORAGE}:22", f"{EDGE}:3128"]))
        time.sleep(0.7)
        yield {"host": host, "net": net, "ctr": ctr, "iptables": iptables}
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait()
        for ns in (host, net, ctr):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _reaches(ns: str, target: str, port: int, source: str | None = None) -> bool:
    bind = f"s.bind(({source!r}, 0)); " if source else ""
    probe = f"import socket; s = socket.socket(); s.settimeout(1.5); {bind}s.connect(({target!r}, {port})); s.close()"
    return _in(ns, sys.executable, "-c", probe).returncode == 0


def test_docker_user_rules_filter_published_ports_and_container_egress(docker_host, tmp_path):
    host, net, ctr = docker_host["host"], docker_host["net"], docker_host["ctr"]
    # Positive control: without the rules, everything gets through.
    assert _reaches(net, HOST_ADDR, 14000, source=STORAGE)
    assert _reaches(ctr, INTERNET, 443) and _reaches(ctr, ORACLE, 443)

    rules = tmp_path / "docker-user.rules"
    rules.write_text(_app_rules())
    for _ in range(2):  # applied twice, as on every Docker start: the chain is rebuilt, not appended to
        _in(host, "iptables-restore", "--noflush", str(rules), check=True)
    listing = _in(host, docker_host["iptables"], "-S", "DOCKER-USER", check=True).stdout
    assert listing.count("--ctorigdstport 14000") == 3, listing  # edge, app, then drop
    assert "--ctorigdstport 4000 " not in listing, "core's own port is admitted from no other host"

    assert _reaches(net, HOST_ADDR, 14000, source=EDGE), "the edge node must reach core through the terminator"
    assert not _reaches(net, HOST_ADDR, 14000, source=STORAGE), "the storage node must not reach core's TLS port"
    assert _reaches(ctr, DATA, 5432), "containers reach the data node's Postgres"
    assert _reaches(ctr, STORAGE, 9000) and _reaches(ctr, EDGE, 3128), "MinIO and the egress proxy"
    assert not _reaches(ctr, DATA, 9100), "not the data node's exporter: only the edge's Prometheus scrapes it"
    assert not _reaches(ctr, DATA, 22) and not _reaches(ctr, STORAGE, 22), "never SSH"
    assert _reaches(ctr, ORACLE, 1521), "containers reach Oracle ECRS on its port"
    assert not _reaches(ctr, ORACLE, 443), "but nothing else there"
    assert not _reaches(ctr, INTERNET, 443), "and not the internet (HTTPS goes through the proxy)"


def test_an_exempt_container_reaches_the_internet_and_its_neighbours_do_not(docker_host, tmp_path):
    """The edge node's lock: only the containers pinned to exempt addresses (the proxy,
    Alertmanager, blackbox) leave directly; the same rules, rendered for this namespace."""
    from components import tiers

    host, ctr = docker_host["host"], docker_host["ctr"]
    assert _reaches(ctr, INTERNET, 443, source=CONTAINER_ADDR), "control: open before the rules"
    rules = tmp_path / "edge.rules"
    rules.write_text(egress.render_docker_user_rules(
        published=[], rules=[tiers.InboundRule(443, cidrs=tiers.WORLD_CIDRS)], bridge="pencom-app",
        internal_cidr="10.40.0.0/24", exempt_sources=[EXEMPT_ADDR]))
    _in(host, "iptables-restore", "--noflush", str(rules), check=True)
    assert _reaches(ctr, INTERNET, 443, source=EXEMPT_ADDR)
    assert not _reaches(ctr, INTERNET, 443, source=CONTAINER_ADDR)
    assert _reaches(ctr, DATA, 5432, source=CONTAINER_ADDR), "the internal network stays reachable"


def test_edge_containers_never_reach_ssh_on_the_internal_nodes(docker_host, tmp_path):
    """The staging matrix's finding: a container on the edge node (the bastion) reached SSH on
    every internal node, its traffic masqueraded to the edge's address, which they admit for
    SSH. The committed edge node's rules, loaded here with the edge bridge and its first exempt
    address (the proxy) mapped onto this namespace's: its containers reach on the internal
    network only what the tier model admits from the edge (the waiver's Postgres, the
    exporters), never SSH, and the exempt ones reach the internet but not the nodes."""
    host, ctr = docker_host["host"], docker_host["ctr"]
    assert _reaches(ctr, DATA, 22, source=CONTAINER_ADDR), "control: open before the rules"
    assert _reaches(ctr, DATA, 27017, source=EXEMPT_ADDR), "control: open before the rules"
    text = _app_rules("edge")
    assert "-i pencom-edge -p tcp --dport 22 -j DROP" in text, text
    rules = tmp_path / "edge.rules"
    rules.write_text(text.replace("pencom-edge", "pencom-app").replace("172.31.250.10/32", f"{EXEMPT_ADDR}/32"))
    _in(host, "iptables-restore", "--noflush", str(rules), check=True)
    for source in (CONTAINER_ADDR, EXEMPT_ADDR):
        assert not _reaches(ctr, DATA, 22, source=source), f"{source} reaches SSH on the data node"
        assert not _reaches(ctr, STORAGE, 22, source=source), f"{source} reaches SSH on the storage node"
        assert not _reaches(ctr, INTERNET, 22, source=source), f"{source} reaches SSH on the internet"
        assert not _reaches(ctr, DATA, 27017, source=source), "MongoDB admits the app node only"
        assert not _reaches(ctr, STORAGE, 9000, source=source), "MinIO admits the app node only"
    assert _reaches(ctr, DATA, 5432, source=CONTAINER_ADDR), "the named waiver: external-gateway reads Postgres"
    assert _reaches(ctr, DATA, 9100, source=CONTAINER_ADDR), "Prometheus scrapes the node exporters"
    assert _reaches(ctr, INTERNET, 443, source=EXEMPT_ADDR), "the proxy reaches the providers"
    assert not _reaches(ctr, INTERNET, 443, source=CONTAINER_ADDR)


def test_no_container_opens_ssh_on_an_unlocked_host(docker_host, tmp_path):
    """A host without an egress lock (a droplet) still drops SSH from every container bridge."""
    host, ctr = docker_host["host"], docker_host["ctr"]
    assert _reaches(ctr, DATA, 22)
    rules = tmp_path / "open.rules"
    rules.write_text(egress.render_docker_user_rules(published=[], rules=[],
                                                     container_bridges=("docker0", "pencom-app")))
    _in(host, "iptables-restore", "--noflush", str(rules), check=True)
    assert not _reaches(ctr, DATA, 22) and not _reaches(ctr, INTERNET, 22)
    assert _reaches(ctr, DATA, 5432) and _reaches(ctr, INTERNET, 443), "the rest of its egress is open"


def _firewall_rules(stack: str, resource: str) -> str:
    from synth.state import State

    script = State(synth_once(stack)).named(resource, "command:remote:Command")["inputs"]["stdin"]
    return script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]


VPC_DB = "10.110.0.5"
ALERTS_ADDR = "172.30.0.4"


def test_single_host_app_containers_reach_only_their_allow_list(docker_host, tmp_path):
    """The staging matrix's finding: app and data containers on KRO's droplet (and GIV's ops
    droplet, V-EdFinance's VPS) reached the web. The committed KRO droplet's rules, with its
    bridge and fixed addresses mapped onto this namespace's: an app container reaches nothing
    outside its network, not even the database (the backend reaches it from a network of its
    own: ``tests/test_bridge_guard_real.py`` proves that on a real dockerd), not from the address
    the backend was once pinned to either, and Alertmanager (exempt) the internet but not the VPC."""
    host, net, ctr = docker_host["host"], docker_host["net"], docker_host["ctr"]
    suffix = str(os.getpid())
    _ip("-n", net, "addr", "add", f"{VPC_DB}/32", "dev", f"dkx{suffix}"[:15])
    _ip("-n", host, "route", "add", "10.110.0.0/20", "via", EDGE)
    _ip("-n", ctr, "addr", "add", f"{ALERTS_ADDR}/24", "dev", f"dkz{suffix}"[:15])
    server = ("import socket, threading\n"
              "def serve(p):\n"
              f"    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(({VPC_DB!r}, p)); s.listen()\n"
              "    while True:\n"
              "        c, _ = s.accept(); c.close()\n"
              "for p in (25060, 443):\n"
              "    threading.Thread(target=serve, args=(p,), daemon=True).start()\n"
              "threading.Event().wait()\n")
    listener = subprocess.Popen(["ip", "netns", "exec", net, sys.executable, "-c", server])
    try:
        time.sleep(0.7)
        for source in (CONTAINER_ADDR, EXEMPT_ADDR, ALERTS_ADDR):
            assert _reaches(ctr, INTERNET, 443, source=source), f"control: {source} open before the rules"
        assert _reaches(ctr, VPC_DB, 25060, source=CONTAINER_ADDR), "control"
        # The address the backend was pinned to before it had a network of its own.
        _ip("-n", ctr, "addr", "add", "172.31.251.12/32", "dev", f"dkz{suffix}"[:15])
        _ip("-n", host, "route", "add", "172.31.251.12/32", "dev", "pencom-app")
        _in(host, docker_host["iptables"], "-t", "nat", "-A", "POSTROUTING", "-s", "172.31.251.12",
            "!", "-o", "pencom-app", "-j", "MASQUERADE", check=True)
        assert _reaches(ctr, VPC_DB, 25060, source="172.31.251.12"), "control"
        text = _firewall_rules("prod", "kro-prod-docker-firewall")
        # Alertmanager has a fixed address (the lower half of egress.subnet); the backend's
        # database flows are its own network's (172.31.250.240/28 on kro-db-ctr), none on kro-ctr.
        assert "-i kro-db-ctr -p tcp -s 172.31.250.240/28 -d 10.110.0.0/20 --dport 25060 -j RETURN" in text, text
        assert not [line for line in text.splitlines() if line.startswith("-A DOCKER-USER -i kro-ctr -p tcp -s")], text
        assert "-A DOCKER-USER -i kro-ctr -j DROP" in text
        rules = tmp_path / "kro.rules"
        rules.write_text(text.replace("kro-ctr", "pencom-app").replace("172.31.251.10/32", f"{ALERTS_ADDR}/32"))
        _in(host, "iptables-restore", "--noflush", str(rules), check=True)
        assert not _reaches(ctr, INTERNET, 443, source=CONTAINER_ADDR), "an app container reaches the web"
        assert not _reaches(ctr, VPC_DB, 25060, source=CONTAINER_ADDR), "only the backend reaches the database"
        assert not _reaches(ctr, VPC_DB, 25060, source="172.31.251.12"), "the backend's old address is nothing now"
        assert not _reaches(ctr, VPC_DB, 25060, source=EXEMPT_ADDR), "nor any other on the host's bridge"
        assert _reaches(ctr, INTERNET, 443, source=ALERTS_ADDR), "Alertmanager sends mail and Slack"
        assert not _reaches(ctr, VPC_DB, 25060, source=ALERTS_ADDR), "but not into the VPC"
        assert not _reaches(ctr, INTERNET, 22, source=ALERTS_ADDR), "and never SSH"
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.parametrize("stack,resource,bridge", [("staging", "vedfinance-staging-docker-firewall", "ved-ctr"),
                                                   ("prod", "giv-prod-ops-docker-firewall", "giv-ops-ctr")])
def test_the_other_single_hosts_lock_their_containers_too(stack, resource, bridge):
    """V-EdFinance's VPS and GIV's ops droplet: the same lock (the KRO test above proves it on
    real iptables); with no allow-list configured, only the two monitoring exemptions leave."""
    text = _firewall_rules(stack, resource)
    own = [line for line in text.splitlines() if line.startswith(f"-A DOCKER-USER -i {bridge} ")]
    assert own[-1] == f"-A DOCKER-USER -i {bridge} -j DROP", own
    leaving = [line for line in own if line.endswith("-j RETURN") and f"-o {bridge}" not in line]
    assert leaving == [f"-A DOCKER-USER -i {bridge} -s 172.31.251.10/32 -j RETURN",
                       f"-A DOCKER-USER -i {bridge} -s 172.31.251.11/32 -j RETURN"], leaving
