"""The off-host archive of admin sessions (components/hostsetup/session_archive.py) with the real
tools: rsyslogd writes the spool, the uploader's bash script runs the real rclone against a real
S3 server (moto's, on loopback) whose bucket has an object lock, as R2's bucket lock is emulated
on the lab. The lab proves the same path on a converged host (tests/rehearsal/)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components import hostsetup
from components.hostsetup.session_archive import (render_archive_environment, render_archive_script,
                                                  render_archive_spool, render_archive_units)
from rehearsal.services.processes import lock_bucket
from tests.conftest import require_root, require_tool
from tests.test_session_logging import (RECORD, Rsyslogd, _check, _free_port, _wait_for, collector_tls,
                                        stop_process)

pytestmark = pytest.mark.realtool

BUCKET, PREFIX = "kro-staging-backups-sessions", "kro-staging"
KEY_ID, SECRET = "AKIDSESSIONARCHIVE", "not-a-real-secret-only-for-moto"


def _minute(delta_minutes: int = 0) -> str:
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=delta_minutes)
    return now.strftime("%Y%m%dT%H%MZ.log")


# --- the spool, written by the real rsyslogd ---------------------------------------------------

def test_the_spool_drop_in_passes_rsyslogd_n1_alone_and_with_the_archiving_collector(tmp_path):
    for body in (render_archive_spool(str(tmp_path / "spool")),
                 hostsetup.render_session_collector("127.0.0.1", archive=True) + render_archive_spool()):
        config = tmp_path / "rsyslog.conf"
        config.write_text(f'global(workDirectory="{tmp_path}")\n' + body)
        result = _check(config)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_hosts_own_session_lines_go_to_the_current_minutes_spool_file_and_nothing_else(tmp_path):
    require_root("rsyslogd binds its socket and writes as root")
    spool = tmp_path / "spool"
    sock = tmp_path / "log.sock"
    rsyslogd = Rsyslogd(tmp_path / "host", "\n".join([
        'module(load="imuxsock" SysSock.Use="off")',
        f'input(type="imuxsock" Socket="{sock}" CreatePath="on")',
        render_archive_spool(str(spool))]))
    try:
        assert _wait_for(sock.exists)
        before = _minute()
        subprocess.run(["logger", "-u", str(sock), "-p", "local6.info", "-t", "audisp-syslog", RECORD], check=True)
        subprocess.run(["logger", "-u", str(sock), "-p", "auth.info", "-t", "sshd",
                        "Accepted publickey for ops from 10.8.0.2 port 50000 ssh2: ID engineer@example.com"], check=True)
        subprocess.run(["logger", "-u", str(sock), "-p", "auth.info", "-t", "sshd-session",
                        "Accepted publickey for ops from 10.8.0.2 port 50001 ssh2: ID newer@example.com"], check=True)
        subprocess.run(["logger", "-u", str(sock), "-p", "user.info", "-t", "cron", "not a session"], check=True)
        assert _wait_for(lambda: sum(len(f.read_text().splitlines()) for f in spool.glob("*.log")) >= 3)
        time.sleep(1)
    finally:
        rsyslogd.stop()
    files = sorted(spool.glob("*.log"))
    assert [f.name for f in files] in ([before], [before, _minute()]), files
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    lines = "".join(f.read_text() for f in files).splitlines()
    assert len(lines) == 3, lines  # OpenSSH 9.8 and later log logins as sshd-session
    stamp, sender, _host, tag, *_ = lines[0].split(" ")
    assert datetime.datetime.fromisoformat(stamp) and sender == "127.0.0.1" and tag == "audisp-syslog:", lines[0]
    assert 'a1="/etc/shadow"' in lines[0] and "ID engineer@example.com" in lines[1] and "ID newer@" in lines[2]


def test_an_archiving_collector_spools_what_another_host_sends(tmp_path):
    """A host's forwarding drop-in, over TLS, to a collector rendered with ``archive=True`` and
    the spool's drop-in: the record is in the collector's log and in its spool."""
    require_root("rsyslogd writes its queue and binds as root")
    tls, _ = collector_tls(tmp_path / "tls")
    port, logs, spool, sock = _free_port(), tmp_path / "logs", tmp_path / "spool", tmp_path / "host.sock"
    collector = Rsyslogd(tmp_path / "collector", hostsetup.render_session_collector(
        "127.0.0.1", port=port, log_dir=str(logs), tls_dir=str(tls), archive=True) + render_archive_spool(str(spool)))
    host = None
    try:
        assert _wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        host = Rsyslogd(tmp_path / "host", "\n".join([
            'module(load="imuxsock" SysSock.Use="off")', f'input(type="imuxsock" Socket="{sock}" CreatePath="on")',
            hostsetup.render_session_forwarding("127.0.0.1", "sessions.test", port=port, ca_file=str(tls / "ca.pem"),
                                                queue_name="archive-test")]))
        assert _wait_for(sock.exists)
        subprocess.run(["logger", "-u", str(sock), "-p", "local6.info", "-t", "audisp-syslog", RECORD], check=True)
        assert _wait_for(lambda: any("/etc/shadow" in f.read_text() for f in spool.glob("*.log")), seconds=20), \
            (tmp_path / "collector" / "stderr").read_text()
    finally:
        if host:
            host.stop()
        collector.stop()
    assert "/etc/shadow" in (logs / "127.0.0.1.log").read_text()


# --- the uploader, with the real rclone against a real S3 server ----------------------------

class S3Server:
    """moto's S3 server on loopback; its bucket has an object lock (COMPLIANCE, one day), made
    by the lab's own emulation of R2's bucket lock (``rehearsal.services.processes.lock_bucket``)."""

    def __init__(self, directory: Path):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        moto = require_tool("moto_server", "pip: moto[server] (requirements-dev.txt)")
        self.log = (directory / "moto.log").open("w")
        self.process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        assert _wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", self.port)) == 0)
        import boto3

        self.client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID,
                                   aws_secret_access_key=SECRET, region_name="us-east-1")
        lock_bucket(self.endpoint, None, BUCKET, 1)  # as the lab's S3 stand-in does

    def keys(self) -> dict[str, bytes]:
        listed = self.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@pytest.fixture
def s3(tmp_path):
    server = S3Server(tmp_path)
    yield server
    server.stop()


def _upload(tmp_path: Path, spool: Path, endpoint: str) -> tuple[subprocess.CompletedProcess, dict[str, float]]:
    """One run of the rendered uploader with the rendered EnvironmentFile (read as systemd would:
    each value in double quotes), returning its result and the metrics it wrote."""
    require_tool("rclone", "Debian package rclone")
    textfile = tmp_path / "archive.prom"
    script = tmp_path / "upload.sh"
    script.write_text(render_archive_script(str(spool), str(textfile)))
    environment = render_archive_environment(endpoint, BUCKET, PREFIX, KEY_ID, SECRET)
    env = {**{k: v.strip('"') for k, v in (line.split("=", 1) for line in environment.splitlines())},
           "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=180)
    metrics = {}
    if textfile.exists():
        metrics = {line.split()[0]: float(line.split()[1]) for line in textfile.read_text().splitlines()
                   if line and not line.startswith("#")}
    return result, metrics


def _spool(tmp_path: Path, files: dict[str, str]) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    for name, text in files.items():
        (spool / name).write_text(text)
    return spool


def test_ended_minutes_are_uploaded_then_removed_and_the_current_minute_stays(tmp_path, s3):
    old, last, current = _minute(-3), _minute(-1), _minute()
    spool = _spool(tmp_path, {old: "old record\n", last: "last minute's record\n", current: "still being written\n"})
    result, metrics = _upload(tmp_path, spool, s3.endpoint)
    assert result.returncode == 0, result.stderr
    expected = {f"{PREFIX}/{old}": b"old record\n", f"{PREFIX}/{last}": b"last minute's record\n"}
    if _minute() != current:  # the minute turned before the run looked: that file had ended too
        assert s3.keys() in (expected, {**expected, f"{PREFIX}/{current}": b"still being written\n"})
        return
    assert s3.keys() == expected
    assert sorted(p.name for p in spool.rglob("*.log")) == [current]
    assert metrics["platform_session_archive_pending_files"] == 0  # the current minute is not late
    assert abs(metrics["platform_session_archive_last_success_timestamp_seconds"] - time.time()) < 120


def test_an_unreachable_archive_keeps_every_file_and_reports_them(tmp_path, s3):
    names = [_minute(-3), _minute(-2)]  # ended, whatever the clock does meanwhile
    spool = _spool(tmp_path, dict(zip(names, ("a\n", "b\n"))))
    first, metrics = _upload(tmp_path, spool, f"http://127.0.0.1:{_free_port()}")
    assert first.returncode != 0
    assert len(list(spool.rglob("*.log"))) == 2 and s3.keys() == {}
    assert metrics["platform_session_archive_pending_files"] == 2
    assert metrics["platform_session_archive_last_success_timestamp_seconds"] == 0
    # The next run, with the archive back, sends them all: nothing was lost.
    second, metrics = _upload(tmp_path, spool, s3.endpoint)
    assert second.returncode == 0, second.stderr
    assert set(s3.keys()) == {f"{PREFIX}/{n}" for n in names}
    assert metrics["platform_session_archive_pending_files"] == 0


def test_an_archived_minute_is_never_replaced_by_a_different_file(tmp_path, s3):
    """``--immutable``: a spool file whose object exists with other content fails the run and
    stays on the host (an intruder cannot launder a minute by re-uploading it)."""
    name = _minute(-5)
    body = b"the real record\n"
    s3.client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}", Body=body,
                          ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode())
    spool = _spool(tmp_path, {name: "a forged record\n"})
    result, metrics = _upload(tmp_path, spool, s3.endpoint)
    assert result.returncode != 0
    assert s3.keys() == {f"{PREFIX}/{name}": b"the real record\n"}
    assert metrics["platform_session_archive_pending_files"] == 1


def test_the_hosts_credentials_cannot_delete_an_archived_record(tmp_path, s3):
    key = f"{PREFIX}/{_minute(-2)}"
    spool = _spool(tmp_path, {key.split("/", 1)[1]: "evidence\n"})
    result, _ = _upload(tmp_path, spool, s3.endpoint)
    assert result.returncode == 0, result.stderr
    version = s3.client.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"][0]["VersionId"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        s3.client.delete_object(Bucket=BUCKET, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3.client.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read() == b"evidence\n"


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze", "Debian package systemd")
    for name, text in render_archive_units().items():
        (tmp_path / name).write_text(text.replace("/usr/local/sbin/platform-session-archive", "/bin/true")
                                     .replace("EnvironmentFile=/etc/platform/session-archive/rclone.env",
                                              f"EnvironmentFile=-{tmp_path}/none.env"))
    result = subprocess.run([analyze, "verify", *(str(p) for p in sorted(tmp_path.glob("*.service")))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    timer = render_archive_units()["platform-session-archive.timer"]
    calendar = subprocess.run([analyze, "calendar", "--iterations=2", timer.split("OnCalendar=")[1].split("\n")[0]],
                              capture_output=True, text=True)
    assert calendar.returncode == 0 and calendar.stdout.count(":30 UTC") + calendar.stdout.count(":30") >= 2, calendar.stdout


def test_the_script_passes_shellcheck(tmp_path):
    shellcheck = require_tool("shellcheck", "Debian package shellcheck")
    script = tmp_path / "upload.sh"
    script.write_text(render_archive_script())
    result = subprocess.run([shellcheck, "-s", "bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout



def test_the_current_minute_alone_is_not_pending(tmp_path, s3):
    """rsyslog is still writing it: a host with an active session is not late."""
    current = _minute()
    spool = _spool(tmp_path, {current: "being written\n"})
    result, metrics = _upload(tmp_path, spool, s3.endpoint)
    assert result.returncode == 0, result.stderr
    if _minute() == current:
        assert metrics["platform_session_archive_pending_files"] == 0 and s3.keys() == {}


def test_a_minute_that_comes_again_waits_beside_the_first_and_both_are_archived(tmp_path, s3):
    """The clock stepped back: the first file of the minute still waits in ready/ (its upload
    failed), and rsyslog wrote that minute again. Neither replaces the other."""
    name = _minute(-4)
    spool = _spool(tmp_path, {name: "first pass\n"})
    failed, _ = _upload(tmp_path, spool, f"http://127.0.0.1:{_free_port()}")
    assert failed.returncode != 0 and (spool / "ready" / name).read_text() == "first pass\n"
    (spool / name).write_text("second pass\n")
    result, metrics = _upload(tmp_path, spool, s3.endpoint)
    assert result.returncode == 0, result.stderr
    archived = s3.keys()
    assert archived[f"{PREFIX}/{name}"] == b"first pass\n"
    again = [k for k in archived if k != f"{PREFIX}/{name}"]
    assert len(again) == 1 and again[0].startswith(f"{PREFIX}/{name[:-len('Z.log')]}Z-") and archived[again[0]] == b"second pass\n"
    assert metrics["platform_session_archive_pending_files"] == 0
