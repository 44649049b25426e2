"""On-box drills of what goes wrong (issue #15): a change a service rejects is not installed and
is retried, a new route reaches the running nginx and blackbox exporter, and a box that stops
answering or a restore test that fails pages someone through the stack's own Prometheus and
Alertmanager.

On the shared staging lab (``staging_rehearsal``), after tests/rehearsal/test_drills.py
(``SHARED_LAB_ORDER``): the boxes run its last stack file and its re-issued certificate. In order:

1. ``new-route``: the stack file plus a route for V-EdFinance (``drill-api.v-edfinance.com`` to
   api-dev), converged onto its VPS: the lab's DNS answers the new name with the VPS' address
   (as the stack's DNS record would), nginx serves it with a certificate the lab's ACME issued
   (a client that verifies it gets api-dev's answer), and the VPS' Prometheus asks its
   blackbox exporter to probe it, with the result an existing route gets.
2. ``sshd-rejected``: the VPS' sshd drop-in changed in the step's rendered script (MaxAuthTries
   3 -> 4) plus a line ``sshd -t`` rejects. No key of the stack renders a rejected drop-in (the
   config boundary refuses bad values), so the drill edits the rendered step, as a faulty
   release of the program would. The run fails at that step, naming the file and the check;
   the previous drop-in is in place byte for byte, ``sshd -t`` passes, sshd still admits the
   deploy user. With the rejected line removed, the next run applies the change (sshd's
   effective MaxAuthTries is 4); the stack's own drop-in then goes back, and a further run
   reports 0 changes.
3. ``host-down``: Pencom's data node is frozen (``docker pause`` of its box: every process
   stops, as a hung host looks to its scraper); the edge's Prometheus, which scraped its
   node-exporter a moment before, fires HostDown after its 5 minutes, and Alertmanager mails it
   through the lab's SMTP sink naming the node. The box is thawed afterwards.
4. ``restore-test-failed``: the V-EdFinance Redis restore test runs with the lab's S3 stopped:
   it fails, its metric says so, RestoreTestFailed fires in the VPS' Prometheus and its mail
   names the job. S3 is started again.

Each drill records what it saw in ``report.drills``; the tests judge it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.rehearsal.test_drills import EDGE, VPS, container, mails, sh, stack_files, wait_for

pytestmark = pytest.mark.rehearsal

NEW_HOST = "drill-api.v-edfinance.com"
NEW_ROUTE = {"host": NEW_HOST, "service": "api-dev"}
SIBLING_HOST = "api-dev.v-edfinance.com"   # a route the VPS served before, to the same service
DATA = "pencom-staging-data"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-platform.conf"
REJECTED_LINE = "DrillRejectedOption yes"
RESTORE_JOB = f"{VPS}-redis"
HOSTDOWN_TIMEOUT_S = 1200   # HostDown's 5 minutes, the scrape and rule intervals, the mail


def prometheus_api(lab, box: str, stack: str, path: str) -> dict:
    """The answer of the stack's Prometheus on ``box`` (its own loopback, entered through the
    container's network namespace, so no publishing rule is involved)."""
    cid = container(lab, box, stack, "prometheus")
    pid = sh(lab, box, f"docker inspect -f '{{{{.State.Pid}}}}' {cid}").strip()
    out = sh(lab, box, f"nsenter -t {pid} -n curl -sf -m 20 {shlex.quote('http://127.0.0.1:9090' + path)}")
    return json.loads(out)


def series_naming(lab, box: str, stack: str, query: str, name: str) -> list[dict]:
    """The results of ``query`` one of whose label values names ``name``."""
    from urllib.parse import quote

    answer = prometheus_api(lab, box, stack, f"/api/v1/query?query={quote(query)}")
    return [r for r in answer["data"]["result"] if any(name in v for v in r["metric"].values())]


def firing(lab, box: str, stack: str, alertname: str, name: str) -> list[dict]:
    alerts = prometheus_api(lab, box, stack, "/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == alertname and a["state"] == "firing"
            and any(name in v for v in a["labels"].values())]


def harness_docker(lab, *args: str) -> subprocess.CompletedProcess:
    from rehearsal.netns import docker_cli

    return subprocess.run([docker_cli(), "-H", lab.harness_docker_host, *args], capture_output=True, text=True,
                          timeout=120)


# --- 1. a new route -----------------------------------------------------------------------------

def route_stack_file(tmp: Path) -> Path:
    """test_drills' last stack file (the boxes run it) plus the new route."""
    doc = yaml.safe_load(stack_files(tmp)["egress"].read_text())
    doc = copy.deepcopy(doc)
    doc["config"]["platform:vedfinance"]["routes"].append(dict(NEW_ROUTE))
    path = tmp / "Pulumi.staging-route.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def answer_new_name(services) -> str:
    """The lab's DNS answers the new name with the VPS' address (what the stack's A record does
    in production); dnsmasq reads its names at start, so it is started again."""
    address = services.plan.zone[SIBLING_HOST]
    services.plan = services.plan.with_names({NEW_HOST: address})
    services.stop_service("dns")
    services.start_service("dns")
    return address


def observe_route(ctx, address: str) -> dict:
    lab, services = ctx.lab, ctx.services
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as roots:
        roots.write(services.acme_roots_pem)
        roots.flush()
        # An outside client: the lab's namespace, the name resolved as DNS does, the chain
        # verified against the lab ACME's roots and the name against the certificate.
        probe = lab.run_in_netns(["curl", "-s", "-o", "/dev/null", "-m", "20", "-w", "%{http_code} %{ssl_verify_result}",
                                  "--cacert", roots.name, "--resolve", f"{NEW_HOST}:443:{address}",
                                  f"https://{NEW_HOST}/"], text=True)
    code, verify = (probe.stdout.split() + ["000", "-1"])[:2]
    config = prometheus_api(lab, VPS, VPS, "/api/v1/status/config")["data"]["yaml"]

    def probed() -> list[dict]:
        return series_naming(lab, VPS, VPS, 'probe_success{job="blackbox-http"}', NEW_HOST)

    new = wait_for(f"probe_success of {NEW_HOST}", probed, timeout=300, every=10)
    sibling = series_naming(lab, VPS, VPS, 'probe_success{job="blackbox-http"}', SIBLING_HOST)
    return {"status": int(code), "ssl_verify_result": int(verify), "curl_exit": probe.returncode,
            "prometheus_config_names_new_host": f"https://{NEW_HOST}" in config,
            "probe_success": [r["value"][1] for r in new],
            "sibling_probe_success": [r["value"][1] for r in sibling]}


# --- 2. an sshd drop-in that sshd -t rejects -------------------------------------------------------

def _sshd_step(doc: dict) -> dict:
    steps = [s for s in doc["steps"] if s["host"] == VPS and s["kind"] == "command"
             and SSHD_DROPIN in (s["inputs"].get("stdin") or "")]
    assert len(steps) == 1, [s["name"] for s in steps]
    return steps[0]


def _plan_with(base: dict, stdin: str, path: Path) -> Path:
    from rehearsal.capture import StackCapture
    from rehearsal.rehearse import write_plan

    doc = copy.deepcopy(base)
    _sshd_step(doc)["inputs"]["stdin"] = stdin
    write_plan(StackCapture.from_json(doc), path)
    return path


def _deploy_login(held) -> dict:
    """An SSH login as the deploy user from the lab's namespace (the stack's admin source)."""
    host = held.lab_capture.hosts[VPS]
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(host.private_key)
        done = held.lab.run_in_netns(["ssh", "-i", str(key), "-p", str(host.port), "-o", "BatchMode=yes",
                                      "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                      "-o", "ConnectTimeout=20", f"{host.user}@{host.address}", "id -un"],
                                     text=True, timeout=60)
    return {"exit": done.returncode, "user": done.stdout.strip(), "stderr": done.stderr[-300:]}


def _box_state(lab) -> dict:
    return {"sha256": hashlib.sha256(sh(lab, VPS, f"cat {SSHD_DROPIN}").encode()).hexdigest(),
            "max_auth_tries": sh(lab, VPS, "sshd -T 2>/dev/null | awk '$1 == \"maxauthtries\" {print $2}'",
                                 check=False).strip(),
            "sshd_t_exit": lab.exec(VPS, ["sshd", "-t"], timeout=60).returncode,
            "pending": sh(lab, VPS, "ls /var/lib/platform/pending 2>/dev/null | grep -c sshd_config || true",
                          check=False).strip()}


def sshd_drill(held, base_plan: Path, workdir: Path) -> dict:
    from rehearsal.rehearse import run_converge

    lab = held.lab
    base = json.loads(base_plan.read_text())
    step = _sshd_step(base)
    original = step["inputs"]["stdin"]
    assert original.count("MaxAuthTries 3\n") == 1, "the drop-in's MaxAuthTries line is not where expected"
    changed = original.replace("MaxAuthTries 3\n", "MaxAuthTries 4\n")
    rejected = changed.replace("MaxAuthTries 4\n", f"MaxAuthTries 4\n{REJECTED_LINE}\n")
    seen: dict = {"step": step["name"], "before": _box_state(lab), "runs": {}}
    for label, stdin, expect_changes in (("rejected", rejected, True), ("cause_removed", changed, True),
                                         ("stack_drop_in_back", original, True), ("settled", original, False)):
        plan = _plan_with(base, stdin, workdir / f"plan-sshd-{label}.json")
        held.last_run += 1
        results = run_converge(lab, plan, held.workdir, held.last_run, held.workers, expect_changes)
        held.report.add_results(held.last_run, results)
        mine = next(r for r in results if r["name"] == step["name"])
        seen["runs"][label] = {
            "step_status": mine["status"], "step_changes": mine["changes"],
            "step_said": " ".join([mine.get("error") or "", *mine.get("tail", [])])[-2000:],
            "failed": sorted(r["name"] for r in results if r["status"] in ("failed", "changed")),
            "changes": sum(r["changes"] or 0 for r in results if r["host"] == VPS),
            "box": _box_state(lab), "login": _deploy_login(held)}
    return seen


# --- 3. a host that stops answering ---------------------------------------------------------------

def host_down_drill(held) -> dict:
    lab, services = held.lab, held.lab_services
    addresses = set(sh(lab, DATA, "hostname -I").split())
    targets = prometheus_api(lab, EDGE, EDGE, "/api/v1/targets?state=active")["data"]["activeTargets"]
    node = [t for t in targets if t["labels"].get("job") == "node"
            and t["labels"].get("instance", "").rsplit(":", 1)[0] in addresses]
    assert len(node) == 1, f"the edge's Prometheus has no node target of {DATA} ({sorted(addresses)}): {targets}"
    instance = node[0]["labels"]["instance"]
    seen = {"instance": instance, "health_before": node[0]["health"],
            "mails_before": len(mails(services, "HostDown", instance))}
    started = time.monotonic()
    paused = harness_docker(lab, "pause", DATA)
    assert paused.returncode == 0, paused.stderr
    try:
        mail = wait_for(f"HostDown of {instance} mailed",
                        lambda: mails(services, "HostDown", instance)[seen["mails_before"]:],
                        timeout=HOSTDOWN_TIMEOUT_S, every=10)
        seen["seconds_to_mail"] = round(time.monotonic() - started, 1)
        seen["firing"] = [a["labels"] for a in firing(lab, EDGE, EDGE, "HostDown", instance)]
        seen["mail"] = [{"to": m["to"], "subject": m["subject"], "names_instance": instance in m["text"]}
                        for m in mail]
    finally:
        resumed = harness_docker(lab, "unpause", DATA)
        seen["unpause_exit"] = resumed.returncode
    seen["box_answers_after"] = lab.exec(DATA, ["true"], timeout=60).returncode == 0
    return seen


# --- 4. a restore test that fails -------------------------------------------------------------------

def restore_test_drill(held) -> dict:
    lab, services = held.lab, held.lab_services
    seen = {"mails_before": len(mails(services, "RestoreTestFailed", RESTORE_JOB))}
    started = time.monotonic()
    services.stop_service("s3")
    try:
        run = lab.exec(VPS, ["systemctl", "start", f"platform-restore-test-{RESTORE_JOB}.service"], timeout=900)
    finally:
        services.start_service("s3")
    seen["unit_exit"] = run.returncode
    seen["metrics"] = sh(lab, VPS, f"cat /var/lib/prometheus/node-exporter/restore-test-{RESTORE_JOB}.prom "
                                   f"/var/lib/node-exporter/textfile/restore-test-{RESTORE_JOB}.prom 2>/dev/null",
                         check=False)
    mail = wait_for(f"RestoreTestFailed of {RESTORE_JOB} mailed",
                    lambda: mails(services, "RestoreTestFailed", RESTORE_JOB)[seen["mails_before"]:])
    seen["seconds_to_mail"] = round(time.monotonic() - started, 1)
    seen["firing"] = [a["labels"] for a in firing(lab, VPS, VPS, "RestoreTestFailed", RESTORE_JOB)]
    seen["mail"] = [{"to": m["to"], "subject": m["subject"], "names_job": RESTORE_JOB in m["text"]} for m in mail]
    return seen


# --- the lab -------------------------------------------------------------------------------------

def _guarded(report, name: str, drill) -> None:
    started = time.monotonic()
    try:
        report.drills[name] = {"observation": drill()}
    except Exception as exc:  # noqa: BLE001 - a drill's failure is its report entry
        report.drills[name] = {"error": f"{type(exc).__name__}: {exc}"}
    report.drills[name]["seconds"] = round(time.monotonic() - started, 1)
    print(f"drill {name}: {json.dumps(report.drills[name], default=str)[:3000]}")


@pytest.fixture(scope="module")
def failures(staging_rehearsal, tmp_path_factory):
    from rehearsal.rehearse import Drill

    held = staging_rehearsal
    assert held.report.error is None, held.report.text()
    tmp = tmp_path_factory.mktemp("drill-failures")
    address = answer_new_name(held.lab_services)
    # Nothing re-issued: the certificate test_drills re-issued stays as the boxes have it (the
    # capture's memory answers it again), so only the route's steps change.
    held.drill(Drill("new-route", lambda ctx: observe_route(ctx, address), stack_file=route_stack_file(tmp),
                     hosts=[VPS]))
    print(f"drill new-route: {json.dumps(held.report.drills['new-route'], default=str)[:3000]}")
    _guarded(held.report, "sshd-rejected", lambda: sshd_drill(held, held.workdir / "plan-new-route.json", tmp))
    _guarded(held.report, "host-down", lambda: host_down_drill(held))
    _guarded(held.report, "restore-test-failed", lambda: restore_test_drill(held))
    out = Path(__file__).resolve().parents[2] / "out"
    out.mkdir(exist_ok=True)
    names = ("new-route", "sshd-rejected", "host-down", "restore-test-failed")
    (out / "drills-failures-report.json").write_text(
        json.dumps({n: held.report.drills[n] for n in names}, indent=1, default=str))
    return held.report


def _seen(report, name: str) -> dict:
    entry = report.drills[name]
    assert "error" not in entry, f"{name}: {entry['error']}"
    return entry["observation"]


def test_a_new_route_reaches_the_running_nginx_and_blackbox_exporter(failures):
    entry = failures.drills["new-route"]
    assert "error" not in entry, entry["error"]
    (_, apply), (_, settle) = sorted(entry["runs"].items())
    assert not apply["failed"] and apply["changes"][VPS] > 0, apply
    assert not settle["failed"] and settle["changes"][VPS] == 0, settle
    seen = entry["observation"]
    # A verifying client gets the app's answer (nginx's default server answers none of it).
    assert seen["ssl_verify_result"] == 0 and seen["curl_exit"] == 0, seen
    assert 200 <= seen["status"] < 500, seen
    assert seen["prometheus_config_names_new_host"], seen
    assert seen["probe_success"], seen
    # Probed as an existing route to the same service is.
    assert seen["sibling_probe_success"] and seen["probe_success"] == seen["sibling_probe_success"], seen


def test_an_sshd_drop_in_that_sshd_rejects_is_not_installed_and_the_step_fails_naming_it(failures):
    seen = _seen(failures, "sshd-rejected")
    run = seen["runs"]["rejected"]
    assert run["step_status"] == "failed", run
    assert SSHD_DROPIN in run["step_said"] and "sshd -t" in run["step_said"], run["step_said"]
    assert "previous version is back in place" in run["step_said"], run["step_said"]
    # The previous drop-in, byte for byte; sshd's configuration passes its check; no pending
    # copy is left; the deploy user still gets in.
    assert run["box"]["sha256"] == seen["before"]["sha256"], run["box"]
    assert run["box"]["sshd_t_exit"] == 0 and run["box"]["pending"] == "0", run["box"]
    assert run["box"]["max_auth_tries"] == seen["before"]["max_auth_tries"] == "3", run["box"]
    assert run["login"] == {"exit": 0, "user": "deploy", "stderr": run["login"]["stderr"]}, run["login"]


def test_once_the_cause_is_removed_the_next_run_applies_the_step_and_then_settles(failures):
    seen = _seen(failures, "sshd-rejected")
    fixed = seen["runs"]["cause_removed"]
    assert fixed["step_status"] == "ok" and fixed["step_changes"] >= 1 and not fixed["failed"], fixed
    assert fixed["box"]["max_auth_tries"] == "4" and fixed["box"]["sshd_t_exit"] == 0, fixed["box"]
    assert fixed["login"]["exit"] == 0, fixed["login"]
    back = seen["runs"]["stack_drop_in_back"]
    assert back["step_status"] == "ok" and back["box"]["sha256"] == seen["before"]["sha256"], back
    settled = seen["runs"]["settled"]
    assert settled["changes"] == 0 and not settled["failed"], settled


def test_a_host_that_stops_answering_fires_host_down_and_is_mailed(failures):
    seen = _seen(failures, "host-down")
    assert seen["health_before"] == "up", seen
    assert seen["firing"], seen
    assert seen["mail"] and any(m["names_instance"] for m in seen["mail"]), seen["mail"]
    assert seen["unpause_exit"] == 0 and seen["box_answers_after"], seen


def test_a_failed_restore_test_fires_restore_test_failed_and_is_mailed_naming_the_job(failures):
    seen = _seen(failures, "restore-test-failed")
    assert seen["unit_exit"] != 0, seen
    assert f'platform_restore_test_success{{job="{RESTORE_JOB}"}} 0' in seen["metrics"], seen["metrics"]
    assert seen["firing"], seen
    assert seen["mail"] and any(m["names_job"] for m in seen["mail"]), seen["mail"]
