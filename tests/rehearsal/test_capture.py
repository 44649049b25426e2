"""Capture, overlay and ordering of the staging rehearsal, against the real staging synth."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rehearsal import overlay
from rehearsal.capture import CaptureError, Step, StackCapture, capture, order
from synth.engine import PROJECT_ROOT

pytestmark = pytest.mark.fast

STAGING_HOSTS = {"pencom-staging-edge", "pencom-staging-app", "pencom-staging-data",
                 "pencom-staging-storage", "vedfinance-staging", "kro-staging", "giv-staging-ops"}


def _test_ca() -> str:
    from rehearsal.capture_answers import _self_signed, _tls_private_key

    key = _tls_private_key("ca", {"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    return _self_signed("ca", {"privateKeyPem": key, "isCaCertificate": True,
                               "subject": {"commonName": "rehearsal test CA"}})["certPem"]


@pytest.fixture(scope="module")
def staging() -> StackCapture:
    return capture("staging", database_ca_pem=_test_ca())


@pytest.fixture(scope="module")
def lab_staging(staging):
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    admin = doc["config"]["platform:environment"]["admin_cidrs"]
    plan = overlay.plan(staging, admin)
    return plan, overlay.apply(staging, plan)


def test_every_ssh_host_of_staging_is_captured(staging):
    assert set(staging.hosts) == STAGING_HOSTS
    by = staging.hosts
    assert {h.kind for n, h in by.items() if n in ("kro-staging", "giv-staging-ops")} == {"droplet"}
    assert by["kro-staging"].user_data.startswith("#cloud-config")
    assert by["pencom-staging-edge"].user_data is None
    # The private nodes are reached through the edge, as the stack's connections say.
    assert {by[n].bastion for n in ("pencom-staging-app", "pencom-staging-data", "pencom-staging-storage")} \
        == {"pencom-staging-edge"}
    assert by["pencom-staging-edge"].bastion is None
    assert all(h.user == "deploy" for h in by.values())


def test_steps_cover_every_command_and_docker_resource(staging):
    kinds = {}
    for s in staging.steps:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    # Every remote command, network, image and container of the state (none dropped).
    assert kinds["command"] >= 90 and kinds["container"] >= 50
    # One network a host, and KRO's backend's own (its database flows match its subnet).
    assert kinds["image"] == kinds["container"] and kinds["network"] == len(STAGING_HOSTS) + 1
    assert {s.inputs["name"] for s in staging.steps if s.kind == "network" and s.host == "kro-staging"} == \
        {"kro-staging", "kro-staging-backend"}
    for s in staging.steps:
        if s.kind == "container":
            assert s.inputs["image"], s.name  # RemoteImage.imageId answered with the reference


def test_ssh_key_is_real_and_shared_by_the_products_hosts(staging):
    keys = {}
    for h in staging.hosts.values():
        key = serialization.load_ssh_private_key(h.private_key.encode(), password=None)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        assert public == h.public_key
        keys.setdefault(h.product, set()).add(public)
    assert all(len(v) == 1 for v in keys.values())
    assert len({next(iter(v)) for v in keys.values()}) == len(keys)
    for s in staging.steps:
        if s.kind == "command":
            assert s.inputs["connection"]["privateKey"] == staging.hosts[s.host].private_key


def test_internal_ca_certificates_are_real(staging):
    pems = set()
    for s in staging.steps:
        text = json.dumps(s.inputs)
        pems |= set(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text))
    assert pems
    for pem in pems:
        x509.load_pem_x509_certificate(pem.replace("\\n", "\n").encode())


def test_order_is_topological_and_respects_component_dependencies(staging):
    position = {s.urn: i for i, s in enumerate(staging.steps)}
    for s in staging.steps:
        for d in s.depends:
            assert position[d] < position[s.urn], (s.name, d)
    # Containers wait for their host's setup (a dependency on the host's scripts).
    edge = [s for s in staging.steps if s.host == "pencom-staging-edge"]
    first_container = min(position[s.urn] for s in edge if s.kind == "container")
    docker_setup = next(s for s in edge if s.name.endswith("setup-docker"))
    assert position[docker_setup.urn] < first_container
    # A network or image waits for its provider's dependencies (the host's setup), as Pulumi does.
    for s in staging.steps:
        if s.kind in ("network", "image"):
            setup = next(x for x in staging.steps if x.host == s.host and x.name.endswith("setup-docker"))
            assert position[setup.urn] < position[s.urn], s.name
            assert s.depends, s.name


def test_order_refuses_a_cycle():
    a = Step(urn="a", name="a", kind="command", host="h", inputs={}, depends=["b"])
    b = Step(urn="b", name="b", kind="command", host="h", inputs={}, depends=["a"])
    with pytest.raises(CaptureError, match="cycle"):
        order([a, b])
    c = Step(urn="c", name="c", kind="command", host="h", inputs={}, depends=[])
    assert [s.urn for s in order([Step(urn="d", name="d", kind="command", host="h", inputs={},
                                       depends=["c"]), c])] == ["c", "d"]


def test_product_filter_keeps_only_that_products_hosts(staging):
    from rehearsal.capture import extract

    with pytest.raises(CaptureError, match="no host of that product"):
        extract({"stack": "x", "resources": []}, {}, ["nope"])


def _stack_addresses(staging: StackCapture) -> set[str]:
    """Every address of the stack file and every host address (mock answers included)."""
    text = (PROJECT_ROOT / "Pulumi.staging.yaml").read_text()
    found = {m.group(1) for m in overlay.ADDRESS.finditer(text)}
    found |= {h.address for h in staging.hosts.values()} | \
        {h.private_address for h in staging.hosts.values() if h.private_address}
    return {a for a in found if not ipaddress.ip_address(a).is_loopback and a != "0.0.0.0"}


def test_no_stack_address_survives_the_overlay(staging, lab_staging):
    plan, lab = lab_staging
    real = _stack_addresses(staging)
    assert {"103.54.153.248", "10.41.0.11", "198.51.100.10", "10.50.8.20"} <= real
    sent = [s.inputs for s in lab.steps] + [h.__dict__ for h in lab.hosts.values()]
    for payload in sent:
        addresses = overlay.addresses_in(payload)
        assert not addresses & real, addresses & real
        outside = {a for a in addresses if not overlay.is_lab_or_local(a)}
        assert not outside, outside
    # Nothing real left even as a substring (a rewrite that missed a form of the address).
    blob = json.dumps(sent)
    for address in real:
        assert not re.search(rf"(?<![\d.]){re.escape(address)}(?![\d])", blob), address


def test_overlay_keeps_structure(staging, lab_staging):
    plan, lab = lab_staging
    edge = lab.hosts["pencom-staging-edge"]
    app = lab.hosts["pencom-staging-app"]
    assert ipaddress.ip_address(edge.address) in overlay.PUBLIC
    private = ipaddress.ip_network(plan.lab_networks["pencom-private"])
    assert ipaddress.ip_address(edge.private_address) in private
    assert ipaddress.ip_address(app.address) in private
    # Host part kept: .11 stays .11 in the lab private network.
    assert edge.private_address.endswith(".11") and app.address.endswith(".12")
    # The admin CIDR becomes the harness's own address, where SSH comes from.
    assert plan.hosts["198.51.100.10"] == str(overlay.HARNESS)
    assert any("ProxyJump=deploy@" + edge.address in o for o in app.ssh_opts)
    assert lab.hosts["kro-staging"].docker_host == f"ssh://deploy@{lab.hosts['kro-staging'].address}"
    # The stack's own Docker subnet (host-local) is kept.
    edge_net = next(s for s in lab.steps if s.kind == "network" and s.host == "pencom-staging-edge")
    assert edge_net.inputs["ipamConfigs"][0]["subnet"] == "172.31.250.0/24"


def test_overlay_text_forms():
    plan = overlay.Overlay(hosts={"203.0.113.5": "10.200.0.10"},
                           networks={"10.41.0.0/24": "10.201.0.0/24"})
    assert plan.text("ufw allow from 203.0.113.5/32 to any port 22") == \
        "ufw allow from 10.200.0.10/32 to any port 22"
    assert plan.text("-d 10.41.0.0/24 -s 10.41.0.7") == "-d 10.201.0.0/24 -s 10.201.0.7"
    assert plan.text("listen 127.0.0.1:8080; image v1.2.3") == "listen 127.0.0.1:8080; image v1.2.3"
    external = plan.text("nameserver 9.9.9.9")
    assert external.startswith("nameserver 10.203.0.")
    assert plan.text("0.0.0.0/0 172.16.0.0/12") == "0.0.0.0/0 172.16.0.0/12"
    assert plan.value({"203.0.113.5": ["x 203.0.113.5:22"]}) == {"10.200.0.10": ["x 10.200.0.10:22"]}


def test_a_lab_address_names_the_stack_address_it_stands_for(staging, lab_staging):
    plan, lab = lab_staging
    data = lab.hosts["pencom-staging-data"]
    # The internal CA's certificate carries the stack's address, not the lab's: a verify-full
    # client in the lab names the stack address and connects to the lab one.
    assert plan.stack_address(data.address) == staging.hosts["pencom-staging-data"].address
    assert plan.stack_address(lab.hosts["kro-staging"].address) == staging.hosts["kro-staging"].address
    for stack_address in {h.address for h in staging.hosts.values()}:
        assert plan.stack_address(plan.text(stack_address)) == stack_address
    assert plan.stack_address(str(overlay.HARNESS)) is None  # every admin CIDR at once
    assert plan.stack_address("10.202.9.9") is None and plan.stack_address("172.18.0.2") is None


def test_vpc_ranges_become_the_service_address_where_managed_database_standins_listen(staging, lab_staging):
    import ipaddress

    from rehearsal.netns import SERVICE_ADDRESS

    plan, _ = lab_staging
    assert overlay.SERVICES == ipaddress.ip_network(f"{SERVICE_ADDRESS}/32")
    assert plan.text("10.111.0.0/20 port 25060") == f"{SERVICE_ADDRESS}/32 port 25060"


def test_the_management_network_gets_a_lab_range_of_its_own_with_host_parts_kept(staging, lab_staging):
    """wg-quick routes the whole management network to wg0; placed in ``internet`` (where the
    lab's DNS, ACME and S3 stand-ins are) it cut every box off from them (lab run of 2 Dec:
    370 checks failed). Its interface addresses keep their host part."""
    plan, lab = lab_staging
    managed = [r for r in staging.state["resources"] if r["type"] == overlay.MANAGEMENT_NETWORK]
    assert managed, "staging declares a management network"
    stack_net = ipaddress.ip_network(managed[0]["inputs"]["network"])
    first = stack_net.network_address + 1
    assert plan.text(f"Address = {first}/{stack_net.prefixlen}") == \
        f"Address = {overlay.MANAGEMENT.network_address + 1}/{stack_net.prefixlen}"
    assert plan.text(str(stack_net)) == f"{overlay.MANAGEMENT.network_address}/{stack_net.prefixlen}"
    sent = json.dumps([s.inputs for s in lab.steps])
    wg = [a for a in overlay.addresses_in(sent) if ipaddress.ip_address(a) in overlay.MANAGEMENT]
    assert wg, "wg0 addresses reach the boxes in the management range"
    assert not any(ipaddress.ip_address(a) in overlay.INTERNET and a in plan.hosts.values()
                   and plan.stack_address(a) and ipaddress.ip_address(plan.stack_address(a)) in stack_net
                   for a in overlay.addresses_in(sent))


def test_lab_certificates_carry_the_allowed_uses_pulumi_tls_would_give_them():
    """A server certificate (``server_auth``) is refused as a client by a server that checks the
    purpose (nginx's ``ssl_verify_client``, OpenSSL's ``sslclient``), in the lab as on the hosts;
    before, the lab's certificates carried no usage at all and any leaf passed as a client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from rehearsal import capture_answers as answers

    def pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = answers._self_signed("ca", {"privateKeyPem": pem(ca_key), "isCaCertificate": True,
                                     "subject": {"commonName": "lab CA"},
                                     "allowedUses": ["cert_signing", "crl_signing", "digital_signature"]})["certPem"]
    csr = answers._cert_request("req", {"privateKeyPem": pem(leaf_key), "subject": {"commonName": "mtls"},
                                        "dnsNames": ["app.internal"]})["certRequestPem"]

    def leaf(uses):
        return x509.load_pem_x509_certificate(answers._locally_signed("leaf", {
            "certRequestPem": csr, "caPrivateKeyPem": pem(ca_key), "caCertPem": ca,
            "allowedUses": uses})["certPem"].encode())

    server = leaf(["digital_signature", "key_encipherment", "server_auth"])
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = server.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    client = leaf(["digital_signature", "client_auth"])
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    root = x509.load_pem_x509_certificate(ca.encode())
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    with pytest.raises(ValueError, match="allowedUses the rehearsal cannot issue"):
        leaf(["server_auth", "ipsec_tunnel"])
