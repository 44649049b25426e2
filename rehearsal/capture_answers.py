"""What a rehearsal capture answers where a host must be able to use the value for real: SSH key
pairs, ``tls:*`` resources with real keys and certificates (an internal CA whose leaf a real
server must load), every missing secret of the stack (``rehearsal_config``), and the memory
that keeps them across captures of one stack (``CaptureMemory``). ``rehearsal.capture``
hands them to the mock engine (``rehearsal_mocks``).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def ssh_keypair() -> tuple[str, str]:
    """(OpenSSH private key PEM, ``ssh-ed25519 AAAA...`` public line) of a new Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def public_openssh(private_pem: str) -> str:
    """The ``ssh-... AAAA...`` public line of an OpenSSH private key (PEM)."""
    key = serialization.load_ssh_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()


def _tls_private_key(name: str, inputs: dict) -> dict:
    algorithm = inputs.get("algorithm", "RSA")
    if algorithm == "ECDSA":
        curve = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1,
                 "P521": ec.SECP521R1}[inputs.get("ecdsaCurve", "P224")]
        key = ec.generate_private_key(curve())
    elif algorithm == "ED25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(65537, int(inputs.get("rsaBits", 2048)))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"privateKeyPem": pem,
            "publicKeyPem": key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            "publicKeyOpenssh": key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + "\n"}


def plain(value: Any) -> Any:
    """A mock resource sees a secret input as Pulumi's wrapped secret value; unwrap it."""
    if isinstance(value, dict) and "value" in value and len(value) == 2:
        return value["value"]
    return value


def _pem(inputs: dict, key: str) -> bytes:
    return plain(inputs[key]).encode()


def _subject(inputs: dict) -> x509.Name:
    subject = inputs.get("subject") or {}
    if isinstance(subject, list):
        subject = subject[0] if subject else {}
    names = {"commonName": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME,
             "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME, "country": NameOID.COUNTRY_NAME}
    return x509.Name([x509.NameAttribute(oid, str(subject[k])) for k, oid in names.items() if subject.get(k)])


# pulumi-tls's ``allowedUses`` values (the terraform-provider-tls names) as X.509 extensions: a
# certificate the provider issues carries exactly these, so a server that checks a client
# certificate's purpose (OpenSSL's ``sslclient``) refuses a server certificate in the lab as it
# would on the hosts.
_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
               "key_agreement", "cert_signing", "crl_signing", "encipher_only", "decipher_only")
_EXTENDED_USAGES = {"any_extended": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
                    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
                    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
                    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
                    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING}


def _usages(builder: x509.CertificateBuilder, allowed: Sequence[str]) -> x509.CertificateBuilder:
    """``builder`` with the KeyUsage and ExtendedKeyUsage ``allowed`` names (none: neither).
    Raises ValueError for a name this stand-in does not know."""
    unknown = sorted(set(allowed) - set(_KEY_USAGES) - set(_EXTENDED_USAGES))
    if unknown:
        raise ValueError(f"allowedUses the rehearsal cannot issue: {unknown}")
    usage = {u: u in allowed for u in _KEY_USAGES}
    if any(usage.values()):
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=usage["digital_signature"], content_commitment=usage["content_commitment"],
            key_encipherment=usage["key_encipherment"], data_encipherment=usage["data_encipherment"],
            key_agreement=usage["key_agreement"], key_cert_sign=usage["cert_signing"],
            crl_sign=usage["crl_signing"], encipher_only=usage["encipher_only"] and usage["key_agreement"],
            decipher_only=usage["decipher_only"] and usage["key_agreement"]), critical=True)
    extended = [_EXTENDED_USAGES[u] for u in allowed if u in _EXTENDED_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    return builder


def _sign(subject: x509.Name, public_key, issuer: x509.Name, signing_key, inputs: dict,
          dns: Sequence[str] = (), ips: Sequence[str] = ()) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    hours = int(inputs.get("validityPeriodHours", 24 * 365))
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=hours))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = _usages(builder, [str(u) for u in inputs.get("allowedUses") or ()])
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signing_key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


def _self_signed(name: str, inputs: dict) -> dict:
    key = serialization.load_pem_private_key(_pem(inputs, "privateKeyPem"), password=None)
    subject = _subject(inputs)
    return {"certPem": _sign(subject, key.public_key(), subject, key, inputs,
                             inputs.get("dnsNames") or (), inputs.get("ipAddresses") or ())}


def _cert_request(name: str, inputs: dict) -> dict:
    key = serialization.load_pem_private_key(_pem(inputs, "privateKeyPem"), password=None)
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs))
    sans = [x509.DNSName(d) for d in inputs.get("dnsNames") or ()] + \
        [x509.IPAddress(ipaddress.ip_address(i)) for i in inputs.get("ipAddresses") or ()]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return {"certRequestPem": builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()}


def _locally_signed(name: str, inputs: dict) -> dict:
    csr = x509.load_pem_x509_csr(_pem(inputs, "certRequestPem"))
    ca_key = serialization.load_pem_private_key(_pem(inputs, "caPrivateKeyPem"), password=None)
    ca_cert = x509.load_pem_x509_certificate(_pem(inputs, "caCertPem"))
    dns: list[str] = []
    ips: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return {"certPem": _sign(csr.subject, csr.public_key(), ca_cert.subject, ca_key, inputs, dns, ips)}


@dataclass
class CaptureMemory:
    """What a later capture of the same stack answers as the earlier one did, as Pulumi's state
    keeps the outputs of a resource whose inputs did not change: each product's SSH key pair
    (``keys``: product -> (private, public)), every generated secret (``secrets``: config key ->
    value) and the outputs of every ``tls:*`` resource (``outputs``: (type, name) -> (digest of
    its inputs, outputs)). Without it a second capture would hand the boxes new keys, new
    passwords and new certificates everywhere, and a drill could not tell its change apart."""

    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    outputs: dict[tuple[str, str], tuple[str, dict]] = field(default_factory=dict)

    def remembered(self, typ: str, answer, reissue: Iterable[str] = ()):
        """``answer`` (a mock's ``(name, inputs) -> outputs``) answering what it answered
        before for the same name and inputs; a name in ``reissue`` gets new outputs, as
        ``pulumi up --replace`` (or a certificate's early-renewal window) gives it."""
        forced = set(reissue)

        def remembered_answer(name: str, inputs: dict) -> dict:
            import json as _json

            digest = hashlib.sha256(_json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
            kept = self.outputs.get((typ, name))
            if kept is not None and kept[0] == digest and name not in forced:
                return kept[1]
            outputs = answer(name, inputs)
            self.outputs[(typ, name)] = (digest, outputs)
            return outputs

        return remembered_answer


TLS_ANSWERS = {"tls:index/privateKey:PrivateKey": _tls_private_key,
               "tls:index/selfSignedCert:SelfSignedCert": _self_signed,
               "tls:index/certRequest:CertRequest": _cert_request,
               "tls:index/locallySignedCert:LocallySignedCert": _locally_signed}


# Secrets whose shape the lab's outside world checks: Alertmanager posts to Slack's incoming
# webhook URL, which the lab's webhook receiver answers (rehearsal/services.py); the SSH
# certificate authority's key is an OpenSSH key (its public half goes to every sshd).
SHAPED_SECRETS = {"alerts_slack_webhook_url":
                  lambda: f"https://hooks.slack.com/services/T0LAB/B0LAB/{secrets.token_urlsafe(18)}",
                  "ssh_ca_private_key": lambda: ssh_keypair()[0]}


def rehearsal_config(stack: str, stack_file=None, memory: Optional[CaptureMemory] = None):
    """The stack file with every secret the stack needs filled for the rehearsal, marked secret
    as ``pulumi config set --secret`` would, and the SSH key pair per product
    (``{product: (private, public)}``); with ``memory``, the keys and secrets it holds, and
    what is new is added to it. Raises ConfigError on invalid config."""
    from stacks.config import validate_stack_config
    from synth.engine import PROJECT_ROOT
    from synth.run import stack_file_path
    from synth.stackfile import load_stack_file, project_name

    project = project_name(PROJECT_ROOT)
    file = load_stack_file(stack_file or stack_file_path(stack), stack, project)
    prefix = f"{project}:"
    raw = {k[len(prefix):]: v for k, v in file.config.items() if k.startswith(prefix)}
    config = validate_stack_config(raw, check_secrets=False)
    keys: dict[str, tuple[str, str]] = {}
    for secret in config.required_secrets():
        key = f"{prefix}{secret.key}"
        if secret.key.endswith("_ssh_private_key"):
            product = secret.key[: -len("_ssh_private_key")]
            if memory is not None and product in memory.keys:
                keys[product] = memory.keys[product]
            else:
                keys[product] = ssh_keypair()
            if memory is not None:
                memory.keys[product] = keys[product]
            file.config[key] = keys[product][0]
        elif key not in file.config:
            if memory is not None and key in memory.secrets:
                file.config[key] = memory.secrets[key]
            else:
                file.config[key] = SHAPED_SECRETS.get(secret.key, lambda: secrets.token_urlsafe(24))()
            if memory is not None:
                memory.secrets[key] = file.config[key]
        else:
            continue
        if key not in file.secret_keys:
            file.secret_keys.append(key)
    return file, keys


