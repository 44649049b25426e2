"""DigitalOcean-side monitoring: droplet resource alerts and uptime checks for public hostnames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_digitalocean as do

DROPLET_METRICS = (
    ("cpu", "v1/insights/droplet/cpu", 85, "CPU above 85% for 5 minutes"),
    ("memory", "v1/insights/droplet/memory_utilization_percent", 85, "memory above 85% for 5 minutes"),
    ("disk", "v1/insights/droplet/disk_utilization_percent", 85, "disk above 85% for 5 minutes"),
)
UPTIME_REGIONS = ["eu_west", "us_east"]
LATENCY_MS = 1500
CERT_WARNING_DAYS = 14


@dataclass(frozen=True)
class Destinations:
    emails: Sequence[str]
    slack_channel: Optional[str] = None
    slack_url: Optional[pulumi.Input[str]] = None

    def __post_init__(self) -> None:
        if not self.emails and not self.slack_channel:
            raise ValueError("alerts need an email address or a Slack channel")

    def monitor(self) -> do.MonitorAlertAlertsArgs:
        slacks = ([do.MonitorAlertAlertsSlackArgs(channel=self.slack_channel, url=self.slack_url)]
                  if self.slack_channel else None)
        return do.MonitorAlertAlertsArgs(emails=list(self.emails) or None, slacks=slacks)

    def uptime(self) -> list[do.UptimeAlertNotificationArgs]:
        slacks = ([do.UptimeAlertNotificationSlackArgs(channel=self.slack_channel, url=self.slack_url)]
                  if self.slack_channel else None)
        return [do.UptimeAlertNotificationArgs(emails=list(self.emails) or None, slacks=slacks)]


def droplet_alerts(prefix: str, droplet_ids: Sequence[pulumi.Input[str]], destinations: Destinations,
                   parent: pulumi.Resource) -> list[do.MonitorAlert]:
    return [do.MonitorAlert(
        f"{prefix}-alert-{key}", type=metric, compare="GreaterThan", value=threshold, window="5m",
        entities=list(droplet_ids), alerts=destinations.monitor(), enabled=True,
        description=f"{prefix}: {description}", opts=pulumi.ResourceOptions(parent=parent))
        for key, metric, threshold, description in DROPLET_METRICS]


def uptime_checks(prefix: str, urls: Sequence[str], destinations: Destinations,
                  parent: pulumi.Resource) -> list[pulumi.Resource]:
    """Per URL: a check from two regions, and alerts when it is down, slow, or its certificate
    expires within 14 days (DigitalOcean counts the threshold in days for ssl_expiry)."""
    created: list[pulumi.Resource] = []
    for url in urls:
        label = url.split("://", 1)[1].split("/", 1)[0].replace(".", "-")
        child = pulumi.ResourceOptions(parent=parent)
        check = do.UptimeCheck(f"{prefix}-uptime-{label}", name=f"{prefix} {label}", target=url,
                               type="https", regions=UPTIME_REGIONS, enabled=True, opts=child)
        created.append(check)
        for kind, extra in (("down", {"period": "2m"}),
                            ("latency", {"period": "5m", "comparison": "greater_than", "threshold": LATENCY_MS}),
                            ("ssl_expiry", {"period": "2m", "comparison": "less_than", "threshold": CERT_WARNING_DAYS})):
            created.append(do.UptimeAlert(f"{prefix}-uptime-{label}-{kind.replace('_', '-')}",
                                          check_id=check.id, name=f"{prefix} {label} {kind}", type=kind,
                                          notifications=destinations.uptime(), **extra, opts=child))
    return created
