"""The tier model and the TLS invariants proven live (issue #16), read from the shared staging
lab (``staging_rehearsal``, tests/rehearsal/conftest.py), whose entry probes every host after
the checks (``rehearsal.rehearse.live_probes``). Two hosts carry each point:

- **V-EdFinance** (one on-prem VPS, Postgres and Redis published on loopback only): every cell
  towards it is tried (internet, admin, a neighbour routing the container subnet, the host, a
  container of its bridge, the web as egress target); SSH, TLS through pebble with a forced
  renewal, and verify-full Postgres from the app containers.
- **KRO** (one droplet behind its DigitalOcean Firewall, which the lab renders into the box from
  the capture): the firewall's verdicts, a fail2ban ban (taken before the firewall stands: with
  it, no source outside ``ignoreip`` reaches sshd), and the WebSocket upgrade on its ``api`` route
  (the app stand-in echoes).
- **Pencom**: ``rediss://`` from the app node's Redis clients to the data node's TLS-only Redis,
  and the external gateway's ``COMPLIANCE_DATABASE_URL`` (the read waiver) with verify-full.
- **Managed databases** (stand-ins at the lab's service address, rehearsal/services/managed.py):
  KRO's backend to its managed Postgres, GIV's App Platform backend (probed from the lab's
  namespace, reported under GIV's ops droplet) to its managed Postgres and Valkey.

Every public hostname of every product gets the TLS probes (rehearsal/checks/tlsprobes.py);
test_rehearse_staging's strict check counts them with every other check.
"""

from __future__ import annotations

import json

import pytest

from rehearsal.report import FAIL, NOT_PROVEN, PASS

pytestmark = pytest.mark.rehearsal

VPS = "vedfinance-staging"
KRO = "kro-staging"


def _staging(held):
    assert held.report.error is None, held.report.text()
    return held.report


@pytest.fixture(scope="module")
def vedfinance(staging_rehearsal):
    """The shared lab's report, read for V-EdFinance's VPS."""
    return _staging(staging_rehearsal)


@pytest.fixture(scope="module")
def kro(staging_rehearsal):
    """The shared lab's report, read for KRO's droplet."""
    return _staging(staging_rehearsal)


def _checks(report, host, prefix):
    return {c.name: (c.status, c.detail) for c in report.hosts[host].checks if c.name.startswith(prefix)}


def _cells(report, host, status=None):
    """The matrix cells whose target is ``host`` (its sides, its containers, its egress)."""
    return [c for c in report.reachability if c["host"] == host and (status is None or c["status"] == status)]


def test_every_cell_of_the_single_host_matrix_is_tried(vedfinance):
    cells = _cells(vedfinance, VPS)
    assert {c["position"] for c in cells} == {"internet", "admin", "neighbour", "host:vedfinance-staging",
                                              "containers:vedfinance-staging"}
    assert _cells(vedfinance, VPS, NOT_PROVEN) == []
    # The loopback-published datastores are no target from outside, and their containers' own
    # addresses answer nobody but the bridge and the host (the attack of the issue).
    from_neighbour = {(c["side"], c["port"]): c["observed"] for c in cells if c["position"] == "neighbour"}
    assert from_neighbour[("public", 443)] == "open" and from_neighbour[("public", 22)] == "closed"
    assert [c for c in cells if c["position"] == "neighbour" and c["side"] == "container" and c["observed"] != "closed"] == []


def test_ports_the_containers_listen_on_unpublished_answer_their_bridge_and_host_only(vedfinance, kro):
    """The app services' ``PORT`` and the exporters' ports (rehearsal/checks/listeners.py): tried
    at each container's own address, open from its host and its bridge, closed from the
    neighbour that routes the container subnet (the bridge guard's DOCKER-USER rules)."""
    for report, host, wanted in ((vedfinance, VPS, {("vedfinance-staging-api-dev", 3000), ("vedfinance-staging-prometheus", 9090)}),
                                 (kro, KRO, {("kro-staging-frontend", 80), ("kro-staging-node-exporter", 9100)})):
        cells = [c for c in _cells(report, host) if c["side"] == "container" and (c["service"], c["port"]) in wanted]
        assert {(c["service"], c["port"]) for c in cells} == wanted
        seen = {(c["position"], c["service"], c["port"]): c["observed"] for c in cells}
        for service, port in wanted:
            assert seen[("neighbour", service, port)] == "closed"
            assert seen[(f"host:{host}", service, port)] == "open"
            assert seen[(f"containers:{host}", service, port)] == "open"
        assert {c["status"] for c in cells} == {PASS}, json.dumps(cells, indent=1)
    # KRO's backend is alone on its database network: its host reaches it, the main bridge does not.
    backend = {c["position"]: c for c in _cells(kro, KRO) if c["side"] == "container"
               and (c["service"], c["port"]) == ("kro-staging-backend", 3000)}
    assert backend[f"host:{KRO}"]["observed"] == "open"
    assert backend[f"containers:{KRO}"]["observed"] == "closed"
    assert backend["neighbour"]["observed"] == "closed"
    assert {c["status"] for c in backend.values()} == {PASS}, json.dumps(backend, indent=1)


def test_the_single_host_matrix_fails_only_on_container_egress(vedfinance):
    failed = [(c["position"], c["side"], c["port"]) for c in _cells(vedfinance, VPS, FAIL)]
    assert set(failed) <= {("containers:vedfinance-staging", "internet", 443)}, json.dumps(_cells(vedfinance, VPS, FAIL), indent=1)


def test_app_and_data_containers_reach_only_their_allow_lists(vedfinance):
    assert _cells(vedfinance, VPS, FAIL) == []


def test_ssh_answers_the_deploy_key_from_the_admin_address_only(vedfinance):
    checks = _checks(vedfinance, "vedfinance-staging", "live ssh")
    assert len(checks) == 4 and {s for s, _ in checks.values()} == {PASS}, checks


def test_tls_through_pebble_with_a_forced_renewal(vedfinance):
    checks = _checks(vedfinance, "vedfinance-staging", "live tls")
    assert checks and all(s == PASS for s, _ in checks.values()), json.dumps(checks, indent=1)
    assert any("renewed certificate" in n for n in checks) and any("HSTS" in n for n in checks)


def test_tls_versions_and_suites_are_mozilla_intermediate_on_every_public_hostname(vedfinance):
    suffixes = {"TLS 1 refused", "TLS 1.1 refused", "TLS 1.2 works", "TLS 1.3 works",
                "TLS 1.2 CBC with SHA-1 (ECDHE) refused", "TLS 1.2 CBC with SHA-2 (ECDHE, DHE) refused",
                "TLS 1.2 RSA key exchange refused", "TLS 1.2 3DES refused",
                "TLS 1.2 accepts only Mozilla intermediate suites", "TLS 1.3 accepts only Mozilla intermediate suites",
                "an unknown name is refused at the handshake"}
    for host in vedfinance.hosts.values():
        checks = _checks(vedfinance, host.name, "live tls")
        for domain in {n.split(": ", 1)[0].removeprefix("live tls ") for n in checks}:
            got = {n.split(": ", 1)[1]: s for n, (s, _) in checks.items() if n.startswith(f"live tls {domain}: ")}
            assert suffixes <= set(got) and {got[x] for x in suffixes} == {PASS}, json.dumps(got, indent=1)


def test_the_websocket_upgrade_on_kro_api_completes_against_the_echoing_stand_in(kro):
    [(status, detail)] = _checks(kro, KRO, "live tls api.stage.krotrust.com: the WebSocket upgrade").values()
    assert status == PASS, detail


def test_redis_tls_from_pencom_clients_with_the_internal_ca_only(vedfinance):
    checks = {n: s for host in vedfinance.hosts for n, (s, _) in _checks(vedfinance, host, "live redis").items()}
    assert checks and set(checks.values()) == {PASS}, checks
    assert {n.split(": ", 1)[1] for n in checks} == {"TLS with the stack's CA connects", "TLS against another CA fails",
                                                     "plaintext is refused"}


def test_postgres_verify_full_from_the_app_containers(vedfinance):
    checks = _checks(vedfinance, "vedfinance-staging", "live postgres")
    connects = {n: s for n, (s, _) in checks.items() if "with the stack's CA connects" in n}
    other_ca = {n: s for n, (s, _) in checks.items() if "another CA" in n}
    assert connects and set(connects.values()) == {PASS}, checks
    assert other_ca and set(other_ca.values()) == {PASS}, checks


def test_postgres_refuses_plaintext(vedfinance):
    checks = _checks(vedfinance, "vedfinance-staging", "live postgres")
    plain = {n: s for n, (s, _) in checks.items() if "plaintext" in n}
    assert plain and set(plain.values()) == {PASS}, checks


def test_fail2ban_is_not_provable_where_only_ignored_sources_reach_sshd(vedfinance):
    [(status, detail)] = _checks(vedfinance, "vedfinance-staging", "live fail2ban").values()
    assert status == NOT_PROVEN and "ignoreip" in detail


def test_the_droplet_sits_behind_its_cloud_firewall(kro):
    cells = {(c["position"], c["side"], c["port"]): c for c in _cells(kro, KRO)}
    assert cells[("internet", "public", 22)]["observed"] == "closed"
    assert cells[("internet", "public", 443)]["observed"] == "open"
    assert cells[("admin", "public", 22)]["observed"] == "open"
    assert _cells(kro, KRO, NOT_PROVEN) == []


def test_fail2ban_bans_a_source_and_the_ban_refuses_it(kro):
    [(status, detail)] = _checks(kro, "kro-staging", "live fail2ban").values()
    assert status == PASS, detail


def test_managed_databases_answer_tls_with_their_ca_only(kro):
    """The managed stand-ins speak TLS as DigitalOcean's clusters do: verify-full (``rediss://``
    for Valkey) with the CA the stack hands connects, another CA fails, plaintext is refused."""
    expected = {("kro-staging", "live postgres from backend DATABASE_URL (private-kro-staging-db-cluster"): 3,
                ("giv-staging-ops", "live postgres from app krogiving-backend DATABASE_URL (private-giv-staging-pg"): 3,
                ("giv-staging-ops", "live redis from app krogiving-backend REDIS_URL (private-giv-staging-cache"): 3}
    for (host, prefix), count in expected.items():
        checks = _checks(kro, host, prefix)
        assert len(checks) == count and {s for s, _ in checks.values()} == {PASS}, json.dumps(checks, indent=1)


def test_the_external_gateway_reads_the_compliance_database_with_verify_full_only(kro):
    checks = _checks(kro, "pencom-staging-edge", "live postgres from external-gateway COMPLIANCE_DATABASE_URL")
    assert len(checks) == 3 and {s for s, _ in checks.values()} == {PASS}, json.dumps(checks, indent=1)
