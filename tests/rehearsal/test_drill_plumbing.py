"""What the on-box drills (tests/rehearsal/test_drills.py) stand on, without a lab: a second
capture answers as the first did (Pulumi's state), except for a certificate re-issued on
purpose; the Slack webhook secret is a URL the lab's receiver answers; the Alertmanager
stand-in trusts the lab's CA; a capture cut to some hosts keeps their steps only."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rehearsal.capture import Host, StackCapture, Step
from rehearsal.capture_answers import TLS_ANSWERS, CaptureMemory, rehearsal_config
from rehearsal.image_contracts import ImageContract
from rehearsal.standin_plan import plan_standins
from rehearsal.rehearse import only_hosts

pytestmark = pytest.mark.fast

KEY = "tls:index/privateKey:PrivateKey"
CA = "tls:index/selfSignedCert:SelfSignedCert"
CSR = "tls:index/certRequest:CertRequest"
LEAF = "tls:index/locallySignedCert:LocallySignedCert"


def _issue(memory: CaptureMemory, reissue=()) -> dict:
    """The InternalCa chain (components/internal_ca.py) through the remembering answers."""
    answer = {t: memory.remembered(t, a, reissue) for t, a in TLS_ANSWERS.items()}
    ca_key = answer[KEY]("ca-key", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    ca = answer[CA]("ca-cert", {"privateKeyPem": ca_key, "isCaCertificate": True,
                                "subject": {"commonName": "drill CA"}})["certPem"]
    key = answer[KEY]("ca-postgres-key", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    csr = answer[CSR]("ca-postgres-csr", {"privateKeyPem": key, "dnsNames": ["postgres"],
                                          "subject": {"commonName": "postgres"}})["certRequestPem"]
    leaf = answer[LEAF]("ca-postgres-cert", {"certRequestPem": csr, "caPrivateKeyPem": ca_key,
                                             "caCertPem": ca, "validityPeriodHours": 8760})["certPem"]
    return {"ca": ca, "key": key, "leaf": leaf}


def _serial(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_a_second_capture_answers_every_certificate_and_key_as_the_first():
    memory = CaptureMemory()
    first, second = _issue(memory), _issue(memory)
    assert first == second
    # Without the memory every answer is new: what a drill must not see.
    assert _issue(CaptureMemory())["leaf"] != first["leaf"]


def test_a_reissued_certificate_gets_a_new_serial_with_the_same_key_and_ca():
    memory = CaptureMemory()
    first = _issue(memory)
    again = _issue(memory, reissue=["ca-postgres-cert"])
    assert again["ca"] == first["ca"] and again["key"] == first["key"]
    assert _serial(again["leaf"]) != _serial(first["leaf"])
    leaf = x509.load_pem_x509_certificate(again["leaf"].encode())
    ca = x509.load_pem_x509_certificate(again["ca"].encode())
    leaf.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(again["key"].encode(), password=None)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    # Later captures keep the re-issued one.
    assert _issue(memory)["leaf"] == again["leaf"]


def test_changed_inputs_get_new_outputs():
    memory = CaptureMemory()
    answer = memory.remembered(KEY, TLS_ANSWERS[KEY])
    p256 = answer("k", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    assert answer("k", {"algorithm": "ECDSA", "ecdsaCurve": "P384"}) != p256


def test_secrets_and_keys_are_kept_across_captures_and_slack_gets_a_webhook_url(tmp_path):
    import yaml

    from synth.run import stack_file_path

    doc = yaml.safe_load(stack_file_path("staging").read_text())
    doc["config"]["platform:environment"]["alerts"]["slack_channel"] = "#alerts"
    path = tmp_path / "Pulumi.staging.yaml"
    path.write_text(yaml.safe_dump(doc))
    memory = CaptureMemory()
    first, keys = rehearsal_config("staging", path, memory)
    second, keys_again = rehearsal_config("staging", path, memory)
    assert keys == keys_again and first.config == second.config
    url = first.config["platform:alerts_slack_webhook_url"]
    assert url.startswith("https://hooks.slack.com/services/")
    assert rehearsal_config("staging", path)[0].config["platform:alerts_slack_webhook_url"] != url


def test_the_alertmanager_stand_in_trusts_the_lab_ca_and_no_other_kind_changes():
    pem = b"-----BEGIN CERTIFICATE-----\nMIIBdrill\n-----END CERTIFICATE-----\n"
    contracts = [ImageContract(reference=r) for r in ("prom/alertmanager:v0.27.0", "prom/prometheus:v2.55.0")]
    plain = {s.reference: s for s in plan_standins(contracts)}
    trusting = {s.reference: s for s in plan_standins(contracts, trust_pem=pem)}
    am = trusting["prom/alertmanager:v0.27.0"].dockerfile
    assert "'MIIBdrill'" in am and ">> /etc/ssl/certs/ca-certificates.crt" in am
    # It returns to the image's user (nobody), so the container runs as before.
    assert am.index("USER 0") < am.index("ca-certificates.crt") < am.index("USER 65534")
    assert trusting["prom/alertmanager:v0.27.0"].recipe != plain["prom/alertmanager:v0.27.0"].recipe
    assert trusting["prom/prometheus:v2.55.0"] == plain["prom/prometheus:v2.55.0"]


def test_only_hosts_keeps_those_hosts_and_their_steps():
    hosts = {n: Host(name=n, product="p", kind="onprem", address=a, user="deploy")
             for n, a in (("edge", "192.0.2.1"), ("app", "192.0.2.2"))}
    steps = [Step(urn="u1", name="s1", kind="command", host="edge", inputs={}),
             Step(urn="u2", name="s2", kind="command", host="app", inputs={}, depends=["u1"])]
    cap = StackCapture(stack="s", hosts=hosts, steps=steps, products=["p"])
    cut = only_hosts(cap, ["edge"])
    assert list(cut.hosts) == ["edge"] and [s.name for s in cut.steps] == ["s1"]
    assert only_hosts(cap, None) is cap
    with pytest.raises(ValueError, match="nowhere"):
        only_hosts(cap, ["nowhere"])


def test_a_drill_converges_onto_its_own_hosts_only_and_never_outside_the_lab(monkeypatch):
    from rehearsal import rehearse as rehearse_mod
    from rehearsal.rehearse import Drill, Rehearsal

    hosts = {n: Host(name=n, product="p", kind="onprem", address=a, user="deploy")
             for n, a in (("edge", "192.0.2.1"), ("app", "192.0.2.2"))}
    steps = [Step(urn="u1", name="s1", kind="command", host="edge", inputs={}),
             Step(urn="u2", name="s2", kind="command", host="app", inputs={}, depends=["u1"])]
    cap = StackCapture(stack="s", hosts=hosts, steps=steps, products=["p"])
    asked = []
    monkeypatch.setattr(rehearse_mod, "capture", lambda stack, **kw: asked.append(kw) or cap)
    monkeypatch.setattr(rehearse_mod.overlay_mod, "apply", lambda c, plan: c)
    held = Rehearsal("s")
    held.lab_capture = cap
    observe = lambda ctx: {}  # noqa: E731
    cut = held._recapture(Drill("one-host", observe, reissue=["cert"], hosts=["edge"]))
    assert list(cut.hosts) == ["edge"] and [s.name for s in cut.steps] == ["s1"]
    assert asked[-1]["reissue"] == ["cert"]
    assert list(held._recapture(Drill("all", observe, reissue=["cert"])).hosts) == ["edge", "app"]
    with pytest.raises(ValueError, match=r"drill elsewhere: hosts \['db'\] have no box in this lab"):
        held._recapture(Drill("elsewhere", observe, hosts=["edge", "db"]))
