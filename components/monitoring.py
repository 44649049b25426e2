"""The self-hosted monitoring stack as data: its containers (Prometheus, Alertmanager, Grafana,
blackbox exporter on the monitoring host; node-exporter and cAdvisor on every host), their
configuration files, and Grafana's provisioning and dashboards, all rendered by pure functions.

Everything runs in the mgmt tier. Exporters on other hosts publish on the private address
only, and the hosts' firewalls admit their ports from the monitoring host alone. Grafana is
published on loopback only: reach it through an SSH tunnel. cAdvisor runs unprivileged and
without the Docker socket (the V-EdFinance audit flagged a privileged monitoring container),
so containers are identified by their cgroup id (``docker-<id>.scope``), not by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import yaml
from pydantic import EmailStr, Field

from components import prometheus
from components.backupscripts import TEXTFILE_DIR
from components.containers import ContainerSpec, ExporterMount, HealthCheck, Mount, PinnedImage, PublishedPort
from components.tiers import Tier
from components.service_files import HostFile
from validation.fields import ResourceName, StrictModel

NODE_EXPORTER_PORT = 9100
CADVISOR_PORT = 8080
GRAFANA_PORT = 3000
GRAFANA_LOOPBACK_PORT = 3300
DATASOURCE_UID = "prometheus"
DOCKER_CGROUP = 'id=~"/system.slice/docker-.+"'
GRAFANA_ENV = {"GF_SECURITY_ADMIN_USER": "admin", "GF_USERS_ALLOW_SIGN_UP": "false",
               "GF_AUTH_ANONYMOUS_ENABLED": "false", "GF_ANALYTICS_REPORTING_ENABLED": "false",
               "GF_ANALYTICS_CHECK_FOR_UPDATES": "false", "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
               "GF_NEWS_NEWS_FEED_ENABLED": "false",
               "GF_SERVER_ROOT_URL": f"http://localhost:{GRAFANA_LOOPBACK_PORT}/"}



class MonitoringConfig(StrictModel):
    """The self-hosted monitoring stack; the defaults are pinned images and modest limits."""

    prometheus_image: PinnedImage = Field(default="prom/prometheus:v2.55.1", description="Prometheus image")
    alertmanager_image: PinnedImage = Field(default="prom/alertmanager:v0.27.0", description="Alertmanager image")
    grafana_image: PinnedImage = Field(default="grafana/grafana-oss:11.3.1", description="Grafana image")
    blackbox_image: PinnedImage = Field(default="prom/blackbox-exporter:v0.25.0", description="blackbox exporter image")
    node_exporter_image: PinnedImage = Field(default="prom/node-exporter:v1.8.2", description="node-exporter image")
    cadvisor_image: PinnedImage = Field(default="gcr.io/cadvisor/cadvisor:v0.49.1", description="cAdvisor image")
    retention_days: int = Field(default=15, ge=1, le=365, description="days Prometheus keeps samples")
    prometheus_memory_mb: int = Field(default=512, ge=128, le=262144, description="Prometheus memory limit "
                                      "in MiB, at most 262144 (a container's bound, ContainerSpec.memory_mb)")
    grafana_memory_mb: int = Field(default=192, ge=96, le=262144, description="Grafana memory limit in MiB, "
                                   "at most 262144 (a container's bound)")
    metrics_services: list[ResourceName] = Field(
        default_factory=list, description="services that expose Prometheus metrics on /metrics at their port")
    request_metric: str = Field(
        default="http_request_duration_seconds", pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="the services' request-duration histogram (prom-client's default name); "
                    "its status label is status_code")
    smtp_password_secret: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]{2,62}$", description="secret key holding the SMTP password (SendGrid: an API key) that "
                                  "Alertmanager sends alert emails with; required when alerts go to email")
    smtp_from: EmailStr = Field(default="alerts@platform.invalid", description="sender of alert emails")


def _spec(name: str, image: str, *, memory: int, cpus: float, health: list[str], port: int,
          user: str | None = None, command: list[str] | None = None, mounts: Sequence[Mount] = (),
          publish: Sequence[PublishedPort] = (), read_only: bool = True,
          env: Mapping[str, str] | None = None) -> ContainerSpec:
    return ContainerSpec(name=name, image=image, tier=Tier.MGMT, port=port, memory_mb=memory, cpus=cpus,
                         healthcheck=HealthCheck(command=health), user=user, command=command,
                         mounts=list(mounts), publish=list(publish), read_only_root=read_only,
                         env=dict(env or {}))


def _wget(port: int, path: str) -> list[str]:
    return ["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}{path}"]


def exporter_specs(cfg: MonitoringConfig, *, publish: bool) -> list[ContainerSpec]:
    """node-exporter (host metrics and the backup jobs' textfile metrics) and cAdvisor
    (containers). ``publish`` exposes them on the host's private address for a remote Prometheus."""
    def ports(port: int) -> list[PublishedPort]:
        return [PublishedPort(host_port=port, container_port=port)] if publish else []

    return [
        _spec("node-exporter", cfg.node_exporter_image, memory=48, cpus=0.05, port=NODE_EXPORTER_PORT,
              user="65534:65534", health=_wget(NODE_EXPORTER_PORT, "/metrics"),
              command=["--path.rootfs=/host", f"--collector.textfile.directory=/host{TEXTFILE_DIR}"],
              mounts=[ExporterMount(host_path="/", container_path="/host")], publish=ports(NODE_EXPORTER_PORT)),
        _spec("cadvisor", cfg.cadvisor_image, memory=128, cpus=0.1, port=CADVISOR_PORT,
              health=_wget(CADVISOR_PORT, "/healthz"),
              command=["--docker_only=false", "--store_container_labels=false", "--housekeeping_interval=30s",
                       "--disable_metrics=percpu,sched,tcp,udp,hugetlb,referenced_memory,cpu_topology,resctrl"],
              mounts=[ExporterMount(host_path="/sys", container_path="/sys"),
                      ExporterMount(host_path="/var/lib/docker", container_path="/var/lib/docker"),
                      ExporterMount(host_path="/dev/disk", container_path="/dev/disk")],
              publish=ports(CADVISOR_PORT)),
    ]


def server_specs(cfg: MonitoringConfig, data_dir: str) -> list[ContainerSpec]:
    """Prometheus, Alertmanager, Grafana (published on loopback only) and the blackbox exporter."""
    return [
        _spec("prometheus", cfg.prometheus_image, memory=cfg.prometheus_memory_mb, cpus=0.25, port=9090,
              user="65534:65534", health=_wget(9090, "/-/healthy"),
              command=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                       f"--storage.tsdb.retention.time={cfg.retention_days}d", "--web.enable-lifecycle"],
              mounts=[Mount(host_path=f"{data_dir}/prometheus", container_path="/prometheus", read_only=False)]),
        _spec("alertmanager", cfg.alertmanager_image, memory=64, cpus=0.05, port=9093, user="65534:65534",
              health=_wget(9093, "/-/healthy"),
              command=["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"],
              mounts=[Mount(host_path=f"{data_dir}/alertmanager", container_path="/alertmanager", read_only=False)]),
        _spec("grafana", cfg.grafana_image, memory=cfg.grafana_memory_mb, cpus=0.1, port=GRAFANA_PORT,
              user="472:0", health=_wget(GRAFANA_PORT, "/api/health"), env=GRAFANA_ENV,
              mounts=[Mount(host_path=f"{data_dir}/grafana", container_path="/var/lib/grafana", read_only=False)],
              publish=[PublishedPort(host_port=GRAFANA_LOOPBACK_PORT, container_port=GRAFANA_PORT, loopback=True)]),
        _spec("blackbox", cfg.blackbox_image, memory=48, cpus=0.05, port=9115, user="65534:65534",
              health=_wget(9115, "/-/healthy"), command=["--config.file=/etc/blackbox/blackbox.yml"]),
    ]


def data_directories(data_dir: str) -> list[tuple[str, str, str]]:
    """Directories the servers write, owned by the users their images run as."""
    return [(f"{data_dir}/prometheus", "0750", "65534:65534"), (f"{data_dir}/alertmanager", "0750", "65534:65534"),
            (f"{data_dir}/grafana", "0750", "472:0")]


def render_blackbox_config() -> str:
    return yaml.safe_dump({"modules": {"http_2xx": {
        "prober": "http", "timeout": "10s",
        "http": {"method": "GET", "preferred_ip_protocol": "ip4", "fail_if_not_ssl": True,
                 "valid_status_codes": [200, 204, 301, 302, 401, 403, 404]},
    }}}, sort_keys=False)


def render_grafana_datasource() -> str:
    return yaml.safe_dump({"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": DATASOURCE_UID, "access": "proxy",
        "url": "http://prometheus:9090", "isDefault": True, "editable": False,
    }]}, sort_keys=False)


def render_grafana_dashboard_provider() -> str:
    return yaml.safe_dump({"apiVersion": 1, "providers": [{
        "name": "platform", "folder": "Platform", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "options": {"path": "/etc/grafana/dashboards"},
    }]}, sort_keys=False)


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    unit: str = "short"
    legend: str = ""


def _dashboard(uid: str, title: str, panels: Sequence[Panel]) -> dict:
    source = {"type": "prometheus", "uid": DATASOURCE_UID}
    return {
        "uid": uid, "title": title, "tags": ["platform"], "timezone": "utc", "schemaVersion": 39,
        "refresh": "1m", "time": {"from": "now-24h", "to": "now"},
        "panels": [{
            "id": i + 1, "type": "timeseries", "title": p.title, "datasource": source,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "targets": [{"refId": "A", "datasource": source, "expr": p.expr, "legendFormat": p.legend}],
        } for i, p in enumerate(panels)],
    }


def dashboards(services: Sequence[str], request_metric: str = "http_request_duration_seconds") -> dict[str, dict]:
    """Hosts, containers, backups, public endpoints, and one dashboard per service with metrics."""
    out = {
        "hosts": _dashboard("platform-hosts", "Hosts", [
            Panel("CPU busy", '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))',
                  "percentunit", "{{instance}}"),
            Panel("Memory available", "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes",
                  "percentunit", "{{instance}}"),
            Panel("Disk used", '1 - node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} '
                  '/ node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"}', "percentunit",
                  "{{instance}} {{mountpoint}}"),
            Panel("Load (1m)", "node_load1", "short", "{{instance}}"),
        ]),
        "containers": _dashboard("platform-containers", "Containers", [
            Panel("CPU", f"sum by (instance, id) (rate(container_cpu_usage_seconds_total{{{DOCKER_CGROUP}}}[5m]))",
                  "short", "{{instance}} {{id}}"),
            Panel("Memory (working set)", f"container_memory_working_set_bytes{{{DOCKER_CGROUP}}}", "bytes",
                  "{{instance}} {{id}}"),
            Panel("Restarts (1h)", f"changes(container_start_time_seconds{{{DOCKER_CGROUP}}}[1h])", "short",
                  "{{instance}} {{id}}"),
        ]),
        "backups": _dashboard("platform-backups", "Backups", [
            Panel("Hours since last successful backup",
                  "(time() - platform_backup_last_success_timestamp_seconds) / 3600", "h", "{{job}}"),
            Panel("Last backup succeeded", "platform_backup_success", "bool", "{{job}}"),
            Panel("Restore test succeeded", "platform_restore_test_success", "bool", "{{job}}"),
            Panel("Backup size", "platform_backup_last_size_bytes", "bytes", "{{job}}"),
        ]),
        "endpoints": _dashboard("platform-endpoints", "Public endpoints", [
            Panel("Up", 'probe_success{job="blackbox-http"}', "bool", "{{instance}}"),
            Panel("Response time", 'probe_duration_seconds{job="blackbox-http"}', "s", "{{instance}}"),
            Panel("Days until the certificate expires", "(probe_ssl_earliest_cert_expiry - time()) / 86400",
                  "d", "{{instance}}"),
        ]),
    }
    for service in services:
        selector = f'job="{service}"'
        count = f"{request_metric}_count"
        out[f"service-{service}"] = _dashboard(f"platform-service-{service}", f"Service {service}", [
            Panel("Requests per second", f"sum(rate({count}{{{selector}}}[5m]))", "reqps"),
            Panel("Error rate (5xx)", f'sum(rate({count}{{{selector},status_code=~"5.."}}[5m])) '
                  f"/ sum(rate({count}{{{selector}}}[5m]))", "percentunit"),
            Panel("Latency p95", f"histogram_quantile(0.95, sum by (le) "
                  f"(rate({request_metric}_bucket{{{selector}}}[5m])))", "s"),
            Panel("Scrape up", f"up{{{selector}}}", "bool"),
        ])
    return out


def monitoring_files(cfg: MonitoringConfig, targets: prometheus.ScrapeTargets, routes: prometheus.AlertRoutes,
                     *, smtp_password: pulumi.Input[str] | None, slack_url: pulumi.Input[str] | None,
                     backup_jobs: Sequence[str] = ()) -> dict[str, list[HostFile]]:
    """Every file the servers read, per container; the two secrets become files only root and
    the container's user can read."""
    files = {
        "prometheus": [HostFile("/etc/prometheus/prometheus.yml", prometheus.render_prometheus_config(
                           targets, rule_files=["/etc/prometheus/rules/*.yml"])),
                       HostFile("/etc/prometheus/rules/platform.yml", prometheus.render_rules(backup_jobs))],
        "alertmanager": [HostFile("/etc/alertmanager/alertmanager.yml", prometheus.render_alertmanager_config(routes))],
        "blackbox": [HostFile("/etc/blackbox/blackbox.yml", render_blackbox_config())],
        "grafana": [HostFile("/etc/grafana/provisioning/datasources/platform-datasource.yml", render_grafana_datasource()),
                    HostFile("/etc/grafana/provisioning/dashboards/platform-dashboards.yml",
                             render_grafana_dashboard_provider())]
                   + [HostFile(f"/etc/grafana/dashboards/{name}.json", json.dumps(board, indent=2, sort_keys=True))
                      for name, board in sorted(dashboards(cfg.metrics_services, cfg.request_metric).items())],
    }
    if routes.emails:
        if smtp_password is None:
            raise ValueError("alert emails need monitoring.smtp_password_secret")
        files["alertmanager"].append(HostFile(routes.smtp_password_file, smtp_password, mode="0400", owner="65534:65534"))
    if routes.slack_channel:
        files["alertmanager"].append(HostFile(routes.slack_url_file, slack_url, mode="0400", owner="65534:65534"))
    return files


@dataclass
class HostMonitoring:
    """What a host's ``deploy`` needs to run the whole stack on that one host."""

    specs: list[ContainerSpec]
    files: dict[str, list[HostFile]]
    secret_env: dict[str, dict[str, pulumi.Input[str]]]


def single_host(cfg: MonitoringConfig, *, data_dir: str, service_ports: Mapping[str, int],
                probes: Sequence[str], emails: Sequence[str], slack_channel: str | None,
                smtp_password: pulumi.Input[str] | None, slack_url: pulumi.Input[str] | None,
                backup_jobs: Sequence[str], grafana_password: pulumi.Input[str]) -> HostMonitoring:
    """Prometheus, Alertmanager, Grafana, blackbox, node-exporter and cAdvisor on one host, none
    of them published but Grafana on loopback; Prometheus scrapes over the host's Docker network.
    ``service_ports`` are the host's services that expose metrics, by name."""
    targets = prometheus.ScrapeTargets(
        node=[f"node-exporter:{NODE_EXPORTER_PORT}"], cadvisor=[f"cadvisor:{CADVISOR_PORT}"],
        services={s: [f"{s}:{port}"] for s, port in sorted(service_ports.items())}, probes=list(probes))
    files = monitoring_files(
        cfg, targets, prometheus.AlertRoutes(emails=tuple(emails), slack_channel=slack_channel, sender=cfg.smtp_from),
        smtp_password=smtp_password, slack_url=slack_url, backup_jobs=backup_jobs)
    return HostMonitoring(specs=[*server_specs(cfg, data_dir), *exporter_specs(cfg, publish=False)], files=files,
                          secret_env={"grafana": {"GF_SECURITY_ADMIN_PASSWORD": grafana_password}})
