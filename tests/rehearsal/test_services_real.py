"""The lab services (rehearsal/services.py) for real, in a network namespace of the test's own,
used from a second namespace that stands where the KRO droplet's box stands (10.200.0.11 on the
lab's public network), with the lab resolver in its resolv.conf: a stack domain resolves through
dnsmasq, a real certbot gets a certificate from pebble through HTTP-01 served from that box with
Let's Encrypt's default URL, a real restic inits, backs up and restores against the S3 server over
TLS with the lab CA, a mail sent with smtplib is read back from the sink, a webhook POST is read
back; afterwards no process, address or namespace of the test is left."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from rehearsal import overlay
from rehearsal.capture import capture
from rehearsal.lab_ca import TestCA
from rehearsal.netns import Namespace, run, stop_pid
from rehearsal.services import ACME_HOST, LabServices, ServicesError, plan_services
from synth.engine import PROJECT_ROOT
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.realtool

BOX = "kro-staging"
DOMAINS = ("api.stage.krotrust.com", "app.stage.krotrust.com", "app2.stage.krotrust.com",
           "admin.stage.krotrust.com")


def _tools():
    for tool, why in (("dnsmasq", "the lab's DNS"), ("pebble", "the lab's ACME CA"),
                      ("certbot", "the stack's ACME client"), ("restic", "backups to the lab's S3"),
                      ("moto_server", "the lab's S3 server"), ("ip", "network namespaces"),
                      ("nsenter", "entering the lab namespace"), ("openssl", "chain checks")):
        require_tool(tool, why)


@pytest.fixture(scope="module")
def lab_capture():
    doc = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    cap = capture("staging", products=["kro"])
    return overlay.apply(cap, overlay.plan(cap, doc["config"]["platform:environment"]["admin_cidrs"]))


@pytest.fixture(scope="module")
def plan(lab_capture):
    result = plan_services(lab_capture)
    assert result.zone[DOMAINS[0]] == lab_capture.hosts[BOX].address
    return result


def captured_certbot(lab_capture, webroot: Path, state: Path) -> list[str]:
    """The KRO droplet's own ``certbot certonly`` command, as captured, with its webroot moved
    to ``webroot``, its state under ``state`` (not /etc/letsencrypt) and no deploy hook (the
    hook installs into nginx's directory, which this test has not)."""
    script = next(s.inputs["stdin"] for s in lab_capture.steps
                  if s.host == BOX and "certbot certonly" in (s.inputs.get("stdin") or ""))
    line = re.search(r"^certbot certonly .*?(?<!\\)$", script, re.S | re.M).group(0)
    argv = shlex.split(line.replace("\\\n", " "))
    out = []
    skip = 0
    for i, arg in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if arg == "--deploy-hook":
            skip = 1
            continue
        out.append(str(webroot) if i and argv[i - 1] == "-w" else arg)
    return out + ["--config-dir", str(state / "conf"), "--work-dir", str(state / "work"),
                  "--logs-dir", str(state / "logs")]


@pytest.fixture
def lab(plan, tmp_path):
    """Two namespaces joined by a veth pair: the lab (10.200.0.1, the services) and the box
    (KRO's lab address, default route through the lab; resolv.conf = the lab resolver, as
    ``ip netns exec`` binds /etc/netns/NAME/resolv.conf)."""
    require_root("network namespaces need root")
    _tools()
    lab_ns, box_ns = Namespace(), Namespace()
    lab_ns.create()
    resolv = Path("/etc/netns") / box_ns.name
    try:
        box_ns.create()
        run(["ip", "-n", lab_ns.name, "link", "add", "pub0", "type", "veth", "peer", "name", "eth0",
             "netns", box_ns.name])
        run(["ip", "-n", lab_ns.name, "addr", "add", "10.200.0.1/24", "dev", "pub0"])
        run(["ip", "-n", lab_ns.name, "link", "set", "pub0", "up"])
        run(["ip", "-n", box_ns.name, "addr", "add", f"{plan.zone[DOMAINS[0]]}/24", "dev", "eth0"])
        run(["ip", "-n", box_ns.name, "link", "set", "eth0", "up"])
        run(["ip", "-n", box_ns.name, "route", "add", "default", "via", "10.200.0.1"])
        yield lab_ns, box_ns, resolv
    finally:
        shutil.rmtree(resolv, ignore_errors=True)
        box_ns.delete()
        lab_ns.delete()
        assert not lab_ns.path.exists() and not box_ns.path.exists()


def _in_box(box_ns: Namespace, argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run(["ip", "netns", "exec", box_ns.name, *argv], **kwargs)


def _py(box_ns: Namespace, code: str, *args: str, env=None) -> subprocess.CompletedProcess:
    return _in_box(box_ns, [sys.executable, "-c", code, *args],
                   env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})})


def test_the_lab_services_serve_dns_acme_s3_smtp_and_webhooks_to_a_box(plan, lab_capture, lab, tmp_path):
    lab_ns, box_ns, resolv = lab
    ca = TestCA(tmp_path / "ca")
    workdir = tmp_path / "services"
    resolv.mkdir(parents=True, exist_ok=True)
    (resolv / "resolv.conf").write_text("".join(f"nameserver {a}\n" for a in plan.resolvers))
    started = time.monotonic()
    with LabServices(plan, lab_ns.name, ca=ca, workdir=workdir, timeout=180) as services:
        startup = time.monotonic() - started
        pids = [p.pid for p in services._procs.values()]
        print(f"\nlab services up in {startup:.1f}s: {services.timings}")

        # --- DNS: through the box's own resolver (glibc, resolv.conf) -------------------------
        found = _in_box(box_ns, ["getent", "ahostsv4", DOMAINS[0]])
        box_ip = plan.zone[DOMAINS[0]]
        assert found.returncode == 0 and found.stdout.split()[0] == box_ip.encode(), found
        assert _in_box(box_ns, ["getent", "ahostsv4", ACME_HOST]).stdout.split()[0] \
            == plan.addresses["acme"].encode()
        for name in ("example.com", "evil.stage.krotrust.com"):
            assert _in_box(box_ns, ["getent", "ahostsv4", name]).returncode == 2, name  # NXDOMAIN
        nx = _py(box_ns, "import dns.resolver, sys; r = dns.resolver.Resolver(); "
                         "r.resolve(sys.argv[1], 'A')", "example.com")
        assert b"NXDOMAIN" in nx.stderr or b"does not exist" in nx.stderr, nx.stderr

        # --- ACME: the stack's certbot command, default server, webroot served by the box ------
        webroot = tmp_path / "acme"
        webroot.mkdir()
        web = subprocess.Popen(["ip", "netns", "exec", box_ns.name, sys.executable, "-m", "http.server",
                                "--bind", box_ip, "--directory", str(webroot), "80"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            cb = tmp_path / "certbot"
            t0 = time.monotonic()
            certbot = captured_certbot(lab_capture, webroot, cb)
            assert certbot[:3] == ["certbot", "certonly", "--webroot"] and "--server" not in certbot
            # What update-ca-certificates gives a box: trust in the lab CA.
            trust = {**os.environ, "REQUESTS_CA_BUNDLE": str(services.ca_file)}
            got = _in_box(box_ns, certbot, env=trust)
            print(f"certbot certonly, 4 domains: {time.monotonic() - t0:.1f}s")
            assert got.returncode == 0, got.stderr.decode()[-3000:]
            first = x509.load_pem_x509_certificate((cb / "conf" / "live" / BOX / "cert.pem").read_bytes())
            # A forced renewal (as issue 16's drill does it) gets a new certificate.
            renewed = _in_box(box_ns, ["certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew",
                                       "--cert-name", BOX,
                                       *certbot[-6:]], env=trust)
            assert renewed.returncode == 0, renewed.stderr.decode()[-3000:]
        finally:
            stop_pid(web.pid)
            web.wait()
        live = cb / "conf" / "live" / BOX
        leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        assert leaf.serial_number != first.serial_number
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(names.get_values_for_type(x509.DNSName)) == sorted(DOMAINS)
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert abs(lifetime - dt.timedelta(days=90)) < dt.timedelta(days=1)
        # The served chain verifies against pebble's own root, and not against the lab CA.
        root = services.acme_roots_pem.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
        (tmp_path / "root.pem").write_bytes(root)
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"),
                                 "-untrusted", str(live / "chain.pem"), str(live / "cert.pem")],
                                capture_output=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        wrong = subprocess.run(["openssl", "verify", "-CAfile", str(services.ca_file), "-untrusted",
                                str(live / "chain.pem"), str(live / "cert.pem")], capture_output=True)
        assert wrong.returncode != 0
        # Validation is real: with the box's web server stopped, a new account (no authorization
        # to reuse) gets nothing.
        other = tmp_path / "certbot-other"
        refused = _in_box(box_ns, [
            "certbot", "certonly", "--webroot", "-w", str(webroot), "--cert-name", "nobody",
            "-d", DOMAINS[1], "--email", "platform@krotrust.com", "--agree-tos", "--no-eff-email",
            "--non-interactive", "--config-dir", str(other / "conf"), "--work-dir", str(other / "work"),
            "--logs-dir", str(other / "logs")], env={**os.environ, "REQUESTS_CA_BUNDLE": str(services.ca_file)})
        assert refused.returncode != 0
        said = (refused.stdout + refused.stderr).decode(errors="replace")
        assert "Connection refused" in said or "connection refused" in said, said[-2000:]
        assert not (other / "conf" / "live" / "nobody").exists()

        # --- S3: a real restic over TLS under the R2 endpoint ------------------------------
        repository = f"s3:https://{plan.s3_hosts[0]}/kro-staging-backup"
        data = tmp_path / "data"
        data.mkdir()
        payload = secrets.token_bytes(300_000)
        (data / "dump.bin").write_bytes(payload)
        password = tmp_path / "restic-password"
        password.write_text(secrets.token_hex(16) + "\n")
        renv = {**os.environ, "AWS_ACCESS_KEY_ID": "lab-key", "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
                "RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD_FILE": str(password),
                "RESTIC_CACHE_DIR": str(tmp_path / "restic-cache")}
        cacert = ["--cacert", str(services.ca_file)]
        t0 = time.monotonic()
        for argv in (["init"], ["backup", "--host", BOX, str(data)],
                     ["restore", "latest", "--target", str(tmp_path / "restored")]):
            done = _in_box(box_ns, ["restic", *cacert, *argv], env=renv)
            assert done.returncode == 0, (argv, done.stderr.decode()[-2000:])
        print(f"restic init + backup + restore: {time.monotonic() - t0:.1f}s")
        assert (tmp_path / "restored" / data.relative_to("/") / "dump.bin").read_bytes() == payload
        # TLS is verified: without the lab CA restic refuses the server.
        (tmp_path / "no-roots").mkdir()
        untrusted = _in_box(box_ns, ["restic", "snapshots"], env={**renv, "SSL_CERT_FILE": "/dev/null",
                                                                  "SSL_CERT_DIR": str(tmp_path / "no-roots")})
        assert untrusted.returncode != 0 and b"certificate" in untrusted.stderr, untrusted.stderr
        # S3 down (issue 14's failure drill): its endpoint refuses connections (restic itself
        # would retry for over a minute before failing); the other services run on.
        services.stop_service("s3")
        down = _py(box_ns, "import socket, sys; socket.create_connection((sys.argv[1], 443), timeout=10)",
                   plan.s3_hosts[0])
        assert down.returncode != 0 and b"ConnectionRefusedError" in down.stderr, down.stderr
        with pytest.raises(ServicesError, match="no running lab service 's3'"):
            services.stop_service("s3")
        # ... and back (the shared lab's backup drill leaves S3 running for the tests after
        # it): the endpoint answers TLS from the lab CA again, empty, as after an outage.
        services.start_service("s3")
        with pytest.raises(ServicesError, match="is running"):
            services.start_service("s3")
        again = _in_box(box_ns, ["restic", *cacert, "init"], env=renv)
        assert again.returncode == 0, again.stderr.decode()[-2000:]

        # --- SMTP: Alertmanager's way (smarthost:587, STARTTLS required, AUTH) -------------
        host, port = plan.smtp[0]
        smtp_secret = secrets.token_hex(12)
        sent = _py(box_ns, """
import smtplib, ssl, sys
from email.message import EmailMessage
host, port, cafile, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with smtplib.SMTP(host, port, timeout=20) as c:
    c.ehlo()
    try:
        c.login("apikey", secret)
        sys.exit("AUTH was offered before STARTTLS")
    except smtplib.SMTPNotSupportedError:
        pass
    c.starttls(context=ssl.create_default_context(cafile=cafile))
    c.login("apikey", secret)
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "alerts@krotrust.com", "platform-alerts@krotrust.com", "[FIRING:1] BackupFailed"
    m.set_content("job kro-staging-db")
    c.send_message(m)
""", host, str(port), str(services.ca_file), smtp_secret)
        assert sent.returncode == 0, sent.stderr.decode()
        messages = services.messages()
        assert len(messages) == 1
        assert messages[0]["Subject"] == "[FIRING:1] BackupFailed"
        assert messages[0]["X-RcptTo"] == "platform-alerts@krotrust.com"
        assert messages[0]["X-Lab-Auth-Login"] == "apikey"
        assert "job kro-staging-db" in messages[0].get_payload()

        # --- webhook (Slack stand-in) --------------------------------------------------------
        path = f"/services/T000/B000/{secrets.token_hex(12)}"
        posted = _py(box_ns, """
import json, ssl, sys, urllib.request
req = urllib.request.Request("https://hooks.slack.com" + sys.argv[1], data=json.dumps({"text": "BackupFailed"}).encode(),
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, context=ssl.create_default_context(cafile=sys.argv[2]), timeout=20).read().decode())
""", path, str(services.ca_file))
        assert posted.returncode == 0 and posted.stdout.strip() == b"ok", posted.stderr
        posts = services.webhook_posts()
        assert [(p["path_sha256"], p["body"]) for p in posts] == \
            [(hashlib.sha256(path.encode()).hexdigest(), '{"text": "BackupFailed"}')]

        # No secret of the session is in any file the services wrote (logs included).
        for f in workdir.rglob("*"):
            if f.is_file():
                content = f.read_bytes()
                assert smtp_secret.encode() not in content and path.encode() not in content, f
    # Everything stopped, the addresses removed; the given workdir is kept.
    assert lab_ns.pids() == []
    assert all(not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
               for pid in pids)
    addresses = run(["ip", "-n", lab_ns.name, "-4", "addr", "show", "dev", "lo"]).stdout.decode()
    assert all(a not in addresses for a in [*plan.addresses.values(), *plan.resolvers])
    assert workdir.exists()


def test_a_service_that_cannot_start_leaves_nothing_behind(plan, lab, tmp_path):
    lab_ns, _, _ = lab
    # Port 53 on the first resolver address is taken: dnsmasq cannot bind and exits.
    run(["ip", "-n", lab_ns.name, "addr", "add", f"{plan.resolvers[0]}/32", "dev", "lo"])
    blocker = subprocess.Popen(lab_ns.argv([sys.executable, "-c", (
        "import socket, time, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind((sys.argv[1], 53)); time.sleep(600)"), plan.resolvers[0]]))
    try:
        time.sleep(1)
        services = LabServices(plan, lab_ns.name, ca=TestCA(tmp_path / "ca"), timeout=30)
        with pytest.raises(ServicesError, match="dns"):
            services.start()
        assert lab_ns.pids() == [blocker.pid]
        assert not services.workdir.exists()
        # The address the test added itself stays; the ones the services added are gone.
        addresses = run(["ip", "-n", lab_ns.name, "-4", "addr", "show", "dev", "lo"]).stdout.decode()
        assert plan.resolvers[0] in addresses and plan.addresses["acme"] not in addresses
    finally:
        stop_pid(blocker.pid)
        blocker.wait()


def test_a_smarthost_on_port_465_gets_tls_from_the_start(plan, lab, tmp_path):
    lab_ns, box_ns, resolv = lab
    from dataclasses import replace

    smtps = replace(plan, smtp=(("smtp.example.net", 465),), s3_hosts=()).with_names(
        {"smtp.example.net": plan.addresses["smtp"]})
    resolv.mkdir(parents=True, exist_ok=True)
    (resolv / "resolv.conf").write_text("".join(f"nameserver {a}\n" for a in smtps.resolvers))
    with LabServices(smtps, lab_ns.name, ca=TestCA(tmp_path / "ca"), timeout=180) as services:
        assert "s3" not in services.timings  # no R2 endpoint, no S3 server
        sent = _py(box_ns, """
import smtplib, ssl, sys
with smtplib.SMTP_SSL("smtp.example.net", 465, context=ssl.create_default_context(cafile=sys.argv[1]), timeout=20) as c:
    c.login("apikey", "not-a-secret")
    c.sendmail("a@example.net", ["b@example.net"], "Subject: tls\\r\\n\\r\\nbody\\r\\n")
""", str(services.ca_file))
        assert sent.returncode == 0, sent.stderr.decode()
        assert [(m["Subject"], m["X-Lab-Auth-Login"]) for m in services.messages()] == [("tls", "apikey")]
        # A client that trusts another CA only fails at the handshake.
        other = tmp_path / "other-ca.crt"
        other.write_bytes(TestCA(tmp_path / "other").cert_pem)
        untrusting = _py(box_ns, "import smtplib, ssl, sys; smtplib.SMTP_SSL('smtp.example.net', 465, "
                                 "context=ssl.create_default_context(cafile=sys.argv[1]), timeout=20)",
                         str(other))
        assert b"CERTIFICATE_VERIFY_FAILED" in untrusting.stderr, untrusting.stderr
    assert lab_ns.pids() == []
