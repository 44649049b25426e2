"""Monitoring config rendered by pure functions, judged by promtool and amtool."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from components.prometheus import (AlertRoutes, ScrapeTargets, alert_rules, render_alertmanager_config,
                                   render_prometheus_config, render_rules)
from tests.conftest import require_tool

TARGETS = ScrapeTargets(node=["10.0.0.1:9100", "10.0.0.2:9100"], cadvisor=["10.0.0.1:8080"],
                        services={"core": ["10.0.0.2:4000"]},
                        probes=["https://api.krotrust.com/health", "https://app.krotrust.com/"])


@pytest.mark.realtool
def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    promtool = require_tool("promtool", "Debian package prometheus")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "platform.yml").write_text(render_rules())
    (tmp_path / "prometheus.yml").write_text(render_prometheus_config(TARGETS))
    config = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout + config.stderr
    rules = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules" / "platform.yml")],
                           capture_output=True, text=True)
    assert rules.returncode == 0 and f"{len(alert_rules())} rules found" in rules.stdout, rules.stdout + rules.stderr


@pytest.mark.realtool
def test_promtool_rejects_a_broken_rule(tmp_path):
    promtool = require_tool("promtool", "Debian package prometheus")
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "up =="}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0


@pytest.mark.realtool
@pytest.mark.parametrize("routes", [AlertRoutes(emails=["ops@example.com"]),
                                    AlertRoutes(slack_channel="#ops"),
                                    AlertRoutes(emails=["ops@example.com"], slack_channel="#ops")])
def test_alertmanager_config_passes_amtool(routes, tmp_path):
    amtool = require_tool("amtool", "Debian package prometheus-alertmanager")
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config(routes))
    result = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load(path.read_text())
    assert "s3cret" not in path.read_text() and "hooks.slack.com" not in path.read_text()
    assert document["route"]["routes"][0]["receiver"] == "critical"


@pytest.mark.fast
def test_alertmanager_needs_a_destination():
    with pytest.raises(ValueError, match="at least one destination"):
        render_alertmanager_config(AlertRoutes())


# Each alert: series that make it fire, and series that must leave it silent.
RULE_TESTS = [
    ("HostDown", 'up{job="node", instance="a"}', "0x20", "1x20", "10m"),
    ("DiskAlmostFull",
     'node_filesystem_avail_bytes{fstype="ext4", instance="a", mountpoint="/"}', "10x30", "50x30", "20m",
     'node_filesystem_size_bytes{fstype="ext4", instance="a", mountpoint="/"}', "100x30"),
    ("MemoryPressure", 'node_memory_MemAvailable_bytes{instance="a"}', "5x30", "50x30", "20m",
     'node_memory_MemTotal_bytes{instance="a"}', "100x30"),
    ("ContainerRestarting", 'container_start_time_seconds{id="/system.slice/docker-4f2a.scope", instance="a"}',
     "1+1x20", "1x20", "10m"),
    ("BackupStale", 'platform_backup_last_success_timestamp_seconds{job="kro-prod-db"}', "0x40",
     "100000+60x40", "27h"),
    ("BackupFailed", 'platform_backup_success{job="kro-prod-db"}', "0x5", "1x5", "2m"),
    ("RestoreTestFailed", 'platform_restore_test_success{job="kro-prod-db"}', "0x5", "1x5", "2m"),
    ("RestoreTestStale", 'platform_restore_test_last_run_timestamp_seconds{job="kro-prod-db"}', "0x12",
     "800000x12", "9d"),
    ("PITRCheckStale", 'platform_pitr_check_last_success_timestamp_seconds{job="pencom-prod-wal", repository="pitr-0"}',
     "0x20", "1000000x20", "16d"),
    ("PITRPruneStale", 'platform_pitr_prune_last_success_timestamp_seconds{job="pencom-prod-wal", repository="pitr-1"}',
     "0x20", "1000000x20", "16d"),
    ("PITRTestFailed", 'platform_pitr_test_success{job="pencom-prod-wal"}', "0x5", "1x5", "2m"),
    ("PITRTestStale", 'platform_pitr_test_last_run_timestamp_seconds{job="pencom-prod-wal"}', "0x12",
     "800000x12", "9d"),
    ("TLSCertificateExpiring", 'probe_ssl_earliest_cert_expiry{instance="https://x"}', "86400x200",
     "99999999x200", "2h"),
    ("InternalCertificateExpiring",
     'platform_certificate_expiry_timestamp_seconds{path="/srv/x/files/postgres/run/platform/ca.crt", instance="a"}',
     f"{20 * 86400}x200", f"{25 * 86400}x200", "2h"),
    ("EndpointDown", 'probe_success{job="blackbox-http", instance="https://x"}', "0x20", "1x20", "10m"),
    ("SessionArchivePending", 'platform_session_archive_pending_files{instance="a"}', "3x20", "0x20", "15m"),
    ("SessionArchiveMissing", 'platform_session_archive_last_run_timestamp_seconds', "_x30", "1+60x30", "20m"),
    ("SessionArchiveStale", 'platform_session_archive_last_run_timestamp_seconds{instance="a"}', "0x20",
     "0+60x20", "15m"),
]


# Timestamps in the series are seconds since the test's start, so staleness needs long steps.
INTERVALS = {"BackupStale": "1h", "RestoreTestStale": "1d", "PITRTestStale": "1d", "PITRCheckStale": "1d",
             "PITRPruneStale": "1d"}
# Alerts over several series each, tested on their own below.
MULTI_SERIES = {"WALArchiveStalled"}


def _series(values: str, rest: tuple, firing: bool):
    series = [{"series": values[0], "values": values[1] if firing else values[2]}]
    if rest:
        series.append({"series": rest[0], "values": rest[1]})
    return series


@pytest.mark.realtool
def test_every_alert_fires_when_it_should_and_stays_silent_otherwise(tmp_path):
    promtool = require_tool("promtool", "Debian package prometheus")
    assert {t[0] for t in RULE_TESTS} | MULTI_SERIES == {r["alert"] for r in alert_rules()}, "a test per alert"
    (tmp_path / "platform.yml").write_text(render_rules())
    tests = []
    for alert, series, fire, silent, at, *rest in RULE_TESTS:
        for firing in (True, False):
            tests.append({
                "interval": INTERVALS.get(alert, "1m"),
                "input_series": _series((series, fire, silent), tuple(rest), firing),
                "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                     "exp_alerts": [{}] if firing else []}],
            })
    # exp_alerts must list labels exactly; fill them from the rule and the series.
    rules = {r["alert"]: r for r in alert_rules()}
    for test in tests:
        for case in test["alert_rule_test"]:
            if case["exp_alerts"]:
                rule = rules[case["alertname"]]
                labels = {**rule["labels"], **_labels(test["input_series"][0]["series"])}
                summary = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)],
                                 rule["annotations"]["summary"])
                case["exp_alerts"] = [{"exp_labels": labels, "exp_annotations": {"summary": summary}}]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["platform.yml"], "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests.yml")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _labels(series: str) -> dict:
    name, _, rest = series.partition("{")
    labels = {}
    for part in rest.rstrip("}").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            labels[key.strip()] = value.strip().strip('"')
    return labels


@pytest.mark.fast
def test_droplets_and_public_hostnames_are_monitored_on_digitalocean():
    from synth.mockdata import mock_id
    from synth.state import State
    from tests.conftest import synth_once

    state = State(synth_once("prod"))
    for droplet in ("kro-prod-droplet", "giv-prod-ops-droplet"):
        droplet_id = mock_id("digitalocean:index/droplet:Droplet", droplet)
        alerts = [a for a in state.of_type("digitalocean:index/monitorAlert:MonitorAlert")
                  if a["inputs"]["entities"] == [droplet_id]]
        assert {a["inputs"]["type"] for a in alerts} == {
            "v1/insights/droplet/cpu", "v1/insights/droplet/memory_utilization_percent",
            "v1/insights/droplet/disk_utilization_percent"}
        assert all(a["inputs"]["alerts"]["emails"] == ["platform-alerts@krotrust.com"] for a in alerts)
    targets = {c["inputs"]["target"] for c in state.of_type("digitalocean:index/uptimeCheck:UptimeCheck")}
    assert targets == {"https://api.krotrust.com", "https://app.krotrust.com", "https://app2.krotrust.com",
                       "https://admin.krotrust.com", "https://api.krogiving.com", "https://www.krogiving.com",
                       "https://admin.krogiving.com"}
    alerts = state.of_type("digitalocean:index/uptimeAlert:UptimeAlert")
    assert len(alerts) == 3 * len(targets)
    expiry = [a["inputs"] for a in alerts if a["inputs"]["type"] == "ssl_expiry"]
    assert all(a["threshold"] == 14 and a["comparison"] == "less_than" for a in expiry)


@pytest.mark.fast
def test_an_environment_without_alert_destinations_is_rejected():
    from stacks.config import validate_stack_config
    from stacks.errors import ConfigError

    with pytest.raises(ConfigError, match="alerts need at least one destination"):
        validate_stack_config({"environment": '{"name": "x1", "admin_cidrs": ["198.51.100.1/32"], "alerts": {}}',
                               "products": "[]"})


# --- Grafana provisioning and dashboards ----------------------------------------------------------

@pytest.mark.realtool
def test_dashboards_have_a_datasource_and_a_query_promtool_parses_in_every_panel(tmp_path):
    """Structure checked here; each query parsed by promtool (as a recording rule's expression)."""
    from components.monitoring import DATASOURCE_UID, dashboards, render_grafana_datasource

    promtool = require_tool("promtool", "Debian package prometheus")
    boards = dashboards(["core", "payments"])
    assert {"hosts", "containers", "backups", "endpoints", "service-core", "service-payments"} == set(boards)
    provisioned = yaml.safe_load(render_grafana_datasource())["datasources"]
    assert [d["uid"] for d in provisioned] == [DATASOURCE_UID] and provisioned[0]["url"] == "http://prometheus:9090"
    records = []
    for name, board in boards.items():
        assert board["uid"] and board["title"] and board["panels"], name
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, (name, panel["title"])
            assert panel["type"] == "timeseries" and set(panel["gridPos"]) == {"h", "w", "x", "y"}
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID and target["expr"].strip()
                records.append({"record": f"dashboard:{name.replace('-', '_')}:{len(records)}", "expr": target["expr"]})
    rules = tmp_path / "dashboards.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": records}]}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout
    # The oracle catches a broken query.
    records[0]["expr"] = "sum(rate(node_cpu_seconds_total[5m])"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": records}]}))
    assert subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True).returncode != 0


@pytest.mark.fast
def test_service_dashboards_show_rate_errors_and_latency():
    from components.monitoring import dashboards

    panels = {p["title"]: p["targets"][0]["expr"] for p in dashboards(["core"])["service-core"]["panels"]}
    assert 'http_request_duration_seconds_count{job="core"}' in panels["Requests per second"]
    assert 'status_code=~"5.."' in panels["Error rate (5xx)"]
    assert panels["Latency p95"].startswith("histogram_quantile(0.95")


@pytest.mark.fast
def test_blackbox_probes_fail_a_site_that_is_not_served_over_tls():
    from components.monitoring import render_blackbox_config

    module = yaml.safe_load(render_blackbox_config())["modules"]["http_2xx"]
    assert module["prober"] == "http" and module["http"]["fail_if_not_ssl"] is True


@pytest.mark.realtool
def test_a_backup_job_that_never_reports_raises_an_alert(tmp_path):
    promtool = require_tool("promtool", "Debian package prometheus")
    (tmp_path / "platform.yml").write_text(render_rules(["pencom-prod-redis", "pencom-prod-files"]))
    other = {"series": 'platform_backup_last_success_timestamp_seconds{job="pencom-prod-files"}', "values": "0+3600x30"}
    present = {"series": 'platform_backup_last_success_timestamp_seconds{job="pencom-prod-redis"}', "values": "0+3600x30"}
    summary = "backup pencom-prod-redis has reported nothing for a day: is its timer installed and running?"
    tests = [
        {"interval": "1h", "input_series": [other], "alert_rule_test": [
            {"eval_time": "27h", "alertname": "BackupMissing", "exp_alerts": [
                {"exp_labels": {"severity": "critical", "job": "pencom-prod-redis"},
                 "exp_annotations": {"summary": summary}}]},
            {"eval_time": "20h", "alertname": "BackupMissing", "exp_alerts": []}]},
        {"interval": "1h", "input_series": [other, present], "alert_rule_test": [
            {"eval_time": "27h", "alertname": "BackupMissing", "exp_alerts": []}]},
    ]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["platform.yml"], "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests.yml")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _promtool_rule_tests(tmp_path, tests: list[dict]) -> None:
    promtool = require_tool("promtool", "Debian package prometheus")
    (tmp_path / "platform.yml").write_text(render_rules())
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({"rule_files": ["platform.yml"], "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests.yml")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _wal_series(job: str, *, last_success: str, newest: str, receiver_up: str, rpo_s: int) -> list[dict]:
    """The series a WAL ship run writes (components/backupscripts/pitr.py), one sample a minute."""
    labels = f'{{job="{job}",instance="vps:9100"}}'
    return [{"series": f"platform_wal_archive_last_success_timestamp_seconds{labels}", "values": last_success},
            {"series": f"platform_wal_archive_newest_segment_timestamp_seconds{labels}", "values": newest},
            {"series": f"platform_wal_receiver_up{labels}", "values": receiver_up},
            {"series": f"platform_wal_archive_rpo_seconds{labels}", "values": f"{rpo_s}x30"}]


WAL_STALLED = ("WAL archiving of {job} is behind its RPO: nothing shipped to R2, or the receiver "
               "stopped, for longer than the declared RPO")


@pytest.mark.realtool
def test_wal_archiving_that_stops_shipping_for_longer_than_its_rpo_raises_an_alert(tmp_path):
    # "0x30": the last success stays at t=0 (the ship fails or its timer stopped); "0+60x30":
    # a success every minute. RPO 1 min (payments) and 5 min (default): each judged by its own.
    series = (_wal_series("pay-wal", last_success="0x30", newest="0+60x30", receiver_up="1x30", rpo_s=60)
              + _wal_series("web-wal", last_success="0x30", newest="0+60x30", receiver_up="1x30", rpo_s=300))
    alert = lambda job: {"exp_labels": {"severity": "critical", "job": job, "instance": "vps:9100"},  # noqa: E731
                         "exp_annotations": {"summary": WAL_STALLED.format(job=job)}}
    _promtool_rule_tests(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "1m", "alertname": "WALArchiveStalled", "exp_alerts": []},
        {"eval_time": "2m", "alertname": "WALArchiveStalled", "exp_alerts": [alert("pay-wal")]},
        {"eval_time": "6m", "alertname": "WALArchiveStalled", "exp_alerts": [alert("pay-wal"), alert("web-wal")]},
    ]}])


@pytest.mark.realtool
def test_a_stopped_wal_receiver_raises_an_alert_and_an_idle_server_does_not(tmp_path):
    # Both ship every minute; neither server writes (the newest segment stays at t=0). The
    # receiver of "down-wal" stopped: its newest segment's age counts; "idle-wal"'s does not.
    series = (_wal_series("down-wal", last_success="0+60x30", newest="0x30", receiver_up="0x30", rpo_s=300)
              + _wal_series("idle-wal", last_success="0+60x30", newest="0x30", receiver_up="1x30", rpo_s=300))
    _promtool_rule_tests(tmp_path, [{"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "4m", "alertname": "WALArchiveStalled", "exp_alerts": []},
        {"eval_time": "10m", "alertname": "WALArchiveStalled", "exp_alerts": [
            {"exp_labels": {"severity": "critical", "job": "down-wal", "instance": "vps:9100"},
             "exp_annotations": {"summary": WAL_STALLED.format(job="down-wal")}}]},
    ]}])
