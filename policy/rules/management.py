"""Management-plane policies (issue #22): in production, SSH answers only from the WireGuard
management network or a host's own bastion, through every layer that admits it (DigitalOcean
firewalls, UFW), unless break-glass is on with a reason and an unexpired date; and every
product's admin-session records are archived where its hosts cannot erase them."""

from __future__ import annotations

import datetime

from policy.parsers.ufw import ufw_rules
from policy.rules.base import (CRITICAL, HIGH, MANDATORY, T_COMMAND, T_DROPLET, T_FIREWALL, T_ONPREM, Case, by_type,
                               MISSING_PRODUCTION, PRODUCTION_PROPERTY, T_MANAGEMENT, T_R2_LOCK, T_SESSION_ARCHIVE, is_internal, items, mapping,
                               network, port_range, production,
                               stack_policy, stdin_of, today)
from policy.rules.fixtures import WORLD, doc, res, script
from policy.rules.network import fw


def _ssh_sources(args):
    """(resource, where, source) for every SSH (22) allow-rule of a DigitalOcean Firewall or a
    host's UFW script."""
    for firewall in by_type(args, T_FIREWALL):
        for rule in items(firewall.props.get("inboundRules")):
            rule = mapping(rule)
            range_ = port_range(rule.get("portRange"))
            if rule.get("protocol") == "tcp" and range_ and range_[0] <= 22 <= range_[1]:
                for source in items(rule.get("sourceAddresses")):
                    yield firewall, f"firewall {firewall.props.get('name')}", str(source)
    for command in by_type(args, T_COMMAND):
        rules, _ = ufw_rules(stdin_of(command.props))
        for rule in rules:
            if rule.action in ("allow", "limit") and rule.direction == "in" and rule.proto in ("tcp", "any") \
                    and any(low <= 22 <= high for low, high in rule.port_ranges()):
                yield command, f"UFW of {command.name}", str(rule.src)


def _break_glass_open(glass) -> tuple[bool, str]:
    """Whether break-glass admits admin CIDRs now, and if not, why."""
    if not glass.get("enabled"):
        return False, "break-glass is off"
    if not glass.get("reason"):
        return False, "break-glass has no reason"
    try:
        expires = datetime.date.fromisoformat(str(glass.get("expires")))
    except ValueError:
        return False, "break-glass has no expiry"
    if expires < today():
        return False, f"break-glass expired on {expires}"
    return True, ""


def _check_ssh_management_only(args):
    flag = production(args.get_config() or {})
    if flag is None:
        yield MISSING_PRODUCTION, None
        return
    if not flag:
        return
    managed = by_type(args, T_MANAGEMENT)
    hosts = by_type(args, T_DROPLET) + by_type(args, T_ONPREM)
    if not managed:
        if hosts:
            yield ("production stack without a management network: SSH has nowhere to answer from but "
                   "public addresses"), hosts[0].urn
        return
    networks = [n for n in (network(m.props.get("network")) for m in managed) if n is not None]
    glass_open, why = _break_glass_open(mapping(managed[0].props.get("breakGlass")))
    shown = ", ".join(str(n) for n in networks)
    for resource, where, source in _ssh_sources(args):
        parsed = network(source) if source != "any" else None
        if parsed is not None and any(parsed.version == n.version and parsed.subnet_of(n) for n in networks):
            continue
        # A single internal address is a jump host inside the product's own network (the bastion).
        if parsed is not None and parsed.num_addresses == 1 and is_internal(parsed):
            continue
        if glass_open:
            continue
        yield (f"{where} admits SSH from {source}, outside the management network {shown} "
               f"({why}); SSH answers only through WireGuard in production"), resource.urn


_MGMT = res(T_MANAGEMENT, "prod-management", {"network": "10.99.0.0/24", "listenPort": 51820,
                                               "breakGlass": {"enabled": False, "reason": None, "expires": None}},
            custom=False)


def _glass(**glass):
    inputs = dict(_MGMT["inputs"], breakGlass={"enabled": True, **glass})
    return res(T_MANAGEMENT, "prod-management", inputs, custom=False)


_SSH_OK = script("p-edge-ufw", body="ufw default deny incoming\nufw allow proto tcp from 10.99.0.0/24 to any port 22\n"
                                    "ufw allow proto udp from any to any port 51820\n")
_SSH_BASTION = script("p-app-ufw", body="ufw default deny incoming\nufw allow proto tcp from 10.0.0.1/32 to any port 22\n")
_SSH_ADMIN = script("p-edge-ufw", body="ufw default deny incoming\nufw allow proto tcp from 198.51.100.10/32 to any port 22\n")

stack_policy(
    "platform-ssh-configure-management-network-only",
    "In production, SSH answers only from the WireGuard management network (or a host's own bastion), "
    "never from admin CIDRs unless break-glass is on with a reason and an expiry not passed.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["Kredete reference architecture (administrative access via a VPN-gated bastion)",
             "DESIGN.md tier model (mgmt: admin CIDRs / VPN only)", "CIS Controls v8 12.7 (remote access through managed infrastructure)"],
    fix="Set platform:environment.management.break_glass.enabled false, or on with reason and expires for an outage.",
    check=_check_ssh_management_only, config={"production": PRODUCTION_PROPERTY},
    cases=Case(doc(_MGMT, _SSH_OK, _SSH_BASTION, res(T_FIREWALL, "f", fw("kro-prod-edge", (443, WORLD)))),
               [(doc(_MGMT, _SSH_ADMIN, res(T_FIREWALL, "f", fw("kro-prod-edge", (22, ["198.51.100.10/32"])))),
                 ["firewall kro-prod-edge admits SSH from 198.51.100.10/32, outside the management network "
                  "10.99.0.0/24 (break-glass is off); SSH answers only through WireGuard in production",
                  "UFW of p-edge-ufw admits SSH from 198.51.100.10/32, outside the management network "
                  "10.99.0.0/24 (break-glass is off); SSH answers only through WireGuard in production"]),
                (doc(_glass(reason="INC-1 gateway down", expires="2000-01-01"), _SSH_ADMIN),
                 ["UFW of p-edge-ufw admits SSH from 198.51.100.10/32, outside the management network "
                  "10.99.0.0/24 (break-glass expired on 2000-01-01); SSH answers only through WireGuard in production"]),
                (doc(_glass(reason="INC-1 gateway down", expires=None), _SSH_ADMIN),
                 ["UFW of p-edge-ufw admits SSH from 198.51.100.10/32, outside the management network "
                  "10.99.0.0/24 (break-glass has no expiry); SSH answers only through WireGuard in production"]),
                (doc(res(T_ONPREM, "p-edge", {"tier": "edge", "address": "203.0.113.5"}, custom=False), _SSH_OK),
                 ["production stack without a management network: SSH has nowhere to answer from but public addresses"])],
               config={"production": True}))


SESSION_LOCK_DAYS_PROD = 30


def _product(resource) -> str:
    """The product a resource belongs to: its nearest ``platform:products:*`` ancestor's type
    ("" for a resource outside any product)."""
    while resource is not None:
        if str(resource.resource_type).startswith("platform:products:"):
            return str(resource.resource_type)
        resource = getattr(resource, "parent", None)
    return ""


def _check_session_archive(args):
    flag = production(args.get_config() or {})
    if flag is None:
        yield MISSING_PRODUCTION, None
        return
    floor = SESSION_LOCK_DAYS_PROD if flag else 1
    locks: dict[str, list] = {}
    for lock in by_type(args, T_R2_LOCK):
        locks.setdefault(str(lock.props.get("bucketName") or ""), []).extend(mapping(r) for r in items(lock.props.get("rules")))
    archived = set()
    for archive in by_type(args, T_SESSION_ARCHIVE):
        bucket = str(archive.props.get("bucket") or "")
        whole = [r for r in locks.get(bucket, []) if r.get("enabled") and not r.get("prefix")
                 and mapping(r.get("condition")).get("type") == "Age"]
        days = max((int(mapping(r.get("condition")).get("maxAgeSeconds") or 0) // 86400 for r in whole), default=0)
        if days < floor:
            yield (f"the session archive {archive.name} (bucket {bucket}) is locked for {days} days; its records "
                   f"must be locked for at least {floor} days, every object (prefix \"\")"), archive.urn
        else:
            archived.add(_product(archive))
    for host in by_type(args, T_DROPLET) + by_type(args, T_ONPREM):
        if _product(host) not in archived:
            yield (f"{host.name} logs admin sessions, but its product archives none off the host: a compromised "
                   "host could erase them"), host.urn
            archived.add(_product(host))  # one finding per product


def _archive(days: int | None, *, bucket: str = "kro-prod-backups-sessions") -> list[dict]:
    out = [res(T_SESSION_ARCHIVE, "kro-prod-session-archive", {"bucket": bucket, "lockDays": days or 0, "prefix": "kro-prod"},
               custom=False)]
    if days is not None:
        out.append(res(T_R2_LOCK, "kro-prod-session-archive-lock", {"bucketName": bucket, "rules": [
            {"id": "retain-sessions", "enabled": True, "prefix": "",
             "condition": {"type": "Age", "maxAgeSeconds": days * 86400}}]}))
    return out


_HOST = res(T_DROPLET, "kro-prod", {"name": "kro-prod"})

stack_policy(
    "platform-sessions-enable-off-host-archive",
    "Every product with hosts archives its admin-session records off them, in a bucket whose lock covers every "
    f"object (at least {SESSION_LOCK_DAYS_PROD} days in production).",
    level=MANDATORY, severity=HIGH, category="hosts",
    sources=["Kredete reference architecture (full session logging)", "CIS Controls v8 8.9 (centralize audit logs), "
             "8.3 (audit log storage)", "Cloudflare R2 docs: bucket locks"],
    fix="Keep the product's SessionArchive (stacks.plan_parts.session_archive) and its backup.retention_days "
        f"at {SESSION_LOCK_DAYS_PROD} or more in production.",
    check=_check_session_archive, config={"production": PRODUCTION_PROPERTY},
    cases=Case(doc(_HOST, *_archive(30)),
               [(doc(_HOST), ["kro-prod logs admin sessions, but its product archives none off the host: a "
                              "compromised host could erase them"]),
                (doc(_HOST, *_archive(7)),
                 ["the session archive kro-prod-session-archive (bucket kro-prod-backups-sessions) is locked for 7 "
                  "days; its records must be locked for at least 30 days, every object (prefix \"\")",
                  "kro-prod logs admin sessions, but its product archives none off the host: a compromised host "
                  "could erase them"]),
                (doc(_HOST, *_archive(None)),
                 ["the session archive kro-prod-session-archive (bucket kro-prod-backups-sessions) is locked for 0 "
                  "days; its records must be locked for at least 30 days, every object (prefix \"\")",
                  "kro-prod logs admin sessions, but its product archives none off the host: a compromised host "
                  "could erase them"])],
               config={"production": True}))
