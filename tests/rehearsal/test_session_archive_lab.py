"""The off-host archive of admin sessions (issue #22, part 2), proven on a real box: KRO's
staging droplet, rehearsed alone (its only SSH host, and its own monitoring host, so the records
must leave it for another place).

An engineer's key is signed by the lab's SSH certificate authority with ``scripts/ssh_cert.py``
for the principal ``oncall``; the engineer logs in as ``ops`` from the harness (staging's
break-glass admin address) and runs a marker command, with the audit hand-off emulated as in
tests/rehearsal/test_session_logs_lab.py (a box has no kernel audit). Then, as root on the box
(an intruder who took it over), the local records and the spool are erased, and the archived
object's locked version is deleted with the host's own credentials (read from its
EnvironmentFile).

Asserted on the lab's S3 stand-in, which created the bucket with an object lock as the program's
R2 bucket lock says (``rehearsal.services.locked_buckets``): the object
``kro-staging/<minute>Z.log`` holds sshd's login line naming the certificate's key ID and the
marker's record, uploaded within two minutes; the host's erase left it there, and its delete of
the locked version was refused. The uploader's metrics on the box say nothing is pending.

What the stand-in cannot prove: that the host's token reaches no other bucket (moto checks no
key), and R2's own answer to a plain delete (R2 refuses it; S3 adds a delete marker and keeps
the version, which is what is checked here).
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.rehearsal.ops_proofs import engineer_certificate
from tests.rehearsal.test_zero_downtime import require_lab, write_report

pytestmark = pytest.mark.rehearsal

BOX = "kro-staging"
SSH = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]

# Run in the lab's namespace by the harness's Python: every version of every object of the
# bucket (argv: endpoint address, CA file, bucket), as JSON; and a version delete (argv: ..., key,
# version id, access key id, secret) answering the S3 error code or "deleted".
READ = """
import json, sys, boto3
from botocore.config import Config
address, ca, bucket = sys.argv[1:4]
c = boto3.client("s3", endpoint_url="https://" + address, verify=ca, region_name="us-east-1",
                 aws_access_key_id="harness", aws_secret_access_key="harness",
                 config=Config(s3={"addressing_style": "path"}))
out = []
for v in c.list_object_versions(Bucket=bucket).get("Versions", []):
    body = c.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
    out.append({"key": v["Key"], "version": v["VersionId"], "latest": v["IsLatest"], "body": body.decode(errors="replace")})
print(json.dumps(out))
"""
DELETE = """
import sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
address, ca, bucket, key, version, key_id, secret = sys.argv[1:8]
c = boto3.client("s3", endpoint_url="https://" + address, verify=ca, region_name="us-east-1",
                 aws_access_key_id=key_id, aws_secret_access_key=secret,
                 config=Config(s3={"addressing_style": "path"}))
try:
    c.delete_object(Bucket=bucket, Key=key, VersionId=version)
    print("deleted")
except ClientError as exc:
    print(exc.response["Error"]["Code"])
"""


def _harness_python(held, script: str, *args: str, stdin: str | None = None) -> str:
    from rehearsal.services.tools import PYTHONPATH

    result = subprocess.run(held.lab.netns_argv([sys.executable, "-c", script, *args]), capture_output=True,
                            text=True, timeout=120, input=stdin, env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def archived(held, bucket: str, needles: list[str], *, within_s: float) -> tuple[list[dict], float]:
    """The bucket's object versions, polled until every needle is in one of them or ``within_s``
    seconds have passed; and the seconds it took."""
    services = held.lab_services
    started = time.monotonic()
    while True:
        versions = json.loads(_harness_python(held, READ, services.plan.addresses["s3"], str(services.ca_file), bucket))
        if all(any(n in v["body"] for v in versions) for n in needles) or time.monotonic() - started > within_s:
            return versions, round(time.monotonic() - started, 1)
        time.sleep(5)


def scraped(held, within_s: float = 90) -> dict:
    """What the stack's own Prometheus on the box holds of the uploader: the series
    ``platform_session_archive_last_run_timestamp_seconds`` (polled until scraped), whether the
    archive's rules are loaded, and the archive alerts pending or firing."""
    from urllib.parse import quote

    from tests.rehearsal.test_drills_failures import prometheus_api

    deadline = time.monotonic() + within_s
    while True:
        series = prometheus_api(held.lab, BOX, BOX, "/api/v1/query?query="
                                + quote("platform_session_archive_last_run_timestamp_seconds"))["data"]["result"]
        if series or time.monotonic() > deadline:
            break
        time.sleep(5)
    rules = [r["name"] for g in prometheus_api(held.lab, BOX, BOX, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    alerts = [a["labels"]["alertname"] for a in prometheus_api(held.lab, BOX, BOX, "/api/v1/alerts")["data"]["alerts"]]
    return {"series": series, "rules": sorted(r for r in rules if r.startswith("SessionArchive")),
            "alerts": sorted(a for a in alerts if a.startswith("SessionArchive"))}


def box(held, script: str) -> str:
    result = held.lab.exec(BOX, ["bash", "-c", script], timeout=120)
    return (result.stdout + result.stderr).decode(errors="replace")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    require_lab()
    from rehearsal.rehearse import Rehearsal

    work = tmp_path_factory.mktemp("session-archive")
    work.chmod(0o700)
    results: dict = {}
    started = time.monotonic()
    with Rehearsal("staging", products=["kro"], hosts=[BOX], checks=False) as held:
        results["error"] = held.report.error
        if held.report.error is None:
            results.update(_prove(held, work))
        write_report(results, "session-archive-report", started)
    return results


def _prove(held, work: Path) -> dict:
    # The bucket the lab's S3 stand-in created locked, from the program's R2BucketLock (the
    # capture is the whole stack's: every product's archive is locked there).
    bucket, = (b for b, _ in held.lab_services.plan.locked_buckets if b.startswith(f"{BOX}-"))
    host = held.lab_capture.hosts[BOX]
    identity = f"lab-archive-{secrets.token_hex(4)}@example.com"
    key, certificate = engineer_certificate(held, work, identity)
    marker = f"lab-archive-marker-{secrets.token_hex(6)}"
    record = (f'type=EXECVE msg=audit(lab): argc=3 a0="/usr/bin/printf" a1="%s\\n" a2="{marker}" '
              "(emulated: no kernel audit in a box)")
    command = (f"/usr/bin/printf '%s\\n' {marker}; "
               f"logger -p local6.info -t audisp-syslog {shlex.quote(record)}")
    login = subprocess.run(held.lab.netns_argv(["ssh", *SSH, "-i", str(key), "-o", f"CertificateFile={certificate}",
                                                "-p", str(host.port), f"ops@{host.address}", command]),
                           capture_output=True, text=True, timeout=60)
    logged_at = time.monotonic()
    versions, seconds = archived(held, bucket, [marker, identity], within_s=150)
    # The intruder, root on the host: the local records, the spool and the archive's object.
    erase = box(held, "rm -rf /var/spool/platform-sessions/* /var/log/auth.log /var/log/syslog; "
                      "journalctl --rotate --vacuum-time=1s >/dev/null 2>&1; "
                      "set -a; . /etc/platform/session-archive/rclone.env; set +a; "
                      "rclone delete --s3-no-check-bucket \"archive:$ARCHIVE_BUCKET/$ARCHIVE_PREFIX\" 2>&1; "
                      "echo rclone-delete-exit=$?; printf '%s\\n' \"$RCLONE_CONFIG_ARCHIVE_ACCESS_KEY_ID\" "
                      "\"$RCLONE_CONFIG_ARCHIVE_SECRET_ACCESS_KEY\" > /root/.archive-credentials")
    key_id, secret = box(held, "cat /root/.archive-credentials; rm -f /root/.archive-credentials").split()[:2]
    holding = [v for v in versions if marker in v["body"]]
    refused = [_harness_python(held, DELETE, held.lab_services.plan.addresses["s3"], str(held.lab_services.ca_file),
                               bucket, v["key"], v["version"], key_id, secret).strip() for v in holding]
    after, _ = archived(held, bucket, [marker, identity], within_s=0)
    return {"bucket": bucket, "login": (login.returncode, login.stdout.strip(), login.stderr[-500:]),
            "marker": marker, "identity": identity, "seconds_to_archive": seconds,
            "since_login": round(time.monotonic() - logged_at, 1), "versions": versions, "erase": erase[-1500:],
            "refused": refused, "after": after,
            "metrics": box(held, "cat /var/lib/prometheus/node-exporter/platform_session_archive.prom"),
            "prometheus": scraped(held),
            "timer": box(held, "systemctl is-enabled platform-session-archive.timer; "
                               "systemctl is-active platform-session-archive.timer")}


def test_the_session_logs_in_and_its_records_reach_the_locked_archive_within_two_minutes(archive):
    assert archive["error"] is None, archive["error"]
    assert archive["timer"].split() == ["enabled", "active"], archive["timer"]
    assert archive["login"][0] == 0 and archive["login"][1] == archive["marker"], archive["login"]
    bodies = [v for v in archive["versions"] if v["key"].startswith(f"{BOX}/") and v["key"].endswith("Z.log")]
    assert any(archive["marker"] in v["body"] for v in bodies), archive["versions"]
    assert any(archive["identity"] in v["body"] and "Accepted publickey for ops" in v["body"] for v in bodies), \
        archive["versions"]
    assert archive["seconds_to_archive"] <= 150, archive["seconds_to_archive"]


def test_the_host_cannot_erase_what_it_archived(archive):
    assert archive["error"] is None, archive["error"]
    assert archive["refused"] and all(code == "AccessDenied" for code in archive["refused"]), archive["refused"]
    # Every version that held the marker is still there, byte for byte.
    before = {(v["key"], v["version"]): v["body"] for v in archive["versions"] if archive["marker"] in v["body"]}
    after = {(v["key"], v["version"]): v["body"] for v in archive["after"]}
    assert before and all(after.get(k) == body for k, body in before.items()), (before, archive["after"])


def test_nothing_is_left_pending_on_the_host(archive):
    assert archive["error"] is None, archive["error"]
    metrics = dict(line.split() for line in archive["metrics"].splitlines() if line and not line.startswith("#"))
    assert float(metrics["platform_session_archive_last_success_timestamp_seconds"]) > 0, archive["metrics"]


def test_the_uploaders_metrics_reach_the_stacks_prometheus_and_its_rules(archive):
    """The seam from the uploader's textfile to an alert: node-exporter on the box exports it, the
    stack's Prometheus scrapes it, and the archive's three rules are loaded and quiet."""
    assert archive["error"] is None, archive["error"]
    promql = archive["prometheus"]
    assert promql["series"] and float(promql["series"][0]["value"][1]) > 0, promql
    assert promql["rules"] == ["SessionArchiveMissing", "SessionArchivePending", "SessionArchiveStale"], promql
    assert promql["alerts"] == [], promql
