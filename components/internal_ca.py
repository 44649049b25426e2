"""``InternalCa``: a private certificate authority (pulumi-tls) for self-hosted data services,
so their clients verify the server (``sslmode=verify-full``) instead of trusting the network,
and for the callers of mutual TLS between hosts (client certificates, ``components.mtls``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_tls as tls

CA_VALIDITY_HOURS = 10 * 365 * 24
LEAF_VALIDITY_HOURS = 365 * 24
# Leaf certificates are re-issued (and the service reloaded) this long before they expire, by
# any `pulumi up` in that window.
LEAF_EARLY_RENEWAL_HOURS = 30 * 24


@dataclass(frozen=True)
class ServerRequest:
    """A server certificate to issue: ``server`` names its resources, ``dns_names`` (the first
    is the subject) and ``ip_addresses`` are what clients put in their URIs."""

    server: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientRequest:
    """A client certificate to issue (extended key usage ``client_auth`` only, so it never
    serves): ``client`` names its resources, ``identity`` is its subject CN and only DNS name,
    what a mutual-TLS terminator's allow-list matches."""

    client: str
    identity: str


@dataclass(frozen=True)
class ServerCertificate:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]


class InternalCa(pulumi.ComponentResource):
    """Children: ``{name}-key``, ``{name}-cert``, and per server of ``servers``
    ``{name}-<server>-key``, ``{name}-<server>-csr``, ``{name}-<server>-cert``, all created in
    the constructor, and per client of ``clients`` ``{name}-client-<client>-key``, ``-csr``,
    ``-cert``. ``certificates`` maps each server to its ``ServerCertificate``,
    ``client_certificates`` each client to its own. Output: ``cert_pem`` (public). Raises
    ``ValueError`` on a server or a client named twice."""

    def __init__(self, name: str, common_name: str, servers: Sequence[ServerRequest] = (),
                 opts: Optional[pulumi.ResourceOptions] = None, clients: Sequence[ClientRequest] = ()):
        super().__init__("platform:components:InternalCa", name, None, opts)
        names = [s.server for s in servers]
        if len(names) != len(set(names)):
            raise ValueError(f"{name}: servers named twice: {sorted({n for n in names if names.count(n) > 1})}")
        names = [c.client for c in clients]
        if len(names) != len(set(names)):
            raise ValueError(f"{name}: clients named twice: {sorted({n for n in names if names.count(n) > 1})}")
        child = pulumi.ResourceOptions(parent=self)
        self.key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        self.cert = tls.SelfSignedCert(
            f"{name}-cert", private_key_pem=self.key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(common_name=common_name, organization="platform"),
            is_ca_certificate=True, validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"], opts=child)
        self.cert_pem = self.cert.cert_pem
        self.certificates = {s.server: self._issue(s.server, s.dns_names, s.ip_addresses) for s in servers}
        self.client_certificates = {c.client: self._issue(f"client-{c.client}", (c.identity,), (),
                                                          uses=("digital_signature", "client_auth"))
                                    for c in clients}
        self.register_outputs({"cert_pem": self.cert_pem})

    def _issue(self, server: str, dns_names: Sequence[str], ip_addresses: Sequence[str],
               uses: Sequence[str] = ("digital_signature", "key_encipherment", "server_auth")) -> ServerCertificate:
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{self.pulumi_resource_name}-{server}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        csr = tls.CertRequest(f"{self.pulumi_resource_name}-{server}-csr", private_key_pem=key.private_key_pem,
                              subject=tls.CertRequestSubjectArgs(common_name=dns_names[0], organization="platform"),
                              dns_names=list(dns_names), ip_addresses=list(ip_addresses) or None, opts=child)
        cert = tls.LocallySignedCert(
            f"{self.pulumi_resource_name}-{server}-cert", cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=self.key.private_key_pem, ca_cert_pem=self.cert.cert_pem,
            validity_period_hours=LEAF_VALIDITY_HOURS, early_renewal_hours=LEAF_EARLY_RENEWAL_HOURS,
            allowed_uses=list(uses), opts=child)
        return ServerCertificate(cert_pem=cert.cert_pem, key_pem=pulumi.Output.secret(key.private_key_pem))
