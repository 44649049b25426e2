"""Mutual TLS between tiers (issue #22, part 1) proven on the converged staging lab
(``staging_rehearsal``, tests/rehearsal/conftest.py): the app node's own terminator
(``mtls-gateway``), its own certificates and the edge's own sidecars, as the converge left them.
``tests/test_mtls_real.py`` proves the rendered configs on a real nginx in namespaces; this
proves what the hosts run.

From the edge node (its host namespace: the source the app node's rules admit), with the
certificates read out of the converged containers into a root-only directory of the edge box
(removed afterwards), and ``curl --resolve`` naming the terminator as the sidecars do
(``mtls.pencom-staging.internal``) at the app node's lab address:

- the allowed caller's certificate (api-gateway's, from its sidecar) gets core's ``/health``
  through the terminator (200), and api-gateway's own container gets it through its sidecar;
- no certificate, a certificate from another CA in api-gateway's name, and the terminator's own
  server certificate (issued by the internal CA, ``server_auth`` only) are refused (400);
- a certificate the internal CA issued for a caller the tier model does not allow
  (``core.pencom-staging.internal``: app services call each other on their own host, never
  through the terminator) gets 403, as does Prometheus' (metrics only) on ``/health``;
- core's own port (4000) on the app node's address answers neither the edge nor the data node
  (while core answers on it inside the app node: the control), and plain HTTP to the TLS port
  gets 400.
"""

from __future__ import annotations

import pytest

from tests.rehearsal.ops_proofs import (client_certificate, curl_status_script, issuing_key, other_ca,
                                        parse_status)

pytestmark = pytest.mark.rehearsal

EDGE, APP, DATA = "pencom-staging-edge", "pencom-staging-app", "pencom-staging-data"
PRODUCT = "pencom-staging"
SERVER_NAME = f"mtls.{PRODUCT}.internal"
CORE_PORT, CORE_TLS_PORT = 4000, 14000
TLS_DIR = "/etc/nginx/mtls/tls"
WORK = "/root/mtls-lab-proof"


def sh(lab, box: str, script: str, *, data: bytes | None = None, ok: bool = True) -> str:
    proc = lab.exec(box, ["bash", "-c", script], input=data, timeout=120)
    if ok:
        assert proc.returncode == 0, f"{box}: {script[:200]!r} exited {proc.returncode}: {proc.stderr.decode()[-600:]}"
    return proc.stdout.decode(errors="replace")


def container(lab, box: str, service: str) -> str:
    cid = sh(lab, box, f"docker ps -q --filter label=platform.stack={box} "
                       f"--filter label=platform.service={service}").split()
    assert cid, f"{box}: no running {service} container"
    return cid[0]


def read_file(lab, box: str, service: str, path: str) -> bytes:
    """A file as the converged container holds it (read as root through docker exec)."""
    proc = lab.exec(box, ["docker", "exec", container(lab, box, service), "cat", path], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def put(lab, box: str, name: str, data: bytes) -> str:
    """``data`` into WORK/name on the box, 0600, through stdin (never an argument)."""
    path = f"{WORK}/{name}"
    sh(lab, box, f"umask 077; cat > {path}", data=data)
    return path


@pytest.fixture(scope="module")
def answers(staging_rehearsal):
    held = staging_rehearsal
    assert held.report.error is None, held.report.text()
    lab = held.lab
    app = lab.box_address(APP, "pencom-private")
    sh(lab, EDGE, f"rm -rf {WORK}; install -d -m 0700 {WORK}")
    results: dict[str, tuple[str, int]] = {}
    try:
        ca_pem = read_file(lab, EDGE, "api-gateway-mtls", f"{TLS_DIR}/ca.crt")
        files = {"ca": put(lab, EDGE, "ca.crt", ca_pem)}
        for caller in ("api-gateway", "prometheus"):
            for part in ("crt", "key"):
                files[f"{caller}.{part}"] = put(lab, EDGE, f"{caller}.{part}",
                                                read_file(lab, EDGE, f"{caller}-mtls", f"{TLS_DIR}/tls.{part}"))
        for part in ("crt", "key"):  # the terminator's own server certificate, offered as a client's
            files[f"server.{part}"] = put(lab, EDGE, f"server.{part}",
                                          read_file(lab, APP, "mtls-gateway", f"{TLS_DIR}/tls.{part}"))
        ca_key = issuing_key(ca_pem, held.memory.outputs)
        stranger = client_certificate(f"core.{PRODUCT}.internal", ca_pem, ca_key)
        foreign = client_certificate(f"api-gateway.{PRODUCT}.internal", *other_ca())
        for name, (cert, key) in (("stranger", stranger), ("foreign", foreign)):
            files[f"{name}.crt"], files[f"{name}.key"] = put(lab, EDGE, f"{name}.crt", cert), put(lab, EDGE, f"{name}.key", key)

        def tls(name: str, caller: str | None, path: str = "/health") -> None:
            script = curl_status_script(f"https://{SERVER_NAME}:{CORE_TLS_PORT}{path}",
                                        resolve=f"{SERVER_NAME}:{CORE_TLS_PORT}:{app}", cacert=files["ca"],
                                        cert=files.get(f"{caller}.crt"), key=files.get(f"{caller}.key"))
            results[name] = parse_status(sh(lab, EDGE, script))

        tls("allowed", "api-gateway")
        tls("no certificate", None)
        tls("another CA", "foreign")
        tls("server certificate as client", "server")
        tls("internal CA, caller not allowed", "stranger")
        tls("prometheus on /health", "prometheus")
        tls("prometheus on /metrics", "prometheus", "/metrics")
        for box in (EDGE, DATA):
            results[f"service port from {box}"] = parse_status(sh(lab, box, curl_status_script(
                f"http://{app}:{CORE_PORT}/health", timeout_s=5)))
        results["plain HTTP to the TLS port"] = parse_status(sh(lab, EDGE, curl_status_script(
            f"http://{app}:{CORE_TLS_PORT}/health")))
        sidecar = ("require('http').get('http://api-gateway-mtls:%d/health', r => { console.log(r.statusCode + ' 0'); "
                   "process.exit(0) }).on('error', e => { console.log('000 1'); process.exit(0) })" % CORE_PORT)
        results["through the sidecar"] = parse_status(sh(lab, EDGE, f"docker exec {container(lab, EDGE, 'api-gateway')} "
                                                                    f"node -e \"{sidecar}\""))
        inside = ("require('http').get('http://127.0.0.1:%d/health', r => { console.log(r.statusCode + ' 0'); "
                  "process.exit(0) }).on('error', e => { console.log('000 1'); process.exit(0) })" % CORE_PORT)
        results["core inside the app node"] = parse_status(sh(lab, APP, f"docker exec {container(lab, APP, 'core')} "
                                                                       f"node -e \"{inside}\""))
    finally:
        sh(lab, EDGE, f"rm -rf {WORK}", ok=False)
    print(results)
    return results


def test_the_allowed_caller_reaches_the_callee_through_the_terminator(answers):
    assert answers["allowed"] == ("200", 0), answers
    assert answers["through the sidecar"] == ("200", 0), answers


@pytest.mark.parametrize("case", ["no certificate", "another CA", "server certificate as client"])
def test_a_client_the_internal_ca_did_not_issue_as_a_client_is_refused(answers, case):
    assert answers[case] == ("400", 0), answers


def test_a_caller_the_tier_model_does_not_allow_is_refused_although_the_internal_ca_issued_it(answers):
    assert answers["internal CA, caller not allowed"] == ("403", 0), answers
    assert answers["prometheus on /health"] == ("403", 0), answers
    # Prometheus is metrics-only: /metrics is forwarded (the stand-in answers what it answers).
    assert answers["prometheus on /metrics"][0] not in ("000", "400", "403"), answers


def test_the_service_port_is_not_reachable_around_the_terminator(answers):
    assert answers["core inside the app node"] == ("200", 0), "control: core listens on its port"
    for box in (EDGE, DATA):
        code, rc = answers[f"service port from {box}"]
        assert code == "000" and rc in (7, 28), (box, answers)
    assert answers["plain HTTP to the TLS port"] == ("400", 0), answers
