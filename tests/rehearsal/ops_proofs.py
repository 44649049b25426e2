"""Pure helpers of the lab proofs of issue #22's operations (``test_mtls_lab.py``,
``test_session_logs_lab.py``): certificates made in the harness, the curl probe a box runs,
and reading what a box answered. Unit-tested in ``test_ops_proofs_unit.py`` without a lab."""

from __future__ import annotations

import datetime
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional

import yaml

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PRIVATE_KEY = "tls:index/privateKey:PrivateKey"


def issuing_key(ca_pem: bytes, outputs: Mapping[tuple[str, str], tuple[str, dict]]) -> bytes:
    """The PEM private key, among the capture's ``tls:*`` answers (``CaptureMemory.outputs``:
    (type, name) -> (digest, outputs)), whose public key is the CA certificate's ``ca_pem``: the
    internal CA's key as Pulumi's state holds it (never on a host). Raises ``LookupError``
    when none matches."""
    wanted = x509.load_pem_x509_certificate(ca_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for (typ, _name), (_digest, answer) in outputs.items():
        pem = answer.get("privateKeyPem") if typ == PRIVATE_KEY else None
        if not pem:
            continue
        key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
        if key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) == wanted:
            return pem.encode() if isinstance(pem, str) else pem
    raise LookupError("no private key of the capture belongs to that CA certificate")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "platform")])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def client_certificate(cn: str, ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a client certificate for ``cn`` (its CN and one DNS name,
    extended key usage ``client_auth``, valid one hour from five minutes back), signed by the CA,
    shaped like the ``InternalCa``'s client leaves."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def other_ca(cn: str = "another CA") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a fresh self-signed CA: not the stack's."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def curl_status_script(url: str, *, resolve: Optional[str] = None, cacert: Optional[str] = None,
                       cert: Optional[str] = None, key: Optional[str] = None, timeout_s: int = 10) -> str:
    """A bash line that prints ``<http code> <curl exit>`` for one request (``000 7``: no
    connection; ``000 28``: timed out). Certificate and key are files (paths): no secret on a
    command line. ``resolve`` is curl's ``HOST:PORT:ADDRESS``."""
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout_s)]
    for flag, value in (("--resolve", resolve), ("--cacert", cacert), ("--cert", cert), ("--key", key)):
        if value:
            argv += [flag, value]
    argv.append(url)
    return f"code=$({shlex.join(argv)} 2>/dev/null) && rc=0 || rc=$?; echo \"${{code:-000}} $rc\""


def parse_status(stdout: str) -> tuple[str, int]:
    """``curl_status_script``'s output -> (HTTP status, curl's exit status). Raises
    ``ValueError`` on anything else."""
    match = re.fullmatch(r"\s*(\d{3}) (\d+)\s*", stdout)
    if not match:
        raise ValueError(f"not a curl status line: {stdout!r}")
    return match.group(1), int(match.group(2))


def shipped(files: Mapping[str, str], needles: Iterable[str]) -> dict[str, list[str]]:
    """For each needle, the ``file: line`` entries of the collector's files (path -> text) that
    hold it: where the monitoring host filed what a host shipped."""
    return {needle: [f"{path}: {line}" for path, text in sorted(files.items())
                     for line in text.splitlines() if needle in line] for needle in needles}


def split_files(dump: str, marker: str = "==> ") -> dict[str, str]:
    """``tail -v -n +1 FILE...`` output (``==> path <==`` headers, also for one file) -> path -> text."""
    files: dict[str, list[str]] = {}
    current = None
    for line in dump.splitlines():
        header = re.fullmatch(rf"{re.escape(marker)}(.+) <==", line)
        if header:
            current = header.group(1)
            files[current] = []
        elif current is not None:
            files[current].append(line)
    return {path: "\n".join(lines) for path, lines in files.items()}


def write_stack_docs(tmp: Path, docs: Mapping[str, dict], prefix: str = "") -> dict[str, Path]:
    """Each stack document of a drill (name -> parsed stack file) as
    ``tmp/Pulumi.staging-<prefix><name>.yaml``; returns name -> path."""
    paths = {}
    for name, doc in docs.items():
        paths[name] = tmp / f"Pulumi.staging-{prefix}{name}.yaml"
        paths[name].write_text(yaml.safe_dump(doc, sort_keys=False))
    return paths


ROOT = Path(__file__).resolve().parents[2]


def engineer_certificate(held, work: Path, identity: str, principal: str = "oncall") -> tuple[Path, Path]:
    """A fresh ed25519 key in ``work`` signed for ``principal`` (one hour) by
    ``scripts/ssh_cert.py`` with the lab's SSH CA key (``platform:ssh_ca_private_key`` as the
    rehearsal filled it, on stdin), as an engineer gets one. Returns (key, certificate)."""
    key = work / "engineer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    signed = subprocess.run([sys.executable, str(ROOT / "scripts" / "ssh_cert.py"), "staging", "--principal", principal,
                             "--identity", identity, "--hours", "1", f"{key}.pub"],
                            input=held.memory.secrets["platform:ssh_ca_private_key"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert signed.returncode == 0, signed.stderr
    return key, Path(f"{key}-cert.pub")
