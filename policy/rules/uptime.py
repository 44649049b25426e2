"""Monitoring policies: every public hostname has an uptime check or a blackbox probe, and every
uptime check an alert."""

from __future__ import annotations

from urllib.parse import urlsplit

from policy.rules.base import (MANDATORY, MEDIUM, T_APP, T_CF_RECORD, T_COMMAND, T_DNS, T_UPTIME,
                               T_UPTIME_ALERT, Case, by_type, items, mapping, stack_policy, stdin_of)
from policy.rules.fixtures import doc, res, urn


def public_hostnames(args):
    """(hostname, urn) from DNS records (DigitalOcean, Cloudflare) and App Platform domains."""
    for record in by_type(args, T_DNS, T_CF_RECORD):
        if str(record.props.get("type")) in ("A", "AAAA", "CNAME"):
            name, zone = str(record.props.get("name") or "@"), str(record.props.get("domain") or record.props.get("zoneName") or "")
            host = zone if name == "@" else (name if "." in name and not zone else f"{name}.{zone}" if zone else name)
            yield host.rstrip("."), record.urn
    for app in by_type(args, T_APP):
        for domain in items(mapping(app.props.get("spec")).get("domainNames")):
            yield str(mapping(domain).get("name")), app.urn


def _check_uptime(args):
    checked = {(urlsplit(str(c.props.get("target"))).hostname or "") for c in by_type(args, T_UPTIME)}
    probes = "\n".join(stdin_of(c.props) for c in by_type(args, T_COMMAND))
    for host, urn_ in public_hostnames(args):
        if host not in checked and f"https://{host}" not in probes:
            yield f"public hostname {host} has no uptime check or blackbox probe", urn_


stack_policy(
    "platform-hostname-enable-uptime-check", "Every public hostname has an uptime check or a blackbox probe.",
    level=MANDATORY, severity=MEDIUM, category="monitoring",
    sources=["Kredete monitoring (every public endpoint probed)", "DigitalOcean docs: uptime checks"],
    fix="Add the hostname to the product's monitored domains.",
    check=_check_uptime,
    cases=Case(doc(res(T_DNS, "r", {"domain": "example.com", "name": "api", "type": "A", "value": "203.0.113.1"}),
                   res(T_UPTIME, "u", {"target": "https://api.example.com", "type": "https"})),
               [(doc(res(T_DNS, "r", {"domain": "example.com", "name": "api", "type": "A", "value": "203.0.113.1"}),
                     res(T_APP, "app", {"spec": {"domainNames": [{"name": "www.example.com"}]}})),
                 ["public hostname api.example.com has no uptime check or blackbox probe",
                  "public hostname www.example.com has no uptime check or blackbox probe"])]))


def _check_uptime_alerts(args):
    alerted = {str(a.props.get("checkId")) for a in by_type(args, T_UPTIME_ALERT)}
    for check in by_type(args, T_UPTIME):
        if not any(check.name in a or a.startswith(check.name) for a in alerted) and \
                not any(d.urn == check.urn for a in by_type(args, T_UPTIME_ALERT) for d in a.dependencies):
            yield f"uptime check {check.name} has no UptimeAlert; nobody would hear it fail", check.urn


stack_policy(
    "digitalocean-uptimecheck-enable-alert", "Every uptime check has an alert.",
    level=MANDATORY, severity=MEDIUM, category="monitoring",
    sources=["DigitalOcean docs: uptime alerts"],
    fix="Add an UptimeAlert (down, latency, SSL expiry) for the check.",
    check=_check_uptime_alerts,
    cases=Case(doc(res(T_UPTIME, "u", {"target": "https://a"}), res(T_UPTIME_ALERT, "a", {"checkId": "x"}, deps=[urn(T_UPTIME, "u")])),
               [(doc(res(T_UPTIME, "u", {"target": "https://a"})), ["uptime check u has no UptimeAlert; nobody would hear it fail"])]))

