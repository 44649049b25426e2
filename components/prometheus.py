"""Prometheus, alert rules and Alertmanager configuration, rendered by pure functions.

The self-hosted monitoring stack (Prometheus, Alertmanager, Grafana, node-exporter, cAdvisor,
blackbox exporter) runs in the mgmt tier; these renderers produce its configuration. The
alert rules cover the failures that hurt: a host down, a disk filling, memory pressure, a
container restarting, a backup older than its schedule plus grace, a failed restore test, a
certificate about to expire, and a public endpoint down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import yaml

BACKUP_INTERVAL_HOURS = 24
BACKUP_GRACE_HOURS = 2
RESTORE_TEST_INTERVAL_DAYS = 7
TLS_WARNING_DAYS = 14
# The internal CA re-issues a leaf 30 days before it expires (components/internal_ca.py), on
# any converge; a delivered certificate this close to its end was re-issued but never delivered.
INTERNAL_CERT_WARNING_DAYS = 21


@dataclass(frozen=True)
class ScrapeTargets:
    node: Sequence[str] = ()
    """node-exporter addresses (host:9100); its textfile collector carries backup metrics."""
    cadvisor: Sequence[str] = ()
    """cAdvisor addresses (host:8080)."""
    services: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Application metrics: job name -> addresses, for services that expose /metrics."""
    probes: Sequence[str] = ()
    """Public URLs the blackbox exporter probes (up, latency, certificate expiry)."""
    blackbox: str = "blackbox:9115"
    alertmanager: str = "alertmanager:9093"


def render_prometheus_config(targets: ScrapeTargets, *, rule_files: Sequence[str] = ("rules/*.yml",),
                             scrape_interval: str = "30s") -> str:
    jobs = [{"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}]
    if targets.node:
        # honor_labels: the backup jobs' textfile metrics carry their own job="<backup job>";
        # without it Prometheus renames that to exported_job and sets job="node", so the
        # per-job backup alerts never match (BackupMissing fires for a healthy backup).
        jobs.append({"job_name": "node", "honor_labels": True,
                     "static_configs": [{"targets": list(targets.node)}]})
    if targets.cadvisor:
        jobs.append({"job_name": "cadvisor", "static_configs": [{"targets": list(targets.cadvisor)}]})
    for name, addresses in sorted(targets.services.items()):
        jobs.append({"job_name": name, "static_configs": [{"targets": list(addresses)}]})
    if targets.probes:
        jobs.append({
            "job_name": "blackbox-http",
            "metrics_path": "/probe",
            "params": {"module": ["http_2xx"]},
            "static_configs": [{"targets": list(targets.probes)}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": targets.blackbox},
            ],
        })
    document = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": list(rule_files),
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [targets.alertmanager]}]}]},
        "scrape_configs": jobs,
    }
    return yaml.safe_dump(document, sort_keys=False)


def _rule(alert: str, expr: str, duration: str, severity: str, summary: str) -> dict:
    return {"alert": alert, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary}}


def alert_rules(backup_jobs: Sequence[str] = ()) -> list[dict]:
    """The platform's alerts. ``backup_jobs`` adds an alert for each job whose metrics never
    appeared: a timer that never ran leaves no series for the staleness alert to see."""
    backup_limit = (BACKUP_INTERVAL_HOURS + BACKUP_GRACE_HOURS) * 3600
    restore_limit = (RESTORE_TEST_INTERVAL_DAYS + 1) * 86400
    maintenance_limit = (2 * RESTORE_TEST_INTERVAL_DAYS + 1) * 86400
    return [
        _rule("HostDown", 'up{job="node"} == 0', "5m", "critical",
              "{{ $labels.instance }} has not answered for 5 minutes"),
        _rule("DiskAlmostFull",
              '1 - node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} '
              '/ node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"} > 0.85',
              "10m", "warning", "{{ $labels.instance }} {{ $labels.mountpoint }} is over 85% full"),
        _rule("MemoryPressure", "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.10",
              "10m", "warning", "{{ $labels.instance }} has under 10% memory available"),
        # cAdvisor runs without the Docker socket, so a container is its cgroup id.
        _rule("ContainerRestarting",
              'changes(container_start_time_seconds{id=~"/system.slice/docker-.+"}[15m]) > 2', "0m",
              "warning", "container {{ $labels.id }} on {{ $labels.instance }} restarted more than twice in 15 minutes"),
        _rule("BackupStale", f"time() - platform_backup_last_success_timestamp_seconds > {backup_limit}",
              "0m", "critical", "backup {{ $labels.job }} last succeeded over "
              f"{BACKUP_INTERVAL_HOURS + BACKUP_GRACE_HOURS} hours ago"),
        _rule("BackupFailed", "platform_backup_success == 0", "0m", "critical",
              "the last run of backup {{ $labels.job }} failed"),
        _rule("RestoreTestFailed", "platform_restore_test_success == 0", "0m", "critical",
              "the restore test of {{ $labels.job }} failed"),
        _rule("RestoreTestStale",
              f"time() - platform_restore_test_last_run_timestamp_seconds > {restore_limit}", "0m",
              "warning", "the restore test of {{ $labels.job }} has not run for over a week"),
        # WAL archiving (``pitr`` jobs, components/backupscripts/pitr.py): the ship timer writes
        # last success, the newest received segment's mtime, the receiver's state and the
        # declared RPO, so each job is judged against its own RPO. The newest segment's age alone
        # would page on an idle server (no writes, no WAL), so it counts only while the receiver
        # is not streaming.
        _rule("WALArchiveStalled",
              "time() - platform_wal_archive_last_success_timestamp_seconds > platform_wal_archive_rpo_seconds"
              " or (platform_wal_receiver_up == 0 and time() - "
              "platform_wal_archive_newest_segment_timestamp_seconds > platform_wal_archive_rpo_seconds)",
              "0m", "critical",
              "WAL archiving of {{ $labels.job }} is behind its RPO: nothing shipped to R2, or the "
              "receiver stopped, for longer than the declared RPO"),
        _rule("PITRTestFailed", "platform_pitr_test_success == 0", "0m", "critical",
              "the point-in-time restore test of {{ $labels.job }} failed"),
        _rule("PITRTestStale",
              f"time() - platform_pitr_test_last_run_timestamp_seconds > {restore_limit}", "0m",
              "warning", "the point-in-time restore test of {{ $labels.job }} has not run for over a week"),
        # A pitr job's two repositories (components/backupscripts/generations.py) are checked
        # (PITR test) and pruned (base backup) in alternate weeks, each while it is inactive:
        # one per repository every two weeks, a day's grace.
        _rule("PITRCheckStale",
              f"time() - platform_pitr_check_last_success_timestamp_seconds > {maintenance_limit}", "0m",
              "warning", "restic check of {{ $labels.job }}'s repository {{ $labels.repository }} has not "
              "passed for over 15 days"),
        _rule("PITRPruneStale",
              f"time() - platform_pitr_prune_last_success_timestamp_seconds > {maintenance_limit}", "0m",
              "warning", "retention and prune of {{ $labels.job }}'s repository {{ $labels.repository }} "
              "have not run for over 15 days"),
        _rule("TLSCertificateExpiring",
              f"probe_ssl_earliest_cert_expiry - time() < {TLS_WARNING_DAYS} * 86400", "1h", "warning",
              "the certificate of {{ $labels.instance }} expires within 14 days"),
        _rule("InternalCertificateExpiring",
              f"platform_certificate_expiry_timestamp_seconds - time() < {INTERNAL_CERT_WARNING_DAYS} * 86400",
              "1h", "critical",
              "the certificate {{ $labels.path }} on {{ $labels.instance }} expires within "
              f"{INTERNAL_CERT_WARNING_DAYS} days: converge the stack to deliver the re-issued one"),
        _rule("EndpointDown", 'probe_success{job="blackbox-http"} == 0', "5m", "critical",
              "{{ $labels.instance }} is not answering"),
        # The admin-session archive (components/hostsetup/session_archive.py) runs each minute:
        # records waiting there are records an intruder on the host could still erase.
        _rule("SessionArchivePending", "platform_session_archive_pending_files > 0", "10m", "critical",
              "admin-session records on {{ $labels.instance }} have not reached the locked archive for "
              "10 minutes: see `journalctl -u platform-session-archive`"),
        # A timer that never ran, or an intruder who stopped it and removed its metrics, leaves no
        # series for the two rules around this one to see.
        _rule("SessionArchiveMissing", "absent(platform_session_archive_last_run_timestamp_seconds)", "15m",
              "critical", "no host reports its admin-session archive uploader for 15 minutes: is "
              "platform-session-archive.timer installed and running?"),
        _rule("SessionArchiveStale", "time() - platform_session_archive_last_run_timestamp_seconds > 600",
              "0m", "warning", "the admin-session archive uploader on {{ $labels.instance }} has not run "
              "for 10 minutes: is platform-session-archive.timer enabled?"),
    ] + ([_rule("BackupMissing", " or ".join(
            f'absent(platform_backup_last_success_timestamp_seconds{{job="{job}"}})' for job in sorted(backup_jobs)),
            f"{BACKUP_INTERVAL_HOURS + BACKUP_GRACE_HOURS}h", "critical",
            "backup {{ $labels.job }} has reported nothing for a day: is its timer installed and running?")]
         if backup_jobs else [])


def render_rules(backup_jobs: Sequence[str] = ()) -> str:
    return yaml.safe_dump({"groups": [{"name": "platform", "rules": alert_rules(backup_jobs)}]}, sort_keys=False)


@dataclass(frozen=True)
class AlertRoutes:
    emails: Sequence[str] = ()
    slack_channel: str | None = None
    smarthost: str = "smtp.sendgrid.net:587"
    sender: str = "alerts@platform.invalid"
    slack_url_file: str = "/etc/alertmanager/secrets/slack_url"
    smtp_password_file: str = "/etc/alertmanager/secrets/smtp_password"


def render_alertmanager_config(routes: AlertRoutes) -> str:
    """Critical alerts go to every destination, warnings to email; secrets are read from files."""
    if not routes.emails and not routes.slack_channel:
        raise ValueError("alerts need at least one destination (environment.alerts)")
    receivers = []
    critical: dict = {"name": "critical"}
    warning: dict = {"name": "warning"}
    if routes.emails:
        email_configs = [{"to": address, "send_resolved": True} for address in routes.emails]
        critical["email_configs"] = email_configs
        warning["email_configs"] = email_configs
    if routes.slack_channel:
        slack = [{"api_url_file": routes.slack_url_file, "channel": routes.slack_channel,
                  "send_resolved": True}]
        critical["slack_configs"] = slack
        if not routes.emails:
            warning["slack_configs"] = slack
    receivers += [critical, warning]
    document: dict = {
        "route": {
            "receiver": "warning",
            "group_by": ["alertname", "instance", "job"],
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
            "routes": [{"receiver": "critical", "matchers": ['severity="critical"']}],
        },
        "receivers": receivers,
    }
    if routes.emails:
        document["global"] = {"smtp_smarthost": routes.smarthost, "smtp_from": routes.sender,
                              "smtp_auth_username": "apikey",
                              "smtp_auth_password_file": routes.smtp_password_file,
                              "smtp_require_tls": True}
    return yaml.safe_dump(document, sort_keys=False)
