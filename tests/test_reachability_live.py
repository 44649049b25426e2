"""Pencom's data node column of the staging reachability matrix, observed on the program's own
rules: the expected side (the policy pack's tier model) against real UFW, real dockerd and the
rendered DOCKER-USER rules, probed with nc (issue #16).

The data node is a network namespace running Debian's dockerd, with its staging network (bridge
``pencom-data``), a container publishing every port the capture publishes there, a listener on
22 for sshd, the node's rendered UFW commands (run by real ufw over private copies of its
configuration) and its rendered DOCKER-USER rules. A second namespace on the segment holds the
edge (.11), app (.12) and storage (.14) addresses and a neighbour (.50) with a route to the
container subnet. Every cell of those positions towards the data node (its private address and
its containers' own addresses) must be observed exactly as expected: the app node to the
datastores, the edge to SSH, the exporters and, under the named waiver, Postgres and nothing else.
The app node's column likewise, its container listening on every port its containers listen on,
published or not: the services' own ports (4000-9000, unpublished) are refused, port by port, to
the other nodes and to the neighbour (without the DOCKER-USER rules 56 of its cells fail).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rehearsal.checks import reachability as rm
from tests.conftest import require_tool
from tests.isolation import apply_ufw
from tests.test_bridge_guard_real import (_create_network, _network_inputs, _ok, _resources, _run_listener,
                                          _wait_listening, rendered_rules, replay)  # noqa: F401 (fixture)
from tests.test_reachability_probe import _expected

pytestmark = pytest.mark.realtool

HOST = "pencom-staging-data"
NODES = {"pencom-staging-edge": "10.41.0.11", "pencom-staging-app": "10.41.0.12",
         "pencom-staging-data": "10.41.0.13", "pencom-staging-storage": "10.41.0.14"}


def _ufw_commands(host: str = HOST) -> str:
    [setup] = [r for r in _resources("staging") if r["name"] == f"{host}-setup-ufw"]
    script = setup["inputs"]["stdin"]
    return script.split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]


def _apply_ufw(ns_path: str, commands: str, tmp_path) -> None:
    result = apply_ufw(["nsenter", f"--net={ns_path}"], commands, tmp_path, timeout=180)
    assert result.returncode == 0 and "Default: deny (incoming)" in result.stdout, result.stdout + result.stderr


def _observe_column(replay, tmp_path, host: str) -> tuple[list, list]:
    """The cells from the other nodes and the neighbour towards ``host``, observed on its own
    rules: one container on its network listens on every port its containers listen on (the
    published ones published as captured), a listener on 22 stands for sshd. Returns (cells,
    observations)."""
    require_tool("nc", "Debian package netcat-openbsd")
    require_tool("ufw", "Debian package ufw")
    require_tool("unshare", "util-linux")
    daemon, host_ns, neighbour = replay["daemon"], replay["host"], replay["neighbour"]
    h, n = str(host_ns.path), str(neighbour.path)
    address = NODES[host]
    sources = {**{f"host:{node}": a for node, a in NODES.items() if node != host}, "neighbour": "10.41.0.50"}
    _ok(["ip", "-n", host_ns.name, "addr", "add", f"{address}/24", "dev", "eth0"])
    for source in sources.values():
        _ok(["ip", "-n", neighbour.name, "addr", "add", f"{source}/24", "dev", "eth0"])

    cells = [e for e in _expected() if e.position in sources and e.target.host == host]
    publishes = [p for r in _resources("staging") if r["type"] == "docker:index/container:Container"
                 and r["parent"].endswith(f"::{host}") for p in r["inputs"].get("ports") or []]
    assert {c.target.side for c in cells} == {"private", "container"}
    assert {c.target.port for c in cells if c.target.side == "private"} == {22, *(p["external"] for p in publishes)}
    listening = sorted({c.target.port for c in cells if c.target.side == "container"})

    net = _create_network(daemon, _network_inputs("staging", host))
    container_ip = _run_listener(daemon, "node", net, listening, publishes)
    _wait_listening(daemon, "node", listening[0])
    subnet = _ok(daemon.cli("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", net)).strip()
    _ok(["ip", "-n", neighbour.name, "route", "add", subnet, "via", address])
    sshd = subprocess.Popen(["nsenter", f"--net={h}", sys.executable, "-c",
                             "import socket\ns = socket.socket(); s.bind(('0.0.0.0', 22)); s.listen(8)\n"
                             "while True: s.accept()[0].close()\n"])
    try:
        time.sleep(0.3)
        _apply_ufw(h, _ufw_commands(host), tmp_path)
        rules = tmp_path / "docker-user.rules"
        rules.write_text(rendered_rules("staging", host))
        _ok(["nsenter", f"--net={h}", "iptables-restore", "--test", "--noflush", str(rules)])
        _ok(["nsenter", f"--net={h}", "iptables-restore", "--noflush", str(rules)])

        sites = {position: rm.ProbeSite(position, ("nsenter", f"--net={n}"), source)
                 for position, source in sources.items()}

        def address_of(target: rm.Target):
            return {"private": address, "container": container_ip}.get(target.side)

        return cells, rm.probe_matrix(cells, sites, address_of, timeout_s=2, workers=4)
    finally:
        sshd.kill()
        sshd.wait()


def test_the_data_node_column_is_observed_as_the_tier_model_expects(replay, tmp_path):
    cells, observed = _observe_column(replay, tmp_path, HOST)
    wrong = [(o.position, o.target.label, o.expected, o.observed, o.reason) for o in observed if o.status != "pass"]
    assert wrong == []
    opened = sorted((o.position, o.target.side, o.target.port) for o in observed if o.observed)
    assert opened == [
        ("host:pencom-staging-app", "private", 5432), ("host:pencom-staging-app", "private", 6379),
        ("host:pencom-staging-app", "private", 27017),
        ("host:pencom-staging-edge", "private", 22), ("host:pencom-staging-edge", "private", 5432),
        ("host:pencom-staging-edge", "private", 8080), ("host:pencom-staging-edge", "private", 9100),
    ]
    assert len(observed) == len(cells) == 4 * (6 + 5)


def test_the_app_nodes_unpublished_ports_are_refused_to_every_routed_source(replay, tmp_path):
    """The app services listen on 4000-9000 without publishing them (their ``PORT``; the mutual
    TLS terminator publishes 14000-19000): from the other nodes and from the neighbour that
    routes the app node's container subnet, each is refused at the container's own address by
    the bridge guard, port by port, while the published ones answer as the tier model says."""
    cells, observed = _observe_column(replay, tmp_path, "pencom-staging-app")
    wrong = [(o.position, o.target.label, o.expected, o.observed, o.reason) for o in observed if o.status != "pass"]
    assert wrong == []
    unpublished = {4000, 5000, 6000, 7000, 8000, 9000}
    tried = {(o.position, o.target.port) for o in observed if o.target.side == "container" and o.target.port in unpublished}
    assert tried == {(p, port) for p in ("host:pencom-staging-edge", "host:pencom-staging-data",
                                         "host:pencom-staging-storage", "neighbour") for port in unpublished}
    assert not [o for o in observed if o.target.side == "container" and o.observed]
    assert ("host:pencom-staging-edge", "private", 14000) in {(o.position, o.target.side, o.target.port)
                                                             for o in observed if o.observed}


def test_lab_probe_sites_enter_the_boxes_and_the_harness_namespace(replay):
    """The lab adapter against a lab-shaped replay: "boxes" are containers on the harness daemon's
    ``lab-public`` network, whose gateway is the harness namespace. The admin site probes from
    the gateway, ``host:A`` from inside box A (B refuses A by source address, so a probe that
    did not run in A would pass), and a position without a site stays not proven."""
    require_tool("nc", "Debian package netcat-openbsd")
    from types import SimpleNamespace

    daemon, host_ns = replay["daemon"], replay["host"]
    a, b = "kro-staging", "giv-staging-ops"
    addresses = {a: "10.213.50.11", b: "10.213.50.12"}
    _ok(daemon.cli("network", "create", "--subnet", "10.213.50.0/24", "--gateway", "10.213.50.1", "lab-public"))
    for name, ip in addresses.items():
        _ok(daemon.cli("run", "-d", "--name", name, "--network", "lab-public", "--ip", ip, "-v", "/usr:/usr:ro",
                       "platform-test/listener:1", "python3", "-c",
                       "import socket\ns = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen(8)\n"
                       "while True: s.accept()[0].close()\n"))
    _wait_listening(daemon, b, 8080)
    lab = SimpleNamespace(netns=host_ns.name, networks={"public": "10.213.50.0/24"},
                          harness_docker_host=daemon.host,
                          boxes={n: SimpleNamespace(addresses={"public": ip}) for n, ip in addresses.items()})
    hosts = {n: rm.Host(n, n.split("-")[0], "edge", ("public",), (), frozenset({"edge"}), frozenset({"edge"}))
             for n in addresses}
    topo = rm.Topology(hosts, ())
    sites = rm.lab_probe_sites(lab, topo)
    assert set(sites) == {"admin", f"host:{a}", f"host:{b}"}
    assert sites["admin"].source == "10.213.50.1"
    target = rm.Target(b, "public", 8080, service="web", tier="edge")
    cells = [rm.Expectation("admin", target, True, "admin"), rm.Expectation(f"host:{a}", target, False, "refused by source"),
             rm.Expectation("internet", target, True, "no site")]
    address_of = rm.lab_address_of(lab, topo)
    assert address_of(target) == "10.213.50.12" and address_of(rm.Target(b, "container", 80)) is None

    before = {o.position: o.observed for o in rm.probe_matrix(cells, sites, address_of)}
    assert before == {"admin": True, f"host:{a}": True, "internet": None}, "control: B answers A before the rule"
    pid = _ok(daemon.cli("inspect", "-f", "{{.State.Pid}}", b)).strip()
    _ok(["nsenter", f"--net=/proc/{pid}/ns/net", "iptables", "-A", "INPUT", "-s", addresses[a], "-p", "tcp",
         "--dport", "8080", "-j", "REJECT", "--reject-with", "tcp-reset"])
    observed = rm.probe_matrix(cells, sites, address_of)
    assert [(o.position, o.status) for o in observed] == [("admin", "pass"), (f"host:{a}", "pass"), ("internet", "not proven")]
