"""Data-protection policies: protection from deletion in production, an off-site backup with a
restore test for every datastore, backup retention, and each datastore's RPO met by its backup
schedule."""

from __future__ import annotations

import re

from policy.rules.base import (HIGH, MANDATORY, MEDIUM, MISSING_PRODUCTION, PRODUCTION_PROPERTY, T_CLUSTER,
                               T_CONTAINER, T_R2_BACKUP, Case, by_type, integer, labels_of, mapping,
                               production, stack_policy, DO)
from policy.rules.fixtures import container, doc, res
from synth.replacements import DEPENDENCY_LOSS, STATEFUL_TYPES

# What holds state is decided once, in synth.replacements, for this pack and `synth diff` alike.
# Production also protects what the data depends on: the database users (the services' way in)
# and the VPC the clusters and droplets are attached to.
PROTECTED_TYPES = STATEFUL_TYPES | {DO + "databaseUser:DatabaseUser", DO + "vpc:Vpc"}
PRODUCTION = {"production": PRODUCTION_PROPERTY}


def _check_protected(args):
    flag = production(args.get_config() or {})
    if flag is None:
        yield MISSING_PRODUCTION, None
        return
    if not flag:
        return
    for resource in args.resources:
        if resource.resource_type in PROTECTED_TYPES and not resource.opts.protect:
            kind = resource.resource_type.rsplit(':', 1)[-1]
            if resource.resource_type in STATEFUL_TYPES:
                yield f"{kind} {resource.name} holds state in a production stack and is not protected", resource.urn
            else:
                yield (f"{kind} {resource.name} is not protected in a production stack; deleting it "
                       f"loses {DEPENDENCY_LOSS[resource.resource_type]}"), resource.urn


stack_policy(
    "platform-stateful-enable-protection", "Stateful resources in production stacks are protected from deletion.",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["Pulumi docs: protect resource option", "Kredete backup rules"],
    fix="Set protect (and retain_on_delete) on the resource in production.",
    check=_check_protected, config=PRODUCTION,
    cases=Case(doc(res(T_CLUSTER, "db", {}, protect=True)),
               [(doc(res(T_CLUSTER, "db", {}, stack="staging")), ["DatabaseCluster db holds state in a production stack and is not protected"]),
                (doc(res(T_CLUSTER, "db", {}, protect=True), res(DO + "vpc:Vpc", "net", {})),
                 ["Vpc net is not protected in a production stack; deleting it loses "
                  + DEPENDENCY_LOSS[DO + "vpc:Vpc"]])],
               config={"production": True}))


def datastores(args):
    for cluster in by_type(args, T_CLUSTER):
        if cluster.props.get("engine") in ("pg", "mongodb", "mysql", "redis", "valkey"):
            yield cluster
    for item in by_type(args, T_CONTAINER):
        if labels_of(item.props).get("platform.tier") == "data" and labels_of(item.props).get("platform.stateless") != "true":
            yield item


def _backups(args):
    found = {}
    for backup in by_type(args, T_R2_BACKUP):
        if backup.props.get("restoreTest"):
            found.setdefault(str(backup.props.get("source")), []).append(backup)
    return found


def _check_backups(args):
    covered = _backups(args)
    for store in datastores(args):
        if store.urn not in covered and store.name not in covered:
            yield f"datastore {store.name} has no R2Backup with a restore test", store.urn


BACKUP = T_R2_BACKUP
stack_policy(
    "platform-datastore-enable-offsite-backup", "Every datastore has an off-site R2Backup with a restore test.",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["Kredete backup rules (off-site, restores exercised)", "CIS Controls v8 11.2, 11.5"],
    fix="Give the datastore an R2Backup (restore test on); waive caches that hold nothing durable, with the reason.",
    check=_check_backups,
    cases=Case(doc(res(T_CLUSTER, "db", {"engine": "pg"}), res(BACKUP, "bk", {"source": "db", "restoreTest": True}, custom=False)),
               [(doc(res(T_CLUSTER, "db", {"engine": "pg"}), container(labels=[{"label": "platform.tier", "value": "data"}]),
                     res(BACKUP, "bk", {"source": "db", "restoreTest": False}, custom=False)),
                 ["datastore db has no R2Backup with a restore test", "datastore c has no R2Backup with a restore test"])]))


def _check_retention(args):
    flag = production(args.get_config() or {})
    if flag is None:
        yield MISSING_PRODUCTION, None
        return
    floor = 30 if flag else 7
    for backup in by_type(args, T_R2_BACKUP):
        days = integer(backup.props.get("retentionDays"))
        if not isinstance(days, (int, float)) or days < floor:
            yield (f"backup {backup.name} keeps {days} days; the floor is {floor} days "
                   f"{'in production' if flag else 'outside production'}"), backup.urn


stack_policy(
    "platform-backup-configure-retention", "Off-site backups keep at least 30 days in production and 7 elsewhere.",
    level=MANDATORY, severity=MEDIUM, category="data",
    sources=["Kredete data protection (PITR over at least 30 days)", "CIS Controls v8 11.2"],
    fix="Raise retention_days.",
    check=_check_retention, config=PRODUCTION,
    cases=Case(doc(res(BACKUP, "bk", {"source": "db", "retentionDays": 35}, custom=False)),
               [(doc(res(BACKUP, "bk", {"source": "db", "retentionDays": 7}, custom=False)),
                 ["backup bk keeps 7 days; the floor is 30 days in production"])],
               config={"production": True}))

# The RPO a datastore gets when nothing declares one: a daily backup, as the README documents
# (24 h between runs, the timer's 10 min randomised delay, and the 26 h freshness limit).
DEFAULT_RPO_HOURS = 26
RANDOMIZED_DELAY_HOURS = 10 / 60


def schedule_interval_hours(calendar: str) -> float | None:
    """Longest gap between runs of a systemd OnCalendar expression, in hours; None when the
    expression is not one of the forms read here (shorthands, ``DOW *-*-* H[,H|/N]:M:S``)."""
    text = calendar.strip().removesuffix(" UTC").strip()
    shorthand = {"minutely": 1 / 60, "hourly": 1, "daily": 24, "weekly": 168}
    if text in shorthand:
        return shorthand[text]
    match = re.fullmatch(r"(?:(\w{3}(?:[,.]+\w{3})*)\s+)?\*-\*-\*\s+([\d*/,]+):([\d*/,]+)(?::\d+)?", text)
    if not match:
        return None
    days, hours, minutes = match.groups()
    if days:
        count = len(re.split(r"[,]", days)) if ".." not in days else 7
        return 168 / count
    if minutes.startswith("*") or "/" in minutes or "," in minutes:
        step = int(minutes.split("/")[1]) if "/" in minutes else 1
        return step / 60 if hours == "*" else 24
    if hours == "*":
        return 1
    if "/" in hours:
        return int(hours.split("/")[1])
    points = sorted(int(h) for h in hours.split(","))
    gaps = [b - a for a, b in zip(points, points[1:])] + [24 - points[-1] + points[0]]
    return max(gaps)


def _check_rpo(args):
    """Per datastore (a backup's ``source``), the best of its jobs must meet its RPO: a
    point-in-time job loses at most its WAL shipping interval (``rpoMinutesEffective``), a
    scheduled dump or mirror its longest gap between runs plus the randomized delay."""
    config = args.get_config() or {}
    declared = mapping(config.get("rpoHours"))
    by_source: dict = {}
    for backup in by_type(args, T_R2_BACKUP):
        by_source.setdefault(str(backup.props.get("source")), []).append(backup)
    for source, backups in by_source.items():
        minutes = [float(b.props.get("rpoMinutesDeclared")) for b in backups
                   if b.props.get("rpoMinutesDeclared") is not None]
        rpo = (min(minutes) / 60 if minutes else None) or next(
            (integer(b.props.get("rpoHours")) for b in backups if b.props.get("rpoHours")), None) \
            or integer(declared.get(source) or config.get("defaultRpoHours", DEFAULT_RPO_HOURS))
        windows = []
        for backup in backups:
            if backup.props.get("kind") == "pitr" and backup.props.get("rpoMinutesEffective") is not None:
                windows.append((float(backup.props.get("rpoMinutesEffective")) / 60, None, backup))
                continue
            interval = schedule_interval_hours(str(backup.props.get("schedule") or ""))
            if interval is None:
                yield f"backup {backup.name} has schedule {backup.props.get('schedule')!r}, whose interval cannot be read", backup.urn
                continue
            windows.append((interval + RANDOMIZED_DELAY_HOURS, interval, backup))
        if not windows:
            continue
        loss, interval, backup = min(windows, key=lambda w: w[0])
        if loss > float(rpo):
            how = (f"runs every {interval:g} h" if interval is not None
                   else f"ships WAL every {loss * 60:g} min")
            yield (f"backup {backup.name} {how}, so {source} can lose "
                   f"{loss:.2f} h of data; its RPO is {float(rpo):g} h"), backup.urn


stack_policy(
    "platform-backup-configure-rpo", "Each datastore's backup schedule meets its declared RPO (26 h when none is declared).",
    level=MANDATORY, severity=HIGH, category="data",
    sources=["Kredete data protection (an RPO per service)", "CIS Controls v8 11.1"],
    fix="Back up more often, or declare the RPO the business accepts (rpoHours).",
    check=_check_rpo, config={"rpoHours": {"type": "object"}, "defaultRpoHours": {"type": "number"}},
    cases=Case(doc(res(BACKUP, "bk", {"source": "db", "schedule": "*-*-* 03:00:00 UTC"}, custom=False),
                   res(BACKUP, "bk2", {"source": "orders", "schedule": "*-*-* 00/4:00:00 UTC"}, custom=False)),
               [(doc(res(BACKUP, "bk", {"source": "db", "schedule": "*-*-* 03:00:00 UTC"}, custom=False),
                     res(BACKUP, "bk2", {"source": "orders", "schedule": "*-*-* 03:00:00 UTC"}, custom=False)),
                 ["backup bk2 runs every 24 h, so orders can lose 24.17 h of data; its RPO is 6 h"])],
               config={"rpoHours": {"orders": 6}}))
