"""Management-plane policies (issue #22): in production, SSH answers only from the WireGuard
management network or a host's own bastion, through every layer that admits it (DigitalOcean
firewalls, UFW), unless break-glass is on with a reason and an unexpired date; and every
product's admin-session records are archived where its hosts cannot erase them."""

from __future__ import annotations

import datetime
from typing import Iterator

from policy.parsers.ufw import ufw_rules
from policy.rules.base import (CRITICAL, HIGH, MANDATORY, T_COMMAND, T_DROPLET, T_FIREWALL, T_ONPREM, Case, by_type,
                               MISSING_PRODUCTION, PRODUCTION_PROPERTY, T_MANAGEMENT, T_R2, T_R2_LOCK, T_SESSION_ARCHIVE, is_internal, items, mapping,
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


def _lock_days(rule) -> float:
    """The days a bucket lock rule keeps every object (prefix ""): ``Age`` in whole days,
    ``Indefinite`` for ever, 0 for a disabled rule, a prefix rule or any other condition."""
    condition = mapping(rule.get("condition"))
    if not rule.get("enabled") or rule.get("prefix"):
        return 0
    if condition.get("type") == "Indefinite":
        return float("inf")
    if condition.get("type") == "Age":
        return int(condition.get("maxAgeSeconds") or 0) // 86400
    return 0


def _archive_problems(archive, children, locks, floor) -> Iterator[str]:
    """What keeps ``archive`` (a SessionArchive) from holding its records out of its hosts' reach:
    its own bucket (a child R2Bucket of the name it declares), the step that installs the uploader
    on the host (a child command), and one lock (R2 keeps one lock configuration per bucket) in
    the bucket's account whose rule for every object lasts ``floor`` days or more."""
    bucket_name = str(archive.props.get("bucket") or "")
    buckets = [c for c in children if c.resource_type == T_R2 and str(c.props.get("name") or "") == bucket_name]
    if not buckets:
        yield f"the session archive {archive.name} has no R2 bucket {bucket_name or '(none named)'} of its own"
        return
    if not any(c.resource_type == T_COMMAND for c in children):
        yield f"nothing installs the uploader of the session archive {archive.name} on its host"
    mine = locks.get((str(buckets[0].props.get("accountId") or ""), bucket_name), [])
    if len(mine) > 1:
        yield (f"the session archive's bucket {bucket_name} has {len(mine)} bucket locks; R2 keeps one lock "
               "configuration per bucket, so one would replace the other")
    days = max((_lock_days(mapping(r)) for lock in mine for r in items(lock.props.get("rules"))), default=0)
    if days < floor:
        yield (f"the session archive {archive.name} (bucket {bucket_name}) is locked for {days:g} days; its records "
               f"must be locked for at least {floor} days, every object (prefix \"\")")


def _check_session_archive(args):
    flag = production(args.get_config() or {})
    if flag is None:
        yield MISSING_PRODUCTION, None
        return
    floor = SESSION_LOCK_DAYS_PROD if flag else 1
    locks: dict[tuple[str, str], list] = {}
    for lock in by_type(args, T_R2_LOCK):
        locks.setdefault((str(lock.props.get("accountId") or ""), str(lock.props.get("bucketName") or "")), []).append(lock)
    children: dict[str, list] = {}
    for resource in args.resources:
        parent = getattr(resource, "parent", None)
        if parent is not None:
            children.setdefault(str(parent.urn), []).append(resource)
    archived = set()
    for archive in by_type(args, T_SESSION_ARCHIVE):
        problems = list(_archive_problems(archive, children.get(str(archive.urn), []), locks, floor))
        for problem in problems:
            yield problem, archive.urn
        if not problems:
            archived.add(_product(archive))
    for host in by_type(args, T_DROPLET) + by_type(args, T_ONPREM):
        if _product(host) not in archived:
            yield (f"{host.name} logs admin sessions, but its product archives none off the host: a compromised "
                   "host could erase them"), host.urn
            archived.add(_product(host))  # one finding per product


def _archive(days: int | None, *, bucket: str = "kro-prod-backups-sessions", account: str = "a" * 32,
             lock_account: str | None = None, kind: str = "Age") -> list[dict]:
    archive = res(T_SESSION_ARCHIVE, "kro-prod-session-archive", {"bucket": bucket, "lockDays": days or 0,
                                                                   "prefix": "kro-prod"}, custom=False)
    child = {"parent": archive["urn"]}
    out = [archive, {**res(T_R2, "kro-prod-session-archive-bucket", {"accountId": account, "name": bucket}), **child},
           {**script("kro-prod-session-archive-install", body="rclone move ..."), **child}]
    if days is not None:
        condition = {"type": kind, **({"maxAgeSeconds": days * 86400} if kind == "Age" else {})}
        out.append(res(T_R2_LOCK, "kro-prod-session-archive-lock", {
            "accountId": lock_account or account, "bucketName": bucket,
            "rules": [{"id": "retain-sessions", "enabled": True, "prefix": "", "condition": condition}]}))
    return out


_HOST = res(T_DROPLET, "kro-prod", {"name": "kro-prod"})
_NONE = "kro-prod logs admin sessions, but its product archives none off the host: a compromised host could erase them"


def _locked(days: int) -> str:
    return (f"the session archive kro-prod-session-archive (bucket kro-prod-backups-sessions) is locked for {days} "
            "days; its records must be locked for at least 30 days, every object (prefix \"\")")


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
               [(doc(_HOST), [_NONE]),
                (doc(_HOST, *_archive(7)), [_locked(7), _NONE]),
                (doc(_HOST, *_archive(None)), [_locked(0), _NONE]),
                (doc(_HOST, *_archive(30, lock_account="b" * 32)), [_locked(0), _NONE]),
                (doc(_HOST, *_archive(30)[:2], *_archive(30)[3:]),
                 ["nothing installs the uploader of the session archive kro-prod-session-archive on its host", _NONE]),
                (doc(_HOST, *_archive(30), {**_archive(30)[-1], "urn": _archive(30)[-1]["urn"] + "-2", "name": "l2"}),
                 ["the session archive's bucket kro-prod-backups-sessions has 2 bucket locks; R2 keeps one lock "
                  "configuration per bucket, so one would replace the other", _NONE])],
               config={"production": True}))
