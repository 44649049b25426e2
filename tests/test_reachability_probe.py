"""The observed side of the reachability matrix (issue #16), run with real ``nc`` against a small
replay built from network namespaces and veths (not the rehearsal's boxes).

The replay is Pencom's private segment: a Linux bridge in a "switch" namespace, and one namespace
per node (edge .11, app .12, data .13, storage .14) plus a neighbour (.50). The data node listens
on every port the staging capture gives it and filters them with iptables as the tier model says
(app to the datastores, the edge's monitoring to the exporters and SSH, the waiver to Postgres).
The expected side is the real staging matrix; the probes must agree with it cell for cell, and a
hole opened on purpose (storage to Postgres) must show as exactly one failed cell.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from functools import lru_cache

import pytest
import yaml

from rehearsal.checks import reachability as rm
from rehearsal.report import Report
from synth.engine import PROJECT_ROOT
from tests.conftest import require_root, require_tool, synth_once

NODES = {"edge": "10.41.0.11", "app": "10.41.0.12", "data": "10.41.0.13", "storage": "10.41.0.14",
         "neighbour": "10.41.0.50"}
DATA = "pencom-staging-data"
# The data node's filter, as the tier model reads (the program's own rules are proven elsewhere).
DATA_FILTER = [
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -p tcp -s 10.41.0.12 -m multiport --dports 5432,6379,27017 -j ACCEPT",
    "-A INPUT -p tcp -s 10.41.0.11 -m multiport --dports 22,8080,9100,5432 -j ACCEPT",
    "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
]


@lru_cache(maxsize=None)
def _expected():
    state = synth_once("staging")
    config = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())["config"]
    policy = json.loads((PROJECT_ROOT / "policy" / "config.staging.json").read_text())
    return rm.expected_matrix(state, config, policy)


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def segment():
    require_tool("nc", "Debian package netcat-openbsd")
    require_tool("ip", "Debian package iproute2")
    require_tool("iptables-restore", "Debian package iptables")
    require_root("needs root")
    tag = secrets.token_hex(3)
    switch = f"rps-{tag}"
    names = {node: f"rp{node[:2]}-{tag}" for node in NODES}
    listeners = []
    made = []
    try:
        for ns in [switch, *names.values()]:
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for node, ns in names.items():
            a, b = f"rpa{node[:2]}{tag}", f"rpb{node[:2]}{tag}"
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", switch)
            _ip("link", "set", b, "netns", ns)
            _ip("-n", switch, "link", "set", a, "master", "br0", "up")
            _ip("-n", ns, "link", "set", b, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{NODES[node]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        ports = sorted({t.port for t in (e.target for e in _expected()) if t.host == DATA and t.side == "private"})
        server = ("import socket, sys, threading\n"
                  "def serve(p):\n"
                  "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  "    s.bind(('0.0.0.0', p)); s.listen(16)\n"
                  "    while True: s.accept()[0].close()\n"
                  "for p in sys.argv[1:]: threading.Thread(target=serve, args=(int(p),), daemon=True).start()\n"
                  "threading.Event().wait()\n")
        listeners.append(subprocess.Popen(["ip", "netns", "exec", names["data"], sys.executable, "-c", server,
                                           *map(str, ports)]))
        rules = "*filter\n:INPUT ACCEPT [0:0]\n" + "\n".join(DATA_FILTER) + "\nCOMMIT\n"
        subprocess.run(["ip", "netns", "exec", names["data"], "iptables-restore"], input=rules, text=True,
                       check=True, capture_output=True)
        time.sleep(0.5)
        yield {"names": names, "ports": ports}
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _sites(names):
    positions = {"edge": "host:pencom-staging-edge", "app": "host:pencom-staging-app",
                 "storage": "host:pencom-staging-storage", "neighbour": "neighbour"}
    return {position: rm.ProbeSite(position, ("nsenter", f"--net=/run/netns/{names[node]}"))
            for node, position in positions.items()}


def _address(target: rm.Target):
    return NODES["data"] if (target.host, target.side) == (DATA, "private") else None


@pytest.mark.realtool
def test_probes_agree_with_the_tier_model_and_show_a_hole(segment):
    names = segment["names"]
    sites = _sites(names)
    cells = [e for e in _expected() if e.position in sites and _address(e.target)]
    assert {c.target.port for c in cells} == set(segment["ports"]) == {22, 5432, 6379, 8080, 9100, 27017}
    assert len(cells) == 4 * 6
    observed = rm.probe_matrix(cells, sites, _address, timeout_s=2)
    assert rm.summary(observed) == {"pass": 24, "fail": 0, "not proven": 0}, \
        [(o.position, o.target.label, o.expected, o.observed, o.detail) for o in observed if o.status != "pass"]
    assert sum(o.observed for o in observed) == 7  # app: 3 datastores; edge: SSH, 2 exporters, the waiver

    # A hole on purpose: the storage node reaches Postgres.
    subprocess.run(["ip", "netns", "exec", names["data"], "iptables", "-I", "INPUT", "-s", NODES["storage"],
                    "-p", "tcp", "--dport", "5432", "-j", "ACCEPT"], check=True, capture_output=True)
    observed = rm.probe_matrix(cells, sites, _address, timeout_s=2)
    failed = [(o.position, o.target.label, o.observed) for o in observed if o.status == "fail"]
    assert failed == [("host:pencom-staging-storage", "pencom-staging-data/private:5432/tcp", True)]

    report = Report(stack="staging", reachability=rm.rows(observed))
    assert report.to_json()["reachability"]["counts"] == {"pass": 23, "fail": 1, "not proven": 0}
    assert not report.ok
    assert ("  host:pencom-staging-storage -> pencom-staging-data/private:5432/tcp (10.41.0.13): observed open, "
            "the tier model says refused (data -> data on 5432 is not in the tier model)") in report.text()
    diagram = rm.mermaid(observed, "pencom")
    assert "-.->|planned - / observed 5432|" in diagram and "linkStyle" in diagram


@pytest.mark.fast
def test_a_cell_without_a_site_or_an_address_is_not_proven_never_a_pass():
    cells = [e for e in _expected() if e.position == "internet"][:3]
    calls = []
    observed = rm.probe_matrix(cells, {}, lambda t: "192.0.2.1", run=lambda *a, **k: calls.append(a))
    assert {o.status for o in observed} == {"not proven"} and calls == []
    assert observed[0].detail == "no probe site for this position"


@pytest.mark.fast
def test_nc_argv():
    assert rm.nc_argv("10.0.0.1", 5432, source="10.0.0.2") == ["nc", "-z", "-n", "-w", "2", "-s", "10.0.0.2", "10.0.0.1", "5432"]
    assert rm.nc_argv("10.0.0.1", 53, "udp") == ["nc", "-z", "-n", "-w", "2", "-u", "10.0.0.1", "53"]
