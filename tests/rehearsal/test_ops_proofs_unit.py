"""The pure parts of the lab proofs of issue #22 (``test_mtls_lab.py``, ``test_session_logs_lab.py``,
``test_zero_downtime.py``'s KRO drill), without a lab."""

from __future__ import annotations

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.rehearsal.ops_proofs import (PRIVATE_KEY, client_certificate, curl_status_script, issuing_key, other_ca,
                                        parse_status, shipped, split_files)

pytestmark = pytest.mark.fast


def test_the_issuing_key_is_the_one_whose_public_half_the_ca_certificate_holds():
    ca_cert, ca_key = other_ca("the stack's CA")
    decoy_cert, decoy_key = other_ca("a decoy")
    outputs = {(PRIVATE_KEY, "decoy-key"): ("d1", {"privateKeyPem": decoy_key.decode()}),
               ("tls:index/selfSignedCert:SelfSignedCert", "x"): ("d2", {"certPem": ca_cert.decode()}),
               (PRIVATE_KEY, "ca-key"): ("d3", {"privateKeyPem": ca_key.decode()})}
    assert issuing_key(ca_cert, outputs) == ca_key
    with pytest.raises(LookupError):
        issuing_key(ca_cert, {(PRIVATE_KEY, "decoy-key"): ("d1", {"privateKeyPem": decoy_key.decode()})})


def test_a_client_certificate_is_a_client_auth_leaf_of_its_ca_named_for_its_caller():
    ca_cert, ca_key = other_ca()
    cert_pem, key_pem = client_certificate("core.pencom-staging.internal", ca_cert, ca_key)
    cert, ca = x509.load_pem_x509_certificate(cert_pem), x509.load_pem_x509_certificate(ca_cert)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "core.pencom-staging.internal"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert b"PRIVATE KEY" in key_pem
    foreign, _ = other_ca()
    with pytest.raises(Exception):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(foreign))
    assert isinstance(x509.load_pem_x509_certificate(ca_cert).public_key(), ec.EllipticCurvePublicKey)


def test_the_curl_line_takes_files_only_and_its_answer_parses():
    line = curl_status_script("https://mtls.x.internal:14000/health", resolve="mtls.x.internal:14000:10.42.0.3",
                              cacert="/root/p/ca.crt", cert="/root/p/a.crt", key="/root/p/a.key")
    assert "--cert /root/p/a.crt --key /root/p/a.key" in line and "--resolve mtls.x.internal:14000:10.42.0.3" in line
    assert "BEGIN" not in line
    assert "--cert" not in curl_status_script("http://10.0.0.1:4000/")
    assert parse_status("200 0\n") == ("200", 0) and parse_status("000 28") == ("000", 28)
    with pytest.raises(ValueError):
        parse_status("curl: (7) Failed to connect")


def test_the_collectors_files_are_searched_line_by_line_by_file():
    dump = ("==> /var/log/platform-sessions/10.42.0.3.log <==\nsshd[1]: Accepted publickey for ops ID alice\n"
            "audisp-syslog: a2=\"lab-marker-1\"\n\n==> /var/log/platform-sessions/10.42.0.4.log <==\nother\n")
    files = split_files(dump)
    assert sorted(files) == ["/var/log/platform-sessions/10.42.0.3.log", "/var/log/platform-sessions/10.42.0.4.log"]
    found = shipped(files, ["lab-marker-1", "ID alice", "absent"])
    assert found["lab-marker-1"] == ['/var/log/platform-sessions/10.42.0.3.log: audisp-syslog: a2="lab-marker-1"']
    assert len(found["ID alice"]) == 1 and found["absent"] == []


def test_the_session_never_names_its_marker_on_a_logged_command_line():
    from tests.rehearsal.test_session_logs_lab import session_input

    marker = "lab-marker-0123456789ab"
    emulated, real = session_input(marker, "10.42.0.2", True), session_input(marker, "10.42.0.2", False)
    typed, typed_real = "\n".join(emulated), "\n".join(real)
    assert "audisp-syslog" in typed and "emulated" in typed and "logger" not in typed_real
    sudo = [line for line in emulated if line.startswith("sudo")]
    assert sudo and not [line for line in sudo if marker in line], sudo  # sudo logs its command lines
    assert 'lab-""marker-0123456789ab' in typed  # the count still looks for the whole marker
    assert "ops@10.42.0.2" in typed
    # One command per prompt: a line holding a newline would be typed ahead of the prompt.
    assert all("\n" not in line for line in emulated), emulated


def test_kros_bump_changes_the_backend_image_only(tmp_path):
    from tests.rehearsal.test_zero_downtime import KRO_NEW, KRO_OLD, kro_stack_files

    files = kro_stack_files(tmp_path)
    base, bump = (yaml.safe_load(files[n].read_text()) for n in ("base", "bump"))
    images = lambda d: {s["name"]: s["image"] for s in d["config"]["platform:kro"]["services"]}  # noqa: E731
    assert images(base)["backend"] == KRO_OLD and images(bump)["backend"] == KRO_NEW
    bump["config"]["platform:kro"]["services"][0]["image"] = KRO_OLD
    assert bump == base
