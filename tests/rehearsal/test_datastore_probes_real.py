"""The managed databases' stand-ins (``rehearsal.services.managed``) and the data-tier TLS probes
(``rehearsal.checks.datastores``) for real: the stand-ins planned from staging's rehearsal capture
(its ``getDatabaseCa`` answering a test CA) run in a network namespace of their own at the lab's
service address, as in the lab; the probes run from that namespace with the URLs and CAs the
program hands KRO's backend container and GIV's App Platform backend, and pass; and each probe is
shown to fail against a server that breaks what it checks (plaintext admitted, another CA, another
name, a wrong password). Marker ``realtool``: PostgreSQL, redis-server, psql, redis-cli, nc."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from rehearsal.checks import datastores
from rehearsal.checks.probes import BoxContainer
from rehearsal.lab_ca import TestCA
from rehearsal.netns import SERVICE_ADDRESS, Namespace
from rehearsal.report import FAIL, NOT_PROVEN, PASS
from rehearsal.services.managed import PG_PORT, REDIS_PORT, ManagedStandIns, managed_databases
from tests.conftest import require_root, require_tool
from tests.realtools import self_signed

pytestmark = pytest.mark.realtool

THREE = ["connects", "another CA", "plaintext"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The staging capture, the CA, a namespace and the running stand-ins."""
    require_root("a network namespace, PostgreSQL as its own user")
    for name, package in (("redis-server", "redis-server"), ("redis-cli", "redis-tools"),
                          ("psql", "postgresql-client"), ("nc", "netcat-openbsd"), ("setpriv", "util-linux")):
        require_tool(name, f"Debian package {package}")
    from rehearsal.capture import capture

    workdir = tmp_path_factory.mktemp("managed")
    ca = TestCA(workdir / "ca")
    # Another CA by name too: one that shares the lab CA's name makes OpenSSL try its key on the
    # server's signature ("EVP lib"), not refuse the chain; the lab's other CA is pebble's.
    (workdir / "other").mkdir()
    other = SimpleNamespace(cert_pem=self_signed(workdir / "other", ["another-ca.example"])[0].read_bytes())
    cap = capture("staging", database_ca_pem=ca.cert_pem.decode())
    ns = Namespace()
    ns.create()
    try:
        with ManagedStandIns(managed_databases(cap.state), ca=ca, address=SERVICE_ADDRESS,
                             prefix=ns.argv([])) as stand_ins:
            yield SimpleNamespace(cap=cap, ca=ca, other=other, ns=ns, stand_ins=stand_ins, workdir=workdir)
    finally:
        ns.delete()


def _statuses(checks) -> dict[str, str]:
    return {next(k for k in THREE if k in c.name): c.status for c in checks}


def _kro_backend(lab, tmp_path):
    """KRO's backend as the lab finds it: its DATABASE_URL, the CA file it mounts (what
    getDatabaseCa answered), the box's /etc/hosts answer for the cluster's name."""
    step = next(s for s in lab.cap.steps if s.kind == "container" and s.name == "kro-staging-backend")
    env = dict(e.split("=", 1) for e in step.inputs["envs"])
    root = env["DATABASE_URL"].split("sslrootcert=", 1)[1].split("&")[0]
    mounted = tmp_path / "certs"
    mounted.mkdir()
    (mounted / root.rsplit("/", 1)[1]).write_bytes(lab.ca.cert_pem)
    client = BoxContainer("kro-staging-backend-1", "backend", "app", 1, {"n": ("172.31.251.12", 24)},
                          env={"DATABASE_URL": env["DATABASE_URL"]}, mounts={root.rsplit("/", 1)[0]: str(mounted)})

    def run(host, argv, timeout):
        if argv[0] == "getent":
            return subprocess.CompletedProcess(argv, 0, f"{SERVICE_ADDRESS} STREAM {argv[-1]}\n".encode(), b"")
        return subprocess.run(argv, capture_output=True, timeout=timeout)

    probes = SimpleNamespace(containers={"kro-staging": [client]}, container_site=lambda host, c: tuple(lab.ns.argv([])))
    return SimpleNamespace(exec=run), probes


def test_the_stand_ins_are_planned_from_the_capture_and_mongo_has_none(lab):
    engines = {d.cluster: d.engine for d in managed_databases(lab.cap.state)}
    assert engines == {"kro-staging-db-cluster": "pg", "giv-staging-pg-cluster": "pg",
                       "giv-staging-cache-cluster": "valkey", "giv-staging-mongo-cluster": "mongodb"}
    assert lab.stand_ins.engines == {"postgres", "redis"}


def test_kro_backend_verify_full_against_the_managed_postgres_stand_in(lab, tmp_path):
    box, probes = _kro_backend(lab, tmp_path)
    handed = datastores.container_urls(box, probes, "kro-staging")
    assert [(h.key, h.kind, h.address) for h in handed] == [("DATABASE_URL", "postgres", SERVICE_ADDRESS)]
    checks = datastores.handed_checks(handed, lab.other.cert_pem)
    assert {c.status for c in checks} == {PASS}, [(c.name, c.detail) for c in checks]
    assert checks[0].name.startswith("live postgres from backend DATABASE_URL (private-kro-staging-db-cluster")


def test_giv_app_platform_postgres_and_valkey_against_the_stand_ins(lab):
    handed = datastores.app_platform_urls(lab.cap.state, tuple(lab.ns.argv([])),
                                          lambda name: SERVICE_ADDRESS if name in lab.cap.database_hosts else None,
                                          lab.ca.cert_pem, product="giv")
    assert [(h.client, h.key, h.kind) for h in handed] == [("app krogiving-backend", "DATABASE_URL", "postgres"),
                                                           ("app krogiving-backend", "REDIS_URL", "redis")]
    checks = datastores.handed_checks(handed, lab.other.cert_pem)
    assert [c.status for c in checks] == [PASS] * 6, [(c.name, c.detail) for c in checks]


def _kro_url(lab):
    step = next(s for s in lab.cap.steps if s.kind == "container" and s.name == "kro-staging-backend")
    from urllib.parse import urlsplit

    return urlsplit(dict(e.split("=", 1) for e in step.inputs["envs"])["DATABASE_URL"])


def _pg(lab, tmp_path, *, own=None, other=None, name=None, password=None):
    url = _kro_url(lab)
    with datastores.ca_files(own or lab.ca.cert_pem, other or lab.other.cert_pem) as (own_file, other_file):
        return _statuses(datastores.postgres_tls_checks(
            tuple(lab.ns.argv([])), "live postgres", SERVICE_ADDRESS, PG_PORT, name or url.hostname, "kro",
            url.username, password or url.password, own_file, other_file))


def test_the_postgres_probe_fails_on_another_ca_another_name_or_a_wrong_password(lab, tmp_path):
    assert _pg(lab, tmp_path) == {"connects": PASS, "another CA": PASS, "plaintext": PASS}
    # The client's CA did not sign the server: nothing connects, and nothing else is provable.
    assert _pg(lab, tmp_path, own=lab.other.cert_pem, other=lab.ca.cert_pem) == {
        "connects": FAIL, "another CA": NOT_PROVEN, "plaintext": NOT_PROVEN}
    # verify-full matches the name: a certificate that does not carry it fails.
    assert _pg(lab, tmp_path, name="db.elsewhere.example")["connects"] == FAIL
    assert _pg(lab, tmp_path, password="not-the-password")["connects"] == FAIL


def test_the_plaintext_probe_fails_where_the_stand_in_admits_plaintext(lab, tmp_path):
    hba = lab.stand_ins.workdir / "pgdata" / "pg_hba.conf"
    kept = hba.read_text()
    reload = [*lab.ns.argv([]), "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "psql", "-X",
              "-h", str(lab.stand_ins.workdir), "-p", str(PG_PORT), "-U", "postgres", "-d", "postgres", "-Atc",
              "select pg_reload_conf()"]
    try:
        hba.write_text(kept + "host all all 0.0.0.0/0 scram-sha-256\n")
        assert subprocess.run(reload, capture_output=True, timeout=60).returncode == 0
        assert _pg(lab, tmp_path) == {"connects": PASS, "another CA": PASS, "plaintext": FAIL}
    finally:
        hba.write_text(kept)
        subprocess.run(reload, capture_output=True, timeout=60)
    assert _pg(lab, tmp_path)["plaintext"] == PASS


def test_the_valkey_stand_in_is_tls_only_with_the_clusters_password(lab):
    db = next(d for d in managed_databases(lab.cap.state) if d.engine == "valkey")
    with datastores.ca_files(lab.ca.cert_pem, lab.other.cert_pem) as (own, other):
        site = tuple(lab.ns.argv([]))
        good = datastores.redis_tls_checks(site, "live redis", SERVICE_ADDRESS, REDIS_PORT, db.names[1], "default",
                                           db.users[0][1], own, other)
        wrong = datastores.redis_tls_checks(site, "live redis", SERVICE_ADDRESS, REDIS_PORT, db.names[1], "default",
                                            db.users[0][1], other, own)
        denied = datastores.redis_tls_checks(site, "live redis", SERVICE_ADDRESS, REDIS_PORT, db.names[1], "default",
                                             "not-the-password", own, other)
    assert _statuses(good) == {"connects": PASS, "another CA": PASS, "plaintext": PASS}
    assert _statuses(wrong)["connects"] == FAIL and _statuses(denied)["connects"] == FAIL
    assert all("not-the-password" not in c.detail and db.users[0][1] not in c.detail for c in good + denied)


def test_the_stand_ins_stop_and_leave_nothing(tmp_path):
    require_root("a network namespace, PostgreSQL as its own user")
    from rehearsal.services.managed import ManagedDatabase

    ns = Namespace()
    ns.create()
    try:
        stand_ins = ManagedStandIns([ManagedDatabase("c", "pg", ("db.example",), PG_PORT, (("doadmin", "pw"),), ("d",))],
                                    ca=TestCA(tmp_path / "ca"), address=SERVICE_ADDRESS, prefix=ns.argv([]))
        with stand_ins:
            workdir = stand_ins.workdir
            assert stand_ins.engines == {"postgres"} and workdir.exists()
        assert not workdir.exists() and ns.pids() == []
    finally:
        ns.delete()
