"""Backup metrics reach the alerts through the real scrape.

The real backup script (restic against the moto S3 stand-in, as in test_backup_real) writes its
metrics under its own ``umask 077``, creating the textfile directory; the real node-exporter,
run as nobody (uid 65534, as in the stack's container), serves them; the real Prometheus, with
the scrape configuration and rules the stack renders (only the node target pointed at
loopback, and a one-second interval), scrapes them and evaluates the alerts, read back from its
HTTP API. Loopback only, ephemeral ports; every process is stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.backupscripts import render_backup_script, render_wal_ship_script
from components.prometheus import ScrapeTargets, render_prometheus_config, render_rules
from tests.conftest import require_root, require_tool
from tests.realtools import free_port, stop_all, wait_for_port
from tests.test_backup_real import JOB, _env, _job, _run, base, servers  # noqa: F401 - fixtures

pytestmark = pytest.mark.realtool

FAILING = "kro-test-failing"
WAL_FAILING = "kro-test-wal"
NEVER_RAN = "kro-test-never-ran"


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _alerts(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as response:
        return json.load(response)["data"]["alerts"]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_backup_alerts_follow_the_scraped_metrics_with_the_jobs_own_name(servers, base):
    exporter_bin = require_tool("prometheus-node-exporter", "Debian package prometheus-node-exporter")
    prometheus_bin = require_tool("prometheus", "Debian package prometheus")
    setpriv = require_tool("setpriv", "util-linux")
    require_root("running node-exporter as nobody needs root")
    # Stands for /var/lib: traversable by everyone; what is below it the backup script creates.
    root = Path(tempfile.mkdtemp(prefix="scrape", dir=base))
    root.chmod(0o755)
    textfile = root / "prometheus" / "node-exporter"
    work = root / "work"
    work.mkdir()

    ok_env = _env(servers, base, work, "kro-scrape")
    ok_env["TEXTFILE_DIR"] = str(textfile)
    result = _run(render_backup_script(_job()), ok_env, work, "backup.sh")
    assert result.returncode == 0, result.stderr
    failing_env = _env(servers, base, work, "kro-scrape-failing", job=FAILING)
    failing_env["TEXTFILE_DIR"] = str(textfile)
    failing_env["RESTIC_REPOSITORY"] = f"s3:http://127.0.0.1:{free_port()}/gone"
    assert _run(render_backup_script(_job(job=FAILING)), failing_env, work, "failing.sh").returncode != 0
    # A WAL ship that cannot reach R2 (received WAL present): its failed run must still report
    # what WALArchiveStalled compares (the RPO), or the alert never fires while shipping fails.
    wal_env = _env(servers, base, work, "kro-scrape-wal", job=WAL_FAILING)
    wal_env["TEXTFILE_DIR"] = str(textfile)
    wal_env["RESTIC_REPOSITORY"] = f"s3:http://127.0.0.1:{free_port()}/gone"
    (Path(wal_env["STATE_DIRECTORY"]) / "wal").mkdir()
    (Path(wal_env["STATE_DIRECTORY"]) / "wal" / "000000010000000000000001.partial").write_bytes(b"\0" * 64)
    ship = render_wal_ship_script(_job(job=WAL_FAILING, kind="pitr", rpo_minutes=1))
    assert _run(ship, wal_env, work, "ship.sh").returncode != 0

    exporter_port, prometheus_port = free_port(), free_port()
    config_dir = root / "prometheus-config"
    (config_dir / "rules").mkdir(parents=True)
    (config_dir / "prometheus.yml").write_text(render_prometheus_config(
        ScrapeTargets(node=[f"127.0.0.1:{exporter_port}"], alertmanager=f"127.0.0.1:{free_port()}"),
        scrape_interval="1s"))
    (config_dir / "rules" / "platform.yml").write_text(render_rules([JOB, FAILING, NEVER_RAN]))
    assert yaml.safe_load((config_dir / "prometheus.yml").read_text())["scrape_configs"][1]["job_name"] == "node"

    processes = []
    try:
        processes.append(subprocess.Popen(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", exporter_bin,
             f"--web.listen-address=127.0.0.1:{exporter_port}", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={textfile}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_for_port(exporter_port, processes[-1])
        processes.append(subprocess.Popen(
            [prometheus_bin, f"--config.file={config_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            cwd=config_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(prometheus_port, processes[-1], timeout=30)
        assert _until(lambda: _ready(prometheus_port)), "Prometheus did not become ready"

        scraped = _until(lambda: _query(prometheus_port, "platform_backup_success"))
        assert scraped, "no backup metric was scraped"
        # node-exporter could read what the backup wrote (as nobody), and no read error.
        assert not _query(prometheus_port, "node_textfile_scrape_error == 1")
        success = {s["metric"]["job"]: s["value"][1] for s in scraped}
        assert success == {JOB: "1", FAILING: "0"}, scraped
        assert not [s for s in scraped if "exported_job" in s["metric"]]

        # An evaluation that ran before the first scrape was ingested finds every job absent and
        # leaves a pending BackupMissing for each; the next one drops those. Settled means both.
        def settled():
            alerts = _alerts(prometheus_port)
            seen = {(a["labels"]["alertname"], a["labels"].get("job")) for a in alerts}
            missing = {job for name, job in seen if name == "BackupMissing"}
            return alerts if missing == {NEVER_RAN} and seen >= {
                ("BackupFailed", FAILING), ("WALArchiveStalled", WAL_FAILING)} else None

        alerts = _until(settled, timeout=60.0)
        assert alerts, _alerts(prometheus_port)
        by_name = {}
        for alert in alerts:
            by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
        failed = by_name["BackupFailed"]
        assert [(a["labels"]["job"], a["state"]) for a in failed] == [(FAILING, "firing")]
        assert failed[0]["annotations"]["summary"] == f"the last run of backup {FAILING} failed"
        assert [a["labels"]["job"] for a in by_name.get("BackupMissing", [])] == [NEVER_RAN]
        # The failed job never succeeded (its last success is 0): stale as well, rightly.
        assert [a["labels"]["job"] for a in by_name.get("BackupStale", [])] == [FAILING]
        assert [(a["labels"]["job"], a["state"]) for a in by_name["WALArchiveStalled"]] == [(WAL_FAILING, "firing")]
        # The healthy backup: in no alert at all, not even pending.
        assert not [a for a in alerts if JOB in a["labels"].values()], alerts
    finally:
        stop_all(processes)
