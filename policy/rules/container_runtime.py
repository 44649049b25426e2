"""Container policies on runtime settings (CIS Docker Benchmark v1.6.0 section 5, KICS Docker
Compose queries): read-only root, restart, log rotation, published ports, cgroups; and the
DigitalOcean Kubernetes upgrade settings."""

from __future__ import annotations

from policy.rules.base import (ADVISORY, HIGH, LOW, MANDATORY, MEDIUM, Case, items, labels_of, mapping,
                               resource_policy)
from policy.rules.containers import C, kics
from policy.rules.fixtures import container, doc, res

def _check_read_only(props, args):
    if not props.get("readOnly"):
        yield "the container's root filesystem is writable; set read_only and give it tmpfs or volumes"


resource_policy(
    "docker-container-enable-read-only-rootfs", "Containers mount their root filesystem read-only.",
    level=ADVISORY, severity=LOW, category="containers",
    sources=["CIS Docker 5.12"],
    fix="Set read_only and mount tmpfs where the image writes.",
    types=C, check=_check_read_only,
    cases=Case(doc(container()), [(doc(container(readOnly=False)),
                                   ["the container's root filesystem is writable; set read_only and give it tmpfs or volumes"])]))


def _check_restart(props, args):
    policy = str(props.get("restart") or "no")
    if policy == "always":
        yield "the container restarts always, even after a deliberate stop; use unless-stopped or on-failure"
    elif policy == "no":
        yield "the container has no restart policy; use unless-stopped or on-failure"


resource_policy(
    "docker-container-configure-restart-policy", "Containers restart on failure or unless stopped.",
    level=ADVISORY, severity=LOW, category="containers",
    sources=["CIS Docker 5.14", kics("2fc99041-ddad-49d5-853f-e35e70a48391", "Restart Policy On Failure Not Set To 5")],
    fix="Set restart to unless-stopped (or on-failure with max_retry_count 5).",
    types=C, check=_check_restart,
    cases=Case(doc(container()), [(doc(container(restart=None)), ["the container has no restart policy; use unless-stopped or on-failure"])]))


def _check_log_rotation(props, args):
    opts = mapping(props.get("logOpts"))
    if props.get("logDriver", "json-file") in ("json-file", "local") and "max-size" not in opts:
        yield "the container's logs do not rotate; set log_opts max-size and max-file"


resource_policy(
    "docker-container-configure-log-rotation", "Container logs rotate by size.",
    level=ADVISORY, severity=LOW, category="containers",
    sources=["Docker docs: json-file logging driver (max-size, max-file)"],
    fix="Set log_opts max-size and max-file.",
    types=C, check=_check_log_rotation,
    cases=Case(doc(container()), [(doc(container(logOpts={})), ["the container's logs do not rotate; set log_opts max-size and max-file"])]))


def _check_publish_all(props, args):
    if props.get("publishAllPorts"):
        yield "the container publishes every exposed port on all interfaces (publish_all_ports)"


resource_policy(
    "docker-container-disallow-publish-all-ports", "Containers never publish all their exposed ports.",
    level=MANDATORY, severity=HIGH, category="containers",
    sources=["CIS Docker 5.8 (only needed ports open)", kics("451d79dc-0588-476a-ad03-3c7f0320abb3", "Container Traffic Not Bound To Host Interface")],
    fix="Remove publish_all_ports and list the ports with their host address.",
    types=C, check=_check_publish_all,
    cases=Case(doc(container()), [(doc(container(publishAllPorts=True)),
                                   ["the container publishes every exposed port on all interfaces (publish_all_ports)"])]))


def _check_privileged_host_ports(props, args):
    edge = labels_of(props).get("platform.tier") == "edge"
    for port in items(props.get("ports")):
        external = mapping(port).get("external")
        if isinstance(external, (int, float)) and 0 < external < 1024 and not (edge and external in (80, 443)):
            yield f"the container maps privileged host port {int(external)}; only the edge proxy takes 80 and 443"


resource_policy(
    "docker-container-disallow-privileged-host-ports", "Only the edge proxy maps a privileged host port (below 1024), and only 80 and 443.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.7 (privileged ports not mapped)", kics("bc2908f3-f73c-40a9-8793-c1b7d5544f79", "Privileged Ports Mapped In Container")],
    fix="Map a host port above 1023, or route through the edge proxy.",
    types=C, check=_check_privileged_host_ports,
    cases=Case(doc(container(labels=[{"label": "platform.tier", "value": "edge"}],
                             ports=[{"internal": 8443, "external": 443, "ip": "0.0.0.0"}])),
               [(doc(container(ports=[{"internal": 8080, "external": 80, "ip": "10.0.0.2"}, {"internal": 25, "external": 25, "ip": "127.0.0.1"}])),
                 ["the container maps privileged host port 80; only the edge proxy takes 80 and 443",
                  "the container maps privileged host port 25; only the edge proxy takes 80 and 443"])]))


def _check_cgroups(props, args):
    if props.get("cgroupParent"):
        yield f"the container runs under cgroup parent {props.get('cgroupParent')}, outside Docker's own limits"
    if props.get("cgroupnsMode") == "host":
        yield "the container shares the host's cgroup namespace"


resource_policy(
    "docker-container-configure-default-cgroups", "Containers keep Docker's cgroup parent and a private cgroup namespace.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["CIS Docker 5.24 (cgroup usage confirmed)", kics("4d9f44c6-2f4a-4317-9bb5-267adbea0232", "Cgroup Not Default")],
    fix="Remove cgroup_parent and cgroupns_mode=host.",
    types=C, check=_check_cgroups,
    cases=Case(doc(container()), [(doc(container(cgroupParent="/system.slice", cgroupnsMode="host")),
                                   ["the container runs under cgroup parent /system.slice, outside Docker's own limits",
                                    "the container shares the host's cgroup namespace"])]))


T_DOKS = "digitalocean:index/kubernetesCluster:KubernetesCluster"


def _check_doks_upgrades(props, args):
    if not props.get("autoUpgrade"):
        yield f"Kubernetes cluster {props.get('name')} does not upgrade itself; set auto_upgrade"
    if not props.get("surgeUpgrade"):
        yield f"Kubernetes cluster {props.get('name')} upgrades without surge nodes; set surge_upgrade"


resource_policy(
    "digitalocean-kubernetescluster-enable-upgrades", "DigitalOcean Kubernetes clusters upgrade automatically, with surge nodes.",
    level=ADVISORY, severity=MEDIUM, category="containers",
    sources=["Trivy AVD-DIG-0005 (digitalocean-compute-kubernetes-auto-upgrades-not-enabled)",
             "Trivy AVD-DIG-0008 (digitalocean-compute-surge-upgrades-not-enabled)"],
    fix="Set auto_upgrade and surge_upgrade (no stack runs DOKS today; the rule keeps the anchor floor).",
    types=[T_DOKS], check=_check_doks_upgrades,
    cases=Case(doc(res(T_DOKS, "k", {"name": "k", "autoUpgrade": True, "surgeUpgrade": True})),
               [(doc(res(T_DOKS, "k", {"name": "k"})),
                 ["Kubernetes cluster k does not upgrade itself; set auto_upgrade",
                  "Kubernetes cluster k upgrades without surge nodes; set surge_upgrade"])]))
