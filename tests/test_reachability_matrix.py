"""The expected side of the reachability matrix (issue #16): derived from the tier model as the
policy pack writes it, from the staging capture; and the module never consults the renderers."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import lru_cache

import pytest
import yaml

from rehearsal.checks import reachability as rm
from synth.engine import PROJECT_ROOT
from tests.conftest import synth_once

pytestmark = pytest.mark.fast


@lru_cache(maxsize=None)
def _inputs(stack: str):
    state = synth_once(stack)
    config = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    policy = json.loads((PROJECT_ROOT / "policy" / f"config.{stack}.json").read_text())
    return state, config, policy


def _matrix(stack="staging", policy=None, config=None):
    state, cfg, pol = _inputs(stack)
    return {(e.position, e.target.host, e.target.side, e.target.port): e
            for e in rm.expected_matrix(state, config or cfg, policy or pol)}


def test_staging_matrix_covers_every_position_and_listener():
    matrix = _matrix()
    positions = {p for p, *_ in matrix}
    hosts = ["kro-staging", "giv-staging-ops", "vedfinance-staging",
             *(f"pencom-staging-{n}" for n in ("edge", "app", "data", "storage"))]
    assert positions == {"internet", "admin", "neighbour", *(f"{k}:{h}" for h in hosts for k in ("host", "containers"))}
    # Every published port is a target from the neighbour in its container, and on its host unless on loopback.
    state, _, _ = _inputs("staging")
    for r in state["resources"]:
        if r["type"] == "docker:index/container:Container":
            for p in r["inputs"].get("ports") or []:
                host = r["parent"].rsplit("::", 1)[1]
                # Loopback publishes too: their containers' own addresses are the neighbour's way in.
                assert ("neighbour", host, "container", p["internal"]) in matrix, (r["name"], p)
                if not p["ip"].startswith("127."):
                    assert any(k[:2] == ("neighbour", host) and k[3] == p["external"] and k[2] in ("public", "private")
                               for k in matrix), (r["name"], p)
    # 548 cells and 207 allowed before the ports containers listen on without publishing them.
    cells = rm.expected_matrix(*_inputs("staging"))
    assert len(cells) == 911
    # KRO's backend on a network of its own: not from the main bridge's probe container.
    assert sum(e.allowed for e in cells) == 320
    loopback = {k: e.allowed for k, e in matrix.items() if k[1] == "vedfinance-staging" and k[2] == "container"
                and k[3] in (5432, 6379)}
    assert loopback == {(p, "vedfinance-staging", "container", port): p.endswith(":vedfinance-staging")
                        for p in ("neighbour", "host:vedfinance-staging", "containers:vedfinance-staging")
                        for port in (5432, 6379)}


@pytest.mark.parametrize("cell,allowed", [
    (("internet", "pencom-staging-edge", "public", 443), True),
    (("internet", "pencom-staging-edge", "public", 80), True),
    (("internet", "pencom-staging-edge", "public", 22), False),
    (("internet", "vedfinance-staging", "public", 22), False),
    (("admin", "vedfinance-staging", "public", 22), True),
    (("admin", "kro-staging", "public", 22), True),
    (("admin", "pencom-staging-edge", "public", 22), True),
    # The neighbour with a route to the container subnets: no more than the internet.
    (("neighbour", "pencom-staging-data", "private", 5432), False),
    (("neighbour", "pencom-staging-data", "container", 5432), False),
    (("neighbour", "pencom-staging-edge", "private", 443), True),
    (("neighbour", "pencom-staging-edge", "private", 3128), False),
    (("neighbour", "pencom-staging-app", "private", 22), False),
    # Tiers: app reaches data, edge reaches app, data reaches nothing of its peers.
    (("host:pencom-staging-app", "pencom-staging-data", "private", 5432), True),
    (("host:pencom-staging-app", "pencom-staging-storage", "private", 9000), True),
    (("host:pencom-staging-storage", "pencom-staging-data", "private", 5432), False),
    # The app services over mutual TLS only: the terminator's port for core (4000 + 10000).
    (("host:pencom-staging-data", "pencom-staging-app", "private", 14000), False),
    (("host:pencom-staging-edge", "pencom-staging-app", "private", 14000), True),
    (("containers:pencom-staging-edge", "pencom-staging-app", "private", 14000), True),
    (("host:pencom-staging-edge", "pencom-staging-storage", "private", 9000), False),
    # Metrics: monitoring on the edge scrapes the exporters; app does not.
    (("host:pencom-staging-edge", "pencom-staging-data", "private", 9100), True),
    (("host:pencom-staging-app", "pencom-staging-data", "private", 9100), False),
    # SSH: internal nodes only from the bastion.
    (("host:pencom-staging-edge", "pencom-staging-data", "private", 22), True),
    (("host:pencom-staging-app", "pencom-staging-data", "private", 22), False),
    # The named waiver, and nothing beyond it.
    (("host:pencom-staging-edge", "pencom-staging-data", "private", 5432), True),
    (("containers:pencom-staging-edge", "pencom-staging-data", "private", 5432), True),
    (("host:pencom-staging-edge", "pencom-staging-data", "private", 27017), False),
    (("host:pencom-staging-edge", "pencom-staging-data", "private", 6379), False),
    (("containers:pencom-staging-edge", "pencom-staging-data", "container", 5432), False),
    # Container addresses answer their own bridge and host only.
    (("containers:pencom-staging-data", "pencom-staging-data", "container", 5432), True),
    (("containers:pencom-staging-app", "pencom-staging-data", "container", 5432), False),
    # Egress: app and data containers only to their allow-lists.
    (("containers:pencom-staging-app", "pencom-staging-app", "internet", 443), False),
    (("containers:pencom-staging-data", "pencom-staging-data", "internet", 443), False),
    # Pencom declares an egress proxy: its edge containers leave through it too; the host does not.
    (("containers:pencom-staging-edge", "pencom-staging-edge", "internet", 443), False),
    (("host:pencom-staging-edge", "pencom-staging-edge", "internet", 443), True),
    (("containers:kro-staging", "kro-staging", "internet", 443), False),
    (("containers:pencom-staging-app", "pencom-staging-app", "direct:oracle-ecrs", 1521), True),
    (("containers:pencom-staging-data", "pencom-staging-data", "direct:oracle-ecrs", 1521), False),
    (("host:pencom-staging-app", "pencom-staging-app", "direct:oracle-ecrs", 1521), False),
    (("containers:pencom-staging-app", "pencom-staging-edge", "private", 3128), True),
    (("containers:vedfinance-staging", "vedfinance-staging", "internet", 443), False),
])
def test_cells_follow_the_tier_model(cell, allowed):
    assert _matrix()[cell].allowed is allowed, _matrix()[cell]


def test_the_waiver_is_what_admits_the_external_gateway():
    cell = ("host:pencom-staging-edge", "pencom-staging-data", "private", 5432)
    assert _matrix()[cell].reason == "waiver external-gateway-reads-compliance"
    _, _, policy = _inputs("staging")
    for broken in ("drop", "no reason"):
        edited = copy.deepcopy(policy)
        waivers = edited[rm.REACHABILITY_POLICY]["waivers"]
        if broken == "drop":
            waivers[:] = [w for w in waivers if w["name"] != "external-gateway-reads-compliance"]
        else:
            next(w for w in waivers if w["name"] == "external-gateway-reads-compliance")["reason"] = ""
        assert _matrix(policy=edited)[cell].allowed is False, broken


def test_an_egress_proxy_waiver_covers_only_its_ports():
    matrix = _matrix()
    assert matrix[("host:pencom-staging-data", "pencom-staging-edge", "private", 3136)].reason == "waiver egress-proxy"
    assert rm.Waiver("w", "*", "pencom-*-edge", (3128, 3136)).covers("pencom-staging-app", "pencom-staging-edge", 3137) is False


def test_a_read_waiver_whose_service_is_nowhere_is_an_error():
    state, config, policy = _inputs("staging")
    edited = copy.deepcopy(config)
    edited["platform:pencom"]["read_waivers"][0]["service"] = "no-such-service"
    with pytest.raises(ValueError, match=r"read waiver external-gateway-reads-compliance: service no-such-service runs on \[\]"):
        rm.expected_matrix(state, edited, policy)


def test_the_expected_side_never_imports_the_renderers():
    code = ("import sys, rehearsal.checks.reachability; "
            "print(sorted(m for m in sys.modules if m.startswith('components')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_rehearsal_without_probe_sites_reports_every_cell_not_proven():
    from types import SimpleNamespace

    from rehearsal.report import Report

    state, config, policy = _inputs("staging")
    lab = SimpleNamespace(netns="none", networks={}, boxes={}, harness_docker_host="unix:///nonexistent")
    cells = rm.rehearse_matrix(lab, state, config, policy)
    assert len(cells) == 911 and {c["status"] for c in cells} == {"not proven"}
    assert {c["observed"] for c in cells} == {None}
    report = Report(stack="staging", reachability=cells)
    assert report.to_json()["reachability"]["counts"] == {"pass": 0, "fail": 0, "not proven": 911}
    assert "reachability matrix: 0 pass, 0 fail, 911 not proven" in report.text()


# --- ports a container listens on without publishing them --------------------------------------

UNPUBLISHED = {
    "kro-staging": {"kro-staging-frontend": {80}, "kro-staging-admin-frontend": {80},
                    "kro-staging-prometheus": {9090}, "kro-staging-alertmanager": {9093, 9094},
                    "kro-staging-blackbox": {9115}, "kro-staging-node-exporter": {9100},
                    "kro-staging-cadvisor": {8080}},
    "vedfinance-staging": {"vedfinance-staging-api-dev": {3000}, "vedfinance-staging-web-staging": {3000}},
    "pencom-staging-app": {"pencom-staging-app-core": {4000}, "pencom-staging-app-payments": {5000},
                           "pencom-staging-app-audit": {9000}},
    "pencom-staging-edge": {"pencom-staging-edge-api-gateway": {3000}, "pencom-staging-edge-external-gateway": {3010},
                            "pencom-staging-edge-api-gateway-mtls": {4000, 5000, 6000, 7000, 8000, 9000},
                            "pencom-staging-edge-prometheus": {9090}},
}
"""Some of what staging's containers listen on unpublished, by the capture's own words: the Node
services' ``PORT``, the health checks' ports, nginx's ``listen`` lines, the exporters' images."""


def _container_cells(host: str, container: str) -> dict[tuple[str, int], rm.Expectation]:
    state, config, policy = _inputs("staging")
    return {(e.position, e.target.port): e for e in rm.expected_matrix(state, config, policy)
            if e.target.host == host and e.target.side == "container" and e.target.service == container}


@pytest.mark.parametrize("host,container", [(h, c) for h, cs in UNPUBLISHED.items() for c in cs])
def test_an_unpublished_port_is_a_target_its_bridge_and_host_reach_and_nobody_else(host, container):
    cells = _container_cells(host, container)
    product = host.split("-", 1)[0]
    peers = [h for h in ("kro-staging", "giv-staging-ops", "vedfinance-staging",
                         *(f"pencom-staging-{n}" for n in ("edge", "app", "data", "storage")))
             if h.startswith(product + "-")]
    for port in UNPUBLISHED[host][container]:
        assert cells[("host:" + host, port)].allowed and cells[("containers:" + host, port)].allowed, (container, port)
        assert cells[("neighbour", port)].allowed is False
        for other in peers:
            if other != host:
                assert cells[(f"host:{other}", port)].allowed is False
                assert cells[(f"containers:{other}", port)].allowed is False
        # Not on the host's sides: nothing publishes it there.
        assert ("internet", port) not in cells and ("admin", port) not in cells


def test_a_loopback_listener_inside_a_container_is_no_target():
    # nginx's health endpoint: `listen 127.0.0.1:8081;` in every config the stack renders.
    matrix = _matrix()
    assert not [k for k in matrix if k[3] == 8081], [k for k in matrix if k[3] == 8081][:3]
    # MinIO's console: --console-address 127.0.0.1:9001.
    assert not [k for k in matrix if k[3] == 9001]


def test_without_the_derivation_the_unpublished_ports_are_gone():
    """``listeners.unpublished`` is what puts the cells there: without it the matrix is the 548
    cells of before and the cells the tests above read do not exist (so they can fail)."""
    from rehearsal.checks import tiermodel

    state, config, policy = _inputs("staging")
    original = tiermodel.unpublished
    try:
        tiermodel.unpublished = lambda inputs, files: []
        omitted = [(e.position, e.target.service, e.target.port) for e in rm.expected_matrix(state, config, policy)]
    finally:
        tiermodel.unpublished = original
    assert ("neighbour", "kro-staging-backend", 3000) not in omitted and len(omitted) == 548
    assert ("neighbour", "kro-staging-backend", 3000) in [(e.position, e.target.service, e.target.port)
                                                          for e in rm.expected_matrix(state, config, policy)]
    topo = rm.topology(state, config, policy)
    backend = next(t for t in rm.targets(topo) if t.service == "kro-staging-backend" and t.port == 3000)
    assert rm.expect(rm.Position("neighbour", "neighbour"), backend, topo).allowed is False
    assert rm.expect(rm.Position("host:kro-staging", "host", "kro-staging"), backend, topo).allowed is True


def test_a_container_on_a_network_of_its_own_answers_its_host_and_not_the_main_bridge():
    """KRO's backend is alone on its database network (``kro-staging-backend``): its own address is
    reached from its host and by the peers that join that network (nginx, Prometheus), not from the
    host's main bridge, where the ``containers:`` probe sits (``probes.probe_container``). The lab
    observed exactly that on 2 Dec 2026 (closed from ``containers:kro-staging``; 911 cells, 0 mismatches)."""
    from rehearsal.checks import tiermodel

    state, config, policy = _inputs("staging")
    topo = rm.topology(state, config, policy)
    assert topo.hosts["kro-staging"].apart == {"kro-staging-backend"}
    assert all(not h.apart for name, h in topo.hosts.items() if name != "kro-staging")
    cells = _container_cells("kro-staging", "kro-staging-backend")
    assert cells[("host:kro-staging", 3000)].allowed
    refused = cells[("containers:kro-staging", 3000)]
    assert not refused.allowed and "network of its own" in refused.reason
    # nginx joins both networks: it stays on the main bridge, so it is no "apart" container.
    assert tiermodel.main_network({"a": ["main", "own"], "b": ["main"], "c": ["own2"]}) == "main"
    assert tiermodel.main_network({}) is None
