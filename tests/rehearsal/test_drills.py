"""On-box drills (issue #15): a change to the stack's config, converged onto running boxes,
reaches the RUNNING services, and an alert that fires on a box reaches the lab's mail sink and
webhook receiver.

On the shared staging lab (``staging_rehearsal``, tests/rehearsal/conftest.py), last of the lab
tier (the drills leave the boxes on changed stack files). Each drill converges its change onto
the two boxes that hold every piece it observes (``Drill.hosts``): V-EdFinance's VPS (its own
Prometheus, Alertmanager, PostgreSQL with an internal-CA certificate) and Pencom's edge node (the
egress proxy, squid, mounted over all of /etc/squid). Drills, in order, each stack file building
on the previous one:

1. ``alert-slack-channel``: staging's stack file plus a Slack channel: the running Alertmanager
   (reloaded, not restarted) posts critical alerts to the webhook receiver too.
2. ``alert-delivery``: a backup fails for real (its Redis source stopped): Prometheus fires
   BackupFailed, Alertmanager mails the configured address through the SMTP sink (STARTTLS,
   AUTH) and posts to the Slack stand-in; the mail names the job.
3. ``alert-emails``: ``environment.alerts.emails`` changed: Alertmanager's running config names
   the new address only, and a new alert is mailed to it; Alertmanager was reloaded, not
   restarted.
4. ``egress-provider-removed``: posthog removed from Pencom's egress list: squid refuses its
   host (403, TCP_DENIED), where before the drills it connected (a listener stands at the
   host's lab address: CONNECT 200), while a host still on the list connects on the same port,
   and apt's mirror still answers through the hosts' port.
5. ``postgres-certificate``: the internal CA re-issues PostgreSQL's certificate (as
   ``pulumi up --replace`` or its early-renewal window would): the server presents the new
   serial (openssl s_client -starttls postgres), restarted by the delivery, not by hand: the
   certificate and its key in one commit (``secrets-postgres``), so one restart on a matching
   pair, awaited until Docker reports the server healthy.

Each drill's first converge reports changes, its second converge 0. Every change drill restarts
exactly the services that depend on its change: each container's (Id, StartedAt) and each
platform unit's (InvocationID, ActiveEnterTimestamp), on every box of the lab, before and after
its converges (``rehearsal.restarts``), against the set derived from the captures' own scripts
and resources; :data:`EXPECTED_RESTARTS` is the hand-written cross-check of that derivation.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509


pytestmark = pytest.mark.rehearsal

VPS = "vedfinance-staging"
EDGE = "pencom-staging-edge"
OLD_EMAIL = "platform-alerts@krotrust.com"
NEW_EMAIL = "drill-oncall@krotrust.com"
REMOVED_PROVIDER = "posthog"
REMOVED_HOST = "us.i.posthog.com"
KEPT_HOST = "pub.highlight.io"        # on the same client's list (api-gateway) as posthog
CERT = "vedfinance-staging-ca-postgres-cert"
SLACK_CHANNEL = "#platform-alerts"
HOSTS = (VPS, EDGE)
ALERT_TIMEOUT_S = 600

# The change drills, in order: (name, stack file of ``stack_files``, certificates re-issued).
CHANGE_DRILLS = (("alert-slack-channel", "base", ()), ("alert-emails", "emails", ()),
                 ("egress-provider-removed", "egress", ()), ("postgres-certificate", "egress", (CERT,)))
# The cross-check: Alertmanager and squid reload (SIGHUP, `squid -k reconfigure`), so only a
# new certificate restarts a service, its own server, and with it the WAL receiver streaming
# from it (pg_receivewal ends with its server; systemd starts it again).
EXPECTED_RESTARTS: dict[str, dict[str, set[str]]] = {
    "alert-slack-channel": {}, "alert-emails": {}, "egress-provider-removed": {},
    "postgres-certificate": {VPS: {f"container:{VPS}/postgres", f"unit:platform-wal-receive-{VPS}-wal"}},
}


def sh(lab, box: str, script: str, check: bool = True) -> str:
    proc = lab.exec(box, ["bash", "-c", script], timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{box}: {script!r} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def container(lab, box: str, stack: str, service: str) -> str:
    cid = sh(lab, box, f"docker ps -aq --filter label=platform.stack={stack} "
                       f"--filter label=platform.service={service}").split()
    assert len(cid) == 1, f"{box}: containers of {service}: {cid}"
    return cid[0]


def started_at(lab, box: str, cid: str) -> str:
    return sh(lab, box, f"docker inspect -f '{{{{.State.StartedAt}}}}' {cid}").strip()


def wait_for(what: str, probe, timeout: float = ALERT_TIMEOUT_S, every: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: nothing after {timeout:.0f} s")
        time.sleep(every)


def mails(services, alertname: str, naming: str = "") -> list[dict]:
    """The mails of ``alertname`` whose text names ``naming`` (a job: the shared lab's backup
    drill has mailed a BackupFailed of another job before these drills run)."""
    found = []
    for message in services.messages():
        text = message.as_string()
        if (alertname in str(message.get("Subject", "")) or alertname in text) and naming in text:
            found.append({"to": message.get("X-RcptTo"), "subject": message.get("Subject"),
                          "auth": message.get("X-Lab-Auth-Login"), "text": text})
    return found


def posts(services, alertname: str, naming: str = "") -> list[dict]:
    return [p for p in services.webhook_posts()
            if alertname in json.dumps(p.get("body")) and naming in json.dumps(p.get("body"))]


def alertmanager_api(lab, cid: str, path: str, data: str | None = None) -> str:
    post = f" --header 'Content-Type: application/json' --post-data {shlex.quote(data)}" if data else ""
    return sh(lab, VPS, f"docker exec {cid} wget -qO- -T 10{post} http://127.0.0.1:9093{path}")


def certificate_in(capture, step_name: str) -> x509.Certificate:
    step = next(s for s in capture.steps if s.name == step_name)
    pem = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", step.inputs["stdin"], re.S)
    assert pem, f"{step_name} delivers no certificate"
    return x509.load_pem_x509_certificate(pem.group(0).encode())


def proxy_ports(lab) -> dict[str, str]:
    """squid's client label -> the host address:port it is published on, read from the running
    container (its mounted squid.conf and Docker's port map)."""
    cid = container(lab, EDGE, "pencom-staging-edge", "egress-proxy")
    conf = sh(lab, EDGE, f"docker exec {cid} cat /etc/squid/squid.conf")
    labels = dict(re.findall(r"^http_port (?:\S+:)?(\d+) name=(\S+)$", conf, re.M))
    published = {}
    for line in sh(lab, EDGE, f"docker port {cid}").splitlines():
        m = re.match(r"(\d+)/tcp -> (\S+):(\d+)$", line.strip())
        if m and m.group(1) in labels and m.group(2) not in ("::", "[::]"):
            address = "127.0.0.1" if m.group(2) == "0.0.0.0" else m.group(2)
            published[labels[m.group(1)]] = f"{address}:{m.group(3)}"
    return published


def through_proxy(lab, proxy: str, url: str) -> dict:
    """curl through squid from the edge box: the CONNECT answer (https) or the status (http)."""
    out = sh(lab, EDGE, f"curl -s -o /dev/null -m 20 -w '%{{http_connect}} %{{http_code}}' "
                        f"-x http://{proxy} {shlex.quote(url)}", check=False).split()
    connect, code = (out + ["000", "000"])[:2]
    return {"url": url, "proxy": proxy, "connect": int(connect), "status": int(code)}


def denied_in_log(lab, host: str) -> int:
    cid = container(lab, EDGE, "pencom-staging-edge", "egress-proxy")
    log = sh(lab, EDGE, f"docker exec {cid} cat /var/log/squid/access.log", check=False)
    return sum(1 for line in log.splitlines() if "TCP_DENIED" in line and host in line)


# --- the drills' observations -----------------------------------------------------------------

SEEN: dict[str, object] = {}


def before_drills(lab, services) -> None:
    """What the drills compare with, seen before the first one: Alertmanager's start time, and
    Pencom's proxy before its list changes: posthog's host passes squid's rules and squid
    connects (a listener at its lab address accepts: CONNECT 200), the counterpart of the 403."""
    SEEN["alertmanager_started"] = started_at(lab, VPS, container(lab, VPS, VPS, "alertmanager"))
    for host in (REMOVED_HOST, KEPT_HOST):
        services.listen(host, 443)
    ports = proxy_ports(lab)
    SEEN["proxy_before"] = through_proxy(lab, ports["api_gateway"], f"https://{REMOVED_HOST}/")


def running_alertmanager_config(lab) -> str:
    am = container(lab, VPS, VPS, "alertmanager")
    return json.loads(alertmanager_api(lab, am, "/api/v2/status"))["config"]["original"]


def observe_slack_channel(ctx) -> dict:
    lab = ctx.lab
    running = running_alertmanager_config(lab)
    am = container(lab, VPS, VPS, "alertmanager")
    return {"running_config_posts_to_slack": "slack_configs" in running and SLACK_CHANNEL in running,
            "alertmanager_restarted": started_at(lab, VPS, am) != SEEN["alertmanager_started"]}


def observe_alert_delivery(ctx) -> dict:
    lab, services = ctx.lab, ctx.services
    redis = container(lab, VPS, VPS, "redis")
    job = f"{VPS}-redis"
    started = time.monotonic()
    sh(lab, VPS, f"docker stop {redis} >/dev/null")
    try:
        run = lab.exec(VPS, ["systemctl", "start", f"platform-backup-{job}.service"], timeout=600)
    finally:
        sh(lab, VPS, f"docker start {redis} >/dev/null")
    metrics = sh(lab, VPS, f"cat /var/lib/node-exporter/textfile/backup-{job}.prom "
                           f"/var/lib/prometheus/node-exporter/backup-{job}.prom 2>/dev/null", check=False)
    mail = wait_for(f"BackupFailed of {job} mailed", lambda: mails(services, "BackupFailed", job))
    hook = wait_for(f"BackupFailed of {job} posted to the webhook", lambda: posts(services, "BackupFailed", job))
    return {"backup_exit": run.returncode, "metrics": metrics,
            "seconds_to_mail_and_webhook": round(time.monotonic() - started, 1),
            "mail": [{k: v for k, v in m.items() if k != "text"} | {"names_job": job in m["text"]}
                     for m in mail],
            "webhook": [{"host": p["host"], "names_job": job in json.dumps(p["body"]),
                         "text": json.dumps(p["body"])[:300]} for p in hook],
            "proxy_before": SEEN["proxy_before"]}


def observe_alert_emails(ctx) -> dict:
    lab, services = ctx.lab, ctx.services
    am = container(lab, VPS, VPS, "alertmanager")
    running = running_alertmanager_config(lab)
    started = time.monotonic()
    alert = json.dumps([{"labels": {"alertname": "DrillNewAddress", "severity": "warning",
                                    "instance": "drill", "job": "drill"},
                         "annotations": {"summary": "the new address receives this"}}])
    alertmanager_api(lab, am, "/api/v2/alerts", alert)
    mail = wait_for("DrillNewAddress mailed", lambda: mails(services, "DrillNewAddress"), timeout=300)
    return {"running_config_names_new": NEW_EMAIL in running, "running_config_names_old": OLD_EMAIL in running,
            "recipients": sorted({m["to"] for m in mail}),
            "seconds_to_mail": round(time.monotonic() - started, 1),
            "alertmanager_restarted": started_at(lab, VPS, am) != SEEN["alertmanager_started"]}


def observe_egress(ctx) -> dict:
    lab = ctx.lab
    ports = proxy_ports(lab)
    return {"removed": through_proxy(lab, ports["api_gateway"], f"https://{REMOVED_HOST}/"),
            "kept_same_port": through_proxy(lab, ports["api_gateway"], f"https://{KEPT_HOST}/"),
            "apt_mirror": through_proxy(lab, ports["hosts"],
                                        "http://deb.debian.org/debian/dists/bookworm/Release"),
            "denied_in_access_log": denied_in_log(lab, REMOVED_HOST),
            "proxy_before": SEEN["proxy_before"]}


def observe_certificate(ctx) -> dict:
    lab = ctx.lab
    old = certificate_in(ctx.before, f"{VPS}-secrets-postgres")
    new = certificate_in(ctx.after, f"{VPS}-secrets-postgres")
    pg = container(lab, VPS, VPS, "postgres")
    published = sh(lab, VPS, f"docker port {pg} 5432/tcp").split()[0].replace("0.0.0.0", "127.0.0.1")
    pid = sh(lab, VPS, f"docker inspect -f '{{{{.State.Pid}}}}' {pg}").strip()
    # s_client's whole answer is kept: when it carries no certificate, what it said instead is
    # the diagnosis.
    probe = ("out=$(timeout 20 openssl s_client -starttls postgres -connect {} </dev/null 2>&1); "
             "printf '%s\n' \"$out\" | openssl x509 -noout -serial 2>/dev/null "
             "|| printf 'no certificate: %s\n' \"$(printf '%s' \"$out\" | tail -c 400)\"")
    # The published address (loopback on this VPS), and the server's own loopback inside its
    # container's network namespace (entered by its pid), which no publishing rule can hide.
    attempts = {"published": probe.format(published),
                "container": f"nsenter -t {pid} -n sh -c {shlex.quote(probe.format('127.0.0.1:5432'))}"}
    said: dict[str, str] = {}

    def served() -> dict:
        answers = {}
        for where, command in attempts.items():
            said[where] = sh(lab, VPS, command, check=False).strip()
            if said[where].startswith("serial="):
                answers[where] = said[where].removeprefix("serial=")
        return answers

    try:
        answers = wait_for("PostgreSQL answers TLS", served, timeout=120, every=3)
    except AssertionError as exc:
        state = sh(lab, VPS, f"docker inspect -f '{{{{.State.Status}}}} {{{{.State.Health.Status}}}} "
                             f"started {{{{.State.StartedAt}}}} pid {{{{.State.Pid}}}}' {pg}; "
                             f"docker logs --tail 25 {pg} 2>&1", check=False)
        raise AssertionError(f"{exc}; the probes said {said}; postgres (pid {pid} before): {state[-2500:]}") from None
    return {"old_serial": format(old.serial_number, "X"), "new_serial": format(new.serial_number, "X"),
            "served_serial": next(iter(answers.values())), "served": answers, "published": published,
            "postgres_started_at": started_at(lab, VPS, pg)}


# --- the lab ---------------------------------------------------------------------------------

def stack_files(tmp: Path) -> dict[str, Path]:
    from synth.run import stack_file_path

    base = yaml.safe_load(stack_file_path("staging").read_text())
    docs = {}
    doc = copy.deepcopy(base)
    doc["config"]["platform:environment"]["alerts"]["slack_channel"] = SLACK_CHANNEL
    docs["base"] = copy.deepcopy(doc)
    doc["config"]["platform:environment"]["alerts"]["emails"] = [NEW_EMAIL]
    docs["emails"] = copy.deepcopy(doc)
    https = doc["config"]["platform:pencom"]["egress"]["https"]
    doc["config"]["platform:pencom"]["egress"]["https"] = [p for p in https if p["name"] != REMOVED_PROVIDER]
    assert len(doc["config"]["platform:pencom"]["egress"]["https"]) == len(https) - 1
    docs["egress"] = copy.deepcopy(doc)
    paths = {}
    for name, d in docs.items():
        paths[name] = tmp / f"Pulumi.staging-{name}.yaml"
        paths[name].write_text(yaml.safe_dump(d, sort_keys=False))
    return paths


@pytest.fixture(scope="module")
def drilled(staging_rehearsal, tmp_path_factory):
    from rehearsal.rehearse import Drill

    held = staging_rehearsal
    assert held.report.error is None, held.report.text()
    files = stack_files(tmp_path_factory.mktemp("drills"))
    before_drills(held.lab, held.lab_services)
    observe = {"alert-slack-channel": observe_slack_channel, "alert-emails": observe_alert_emails,
               "egress-provider-removed": observe_egress, "postgres-certificate": observe_certificate}
    changes = [Drill(name, observe[name], stack_file=files[stack_file], reissue=list(reissue),
                     hosts=[VPS] if reissue else HOSTS) for name, stack_file, reissue in CHANGE_DRILLS]
    for drill in [changes[0], Drill("alert-delivery", observe_alert_delivery), *changes[1:]]:
        held.drill(drill)
        print(f"drill {drill.name}: {json.dumps(held.report.drills[drill.name], default=str)[:3000]}")
    report = held.report
    out = Path(__file__).resolve().parents[2] / "out"
    out.mkdir(exist_ok=True)
    (out / "drills-report.json").write_text(json.dumps(report.drills, indent=1, default=str))
    return report


def _drill(report, name: str) -> dict:
    entry = report.drills[name]
    assert "error" not in entry, f"{name}: {entry['error']}"
    return entry


def _changed_then_settled(entry: dict, host: str, step: str) -> None:
    (apply_run, apply), (settle_run, settle) = sorted(entry["runs"].items())
    assert not apply["failed"], apply["failed"]
    assert apply["changes"][host] > 0, f"run {apply_run} changed nothing on {host}"
    assert step in apply["changed_steps"], apply["changed_steps"]
    assert not settle["failed"], settle["failed"]
    assert all(n == 0 for n in settle["changes"].values()), f"run {settle_run}: {settle['changes']}"


def test_the_boxes_converge_twice_with_nothing_left_to_change(drilled):
    assert drilled.error is None, drilled.error
    for host in HOSTS:
        runs = drilled.hosts[host].runs
        assert runs[1]["failed"] == 0 and runs[1]["blocked"] == 0, drilled.hosts[host].failures
        assert runs[2]["changes"] == 0 and runs[2]["failed"] == 0, drilled.hosts[host].failures


def test_a_new_slack_channel_reaches_the_running_alertmanager(drilled):
    entry = _drill(drilled, "alert-slack-channel")
    _changed_then_settled(entry, VPS, f"{VPS}-files-alertmanager")
    seen = entry["observation"]
    assert seen["running_config_posts_to_slack"], seen
    assert not seen["alertmanager_restarted"], "Alertmanager was restarted instead of reloaded"


def test_a_failed_backup_is_mailed_and_posted_to_slack_naming_the_job(drilled):
    seen = _drill(drilled, "alert-delivery")["observation"]
    assert seen["backup_exit"] != 0
    assert [m["to"] for m in seen["mail"]] and all(m["to"] == OLD_EMAIL for m in seen["mail"]), seen["mail"]
    assert any(m["names_job"] for m in seen["mail"]), seen["mail"]
    assert all(m["auth"] == "apikey" for m in seen["mail"]), seen["mail"]
    assert seen["webhook"] and any(p["names_job"] for p in seen["webhook"]), seen["webhook"]


def test_a_new_alert_address_reaches_the_running_alertmanager(drilled):
    entry = _drill(drilled, "alert-emails")
    _changed_then_settled(entry, VPS, f"{VPS}-files-alertmanager")
    seen = entry["observation"]
    assert seen["running_config_names_new"] and not seen["running_config_names_old"], seen
    assert seen["recipients"] == [NEW_EMAIL], seen
    assert not seen["alertmanager_restarted"], "Alertmanager was restarted instead of reloaded"


def test_a_removed_egress_provider_is_refused_by_the_running_proxy(drilled):
    entry = _drill(drilled, "egress-provider-removed")
    _changed_then_settled(entry, EDGE, "pencom-staging-edge-files-egress-proxy")
    seen = entry["observation"]
    assert seen["proxy_before"]["connect"] == 200, seen["proxy_before"]
    assert seen["removed"]["connect"] == 403, seen["removed"]
    assert seen["denied_in_access_log"] > 0
    assert seen["kept_same_port"]["connect"] == 200, seen["kept_same_port"]
    assert seen["apt_mirror"]["status"] == 200, seen["apt_mirror"]


def test_a_reissued_certificate_is_served_by_the_running_postgres(drilled):
    entry = _drill(drilled, "postgres-certificate")
    _changed_then_settled(entry, VPS, f"{VPS}-secrets-postgres")
    (_, apply), _ = sorted(entry["runs"].items())
    # Only the step that holds the new pair changed: the CA and pg_hba.conf did not move.
    assert f"{VPS}-files-postgres" not in apply["changed_steps"], apply["changed_steps"]
    seen = entry["observation"]
    assert seen["new_serial"] != seen["old_serial"]
    assert int(seen["served_serial"], 16) == int(seen["new_serial"], 16), seen


@pytest.mark.parametrize("name", [name for name, _, _ in CHANGE_DRILLS])
def test_only_the_services_that_depend_on_the_change_restart(drilled, name):
    """On every box of the lab, the services restarted or recreated by the drill's converges are
    exactly those derived from its change (``rehearsal.restarts``), and the derivation agrees
    with the hand-written cross-check."""
    restarted = _drill(drilled, name)["restarts"]
    assert "error" not in restarted, restarted
    wrong = {host: {"extra": seen["extra"], "missing": seen["missing"]}
             for host, seen in restarted.items() if seen["extra"] or seen["missing"]}
    assert not wrong, f"{name}: {wrong}; all: {restarted}"
    expected = {host: set(seen["expected"]) for host, seen in restarted.items() if seen["expected"]}
    assert expected == EXPECTED_RESTARTS[name], restarted
