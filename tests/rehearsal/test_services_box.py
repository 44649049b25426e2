"""The lab services used from a real box (systemd, its own Docker daemon), as the stack's hosts use
them: the box's resolver is the lab's DNS (the hoster's, ``BoxSpec.dns``), the lab CA is in its
system store (``update-ca-certificates``), and the clients are Debian's, installed from the lab's
apt repository: certbot with Let's Encrypt's default URL and HTTP-01 from the box's port 80,
restic to the R2 endpoint, curl to the SMTP smarthost and the Slack webhook, and a container on
a user-defined network resolving a stack domain through Docker's embedded DNS. Marker
``rehearsal`` (boots a box)."""

from __future__ import annotations

import hashlib
import secrets
import time

import pytest

from rehearsal.capture import Host, StackCapture, Step
from rehearsal.lab_ca import TestCA
from rehearsal.lab import BoxSpec, Lab
from rehearsal.services import ACME_HOST, LabServices, plan_services
from tests.conftest import require_tool

pytestmark = pytest.mark.rehearsal

BOX, ADDRESS = "web", "10.200.0.11"
DOMAINS = ("api.stage.krotrust.com", "app.stage.krotrust.com")
R2 = "4f3e2d1c0b9a88776655443322110fed.r2.cloudflarestorage.com"
CA_PATH = "/usr/local/share/ca-certificates/platform-rehearsal-ca.crt"


def _capture() -> StackCapture:
    """The parts of KRO's captured scripts the services are planned from."""
    script = ("certbot certonly --webroot -w /srv/kro/acme --cert-name kro "
              + " ".join(f"-d {d}" for d in DOMAINS) + " \\\n  --non-interactive\n"
              "RESTIC_REPOSITORY=s3:https://" + R2 + "/kro-backup\n"
              "  smtp_smarthost: smtp.sendgrid.net:587\n")
    host = Host(name=BOX, product="kro", kind="onprem", address=ADDRESS, user="deploy")
    return StackCapture(stack="t", hosts={BOX: host}, products=["kro"],
                        steps=[Step(urn="u", name="s", kind="command", host=BOX, inputs={"stdin": script})])


@pytest.fixture(scope="module")
def box_lab(tmp_path_factory):
    for tool, why in [("dockerd", "the harness Docker daemon"), ("debootstrap", "the box image"),
                      ("dpkg-scanpackages", "the local apt repository"), ("dnsmasq", "the lab's DNS"),
                      ("pebble", "the lab's ACME CA"), ("moto_server", "the lab's S3")]:
        require_tool(tool, why)
    tmp = tmp_path_factory.mktemp("services-box")
    plan = plan_services(_capture())
    ca = TestCA(tmp / "ca")
    lab = Lab({"public": "10.200.0.0/24", "internet": "10.203.0.0/24"},
              [BoxSpec(BOX, {"public": ADDRESS}, dns=plan.resolvers, files={CA_PATH: ca.cert_pem})],
              lock_path=tmp / "lab.lock")
    with lab:
        with LabServices(plan, lab.netns, ca=ca, timeout=180) as services:
            yield lab, services, plan
    assert lab.netns not in _namespaces()


def _namespaces() -> str:
    import subprocess

    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _sh(lab: Lab, script: str, timeout: float = 900, input: bytes | None = None):
    done = lab.exec(BOX, ["sh", "-euc", script], timeout=timeout, input=input)
    assert done.returncode == 0, (script, done.stdout.decode()[-2000:], done.stderr.decode()[-3000:])
    return done.stdout.decode()


def test_a_box_uses_the_lab_services_through_its_own_resolver_and_trust_store(box_lab):
    lab, services, plan = box_lab
    started = time.monotonic()
    _sh(lab, "update-ca-certificates >/dev/null && apt-get update -q >/dev/null && "
             "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
             "certbot curl restic docker.io >/dev/null")
    print(f"\napt install in the box: {time.monotonic() - started:.0f}s; services: {services.timings}")

    # DNS: the box's resolv.conf is the hoster's (the lab's resolvers); names resolve, others not.
    assert _sh(lab, "grep '^nameserver' /etc/resolv.conf").split()[1::2] == list(plan.resolvers)
    assert _sh(lab, f"getent ahostsv4 {DOMAINS[0]}").split()[0] == ADDRESS
    assert _sh(lab, f"getent ahostsv4 {ACME_HOST}").split()[0] == plan.addresses["acme"]
    assert lab.exec(BOX, ["getent", "ahostsv4", "example.com"]).returncode == 2

    # ACME: the box's certbot, default server, trusting the lab CA through the system store;
    # pebble validates HTTP-01 against the box's port 80.
    _sh(lab, "mkdir -p /srv/acme && systemd-run --unit lab-web python3 -m http.server 80 "
             "--directory /srv/acme >/dev/null && sleep 1")
    _sh(lab, "certbot certonly --webroot -w /srv/acme --cert-name kro "
             + " ".join(f"-d {d}" for d in DOMAINS)
             + " --email platform@krotrust.com --agree-tos --no-eff-email --non-interactive", timeout=600)
    sans = _sh(lab, "openssl x509 -in /etc/letsencrypt/live/kro/cert.pem -noout -ext subjectAltName")
    assert all(f"DNS:{d}" in sans for d in DOMAINS), sans
    assert "Pebble" in _sh(lab, "openssl x509 -in /etc/letsencrypt/live/kro/chain.pem -noout -issuer")

    # S3: restic from the box, TLS verified against the system store (no --cacert).
    _sh(lab, f"""
export AWS_ACCESS_KEY_ID=lab AWS_SECRET_ACCESS_KEY=lab-secret RESTIC_PASSWORD=lab-password
export RESTIC_REPOSITORY=s3:https://{R2}/kro-backup
restic init -q && restic backup -q /etc/letsencrypt && restic restore -q latest --target /tmp/r
cmp /tmp/r/etc/letsencrypt/live/kro/cert.pem /etc/letsencrypt/live/kro/cert.pem
""", timeout=600)

    # SMTP with STARTTLS and AUTH (credentials from a netrc file, not argv), and a webhook.
    secret = secrets.token_hex(8)
    _sh(lab, f"printf 'machine smtp.sendgrid.net login apikey password {secret}\\n' > /root/.netrc && "
             "chmod 600 /root/.netrc && printf 'Subject: from the box\\n\\nBackupFailed\\n' > /tmp/m && "
             "curl -sS --ssl-reqd --netrc smtp://smtp.sendgrid.net:587 --mail-from alerts@krotrust.com "
             "--mail-rcpt platform-alerts@krotrust.com -T /tmp/m")
    mail = services.messages()[-1]
    assert mail["Subject"] == "from the box" and mail["X-Lab-Auth-Login"] == "apikey"
    assert _sh(lab, "curl -sS -d '{\"text\":\"x\"}' -H 'Content-Type: application/json' "
                    "https://hooks.slack.com/services/T/B/box") == "ok"
    assert services.webhook_posts()[-1]["path_sha256"] == hashlib.sha256(b"/services/T/B/box").hexdigest()

    # Docker's embedded DNS (127.0.0.11 on a user-defined network) forwards to the box's
    # resolvers: a container resolves a stack domain, and nothing else.
    _sh(lab, "for i in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 1; done; "
             "tar -chf - -C / usr/bin/getent lib64/ld-linux-x86-64.so.2 lib/x86_64-linux-gnu/libc.so.6 "
             "| docker import - lab/getent >/dev/null && docker network create labnet >/dev/null", timeout=600)
    inside = _sh(lab, f"docker run --rm --network labnet lab/getent /usr/bin/getent ahostsv4 {DOMAINS[1]}")
    assert inside.split()[0] == ADDRESS
    resolv = _sh(lab, "docker run --rm --network labnet lab/getent /usr/bin/getent hosts nothing.example "
                      "|| echo unresolved")
    assert resolv.strip() == "unresolved"
