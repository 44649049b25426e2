"""Whole-stack policies: protection in production, backup coverage, retention and RPO, uptime
coverage, plaintext secrets, reachability across every firewall layer compared with the tier
model, and the waiver register."""

from __future__ import annotations

import datetime
import ipaddress
import re
from urllib.parse import urlsplit

from policy.parsers.ufw import ufw_rules
from policy.rules.base import (CRITICAL, HIGH, MANDATORY, MEDIUM, MISSING_PRODUCTION,
                               PRODUCTION_PROPERTY, SECRET_MASK, T_APP, T_CF_RECORD, T_CLUSTER,
                               T_COMMAND, T_CONTAINER, T_DB_FIREWALL, T_DNS, T_DROPLET,
                               T_FIREWALL, T_MANAGEMENT, T_ONPREM, T_R2_BACKUP, T_UPTIME, T_UPTIME_ALERT,
                               WEB_PORTS, Case, by_type, firewall_tier, integer, is_internal, is_world, items,
                               labels_of, mapping, network, port_range, production,
                               resource_policy, stack_policy, stdin_of, today, walk_strings, wireguard_ports,
                               is_wireguard_rule,
                               DO)
from policy.rules.fixtures import container, doc, res, script, urn
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


SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|access_?key|dsn)", re.IGNORECASE)
# The scheme is bounded so that a long value is searched in linear time.
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]{0,31}://[^\s:/@]+:[^\s@/]+@", re.IGNORECASE)


def _declared_secret_envs_removed(spec):
    """The spec without the values App Platform stores encrypted (envs of type SECRET)."""
    def strip(value):
        if isinstance(value, dict):
            if value.get("type") == "SECRET" and "value" in value:
                return {k: v for k, v in value.items() if k != "value"}
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(_plain(spec))


def _plain(value):
    if hasattr(value, "items") and not isinstance(value, dict):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if not isinstance(value, str) and hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        return [_plain(v) for v in value]
    return value


def _check_plaintext_secrets(props, args):
    secret_inputs = getattr(args, "secret_inputs", None)
    if secret_inputs is None:
        args.not_applicable("the engine unwraps secrets before policies see them; "
                            "python -m synth STACK --policy checks this rule on every PR")
    # The capture masks each secret leaf ("[secret]"): an input that is secret only in some
    # entries (one env var of a list) has every other entry judged on its own.
    leaves = set(getattr(args, "secret_leaves", None) or ())
    checked = {}
    for key in props:
        if key not in secret_inputs:
            checked[key] = props[key]
        elif args.resource_type == T_APP and key == "spec":
            checked[key] = _declared_secret_envs_removed(props[key])
        elif key not in leaves and any(leaf.startswith((f"{key}[", f"{key}.")) for leaf in leaves):
            checked[key] = props[key]
    for path, text in walk_strings(checked):
        if text == SECRET_MASK or path in leaves or path.startswith(tuple(f"{leaf}{sep}" for leaf in leaves
                                                                           for sep in "[.")):
            continue
        if "BEGIN" in text and "PRIVATE KEY" in text:
            yield f"{path} holds a private key in plain text; pass it as a secret"
        elif URL_WITH_CREDENTIALS.search(text):
            yield f"{path} holds a URL with credentials in plain text; pass it as a secret"
        elif re.match(r"^[A-Z0-9_]+=.+", text) and SECRET_NAME.search(text.split("=", 1)[0]):
            yield f"{path} sets {text.split('=', 1)[0]} in plain text; pass it as a secret"
        elif SECRET_NAME.search(path.rsplit(".", 1)[-1]) and text and not path.startswith("triggers"):
            if args.resource_type != T_COMMAND and not path.endswith(("Name", "name", "Id", "id")):
                yield f"{path} looks like a secret and is plain text; pass it as a secret"


resource_policy(
    "platform-resource-disallow-plaintext-secrets", "No input that looks like a secret (password, token, key, URL with credentials) is plain text.",
    level=MANDATORY, severity=CRITICAL, category="data",
    sources=["CWE-312", "Checkov CKV_SECRET_* (secrets scanning)", "Kredete secrets never plaintext"],
    fix="Pass the value as a Pulumi secret (config --secret or pulumi_random).",
    types=[T_CONTAINER, T_APP, T_COMMAND, T_DROPLET, "cloudflare:index/apiToken:ApiToken",
           DO + "spacesKey:SpacesKey", "minio:index/iamUser:IamUser"],
    check=_check_plaintext_secrets,
    cases=Case(doc(res(T_CONTAINER, "c", {"envs": "[secret]"}, secret_inputs=["envs"]),
                   res(T_APP, "app", {"spec": {"services": [{"name": "api", "envs": [{"key": "JWT", "type": "SECRET", "value": "hunter2-very-secret"}]}]}},
                       secret_inputs=["spec"])),
               [(doc(container(envs=["DB_PASSWORD=hunter2", "URL=https://u:p@example.com/x"])),
                 ["envs[0] sets DB_PASSWORD in plain text; pass it as a secret",
                  "envs[1] holds a URL with credentials in plain text; pass it as a secret"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"name": "api", "envs": [
                    {"key": "JWT", "type": "SECRET", "value": "x"}, {"key": "DB", "type": "GENERAL", "value": "postgres://u:pw@db/x"}]}]}},
                    secret_inputs=["spec"])),
                 ["spec.services[0].envs[1].value holds a URL with credentials in plain text; pass it as a secret"])]))


# --- reachability -------------------------------------------------------------------------------
# The tier model (DESIGN.md), written here on its own so a bug in components/tiers.py shows:
# who may open a connection to a tier, on which ports.
MGMT_PORTS = {22, 9100, 8080, 9115, 9090, 9093}
# A host of another tier that runs mgmt-tier containers (monitoring) may use the mgmt ports
# only; its other flows are judged by the host's own tier.
MGMT_CONTAINERS = "mgmt containers"
ALLOWED = {"edge": {"internet", "edge"}, "app": {"edge", "app"}, "data": {"app", "mgmt"}, "mgmt": {"mgmt"}}


def allowed_flow(sources: set[str], destination: str, ports: list[tuple[int, int]]) -> bool:
    """True when a host with tiers ``sources`` may open ``ports`` on a ``destination``-tier host."""
    every = [p for low, high in ports for p in range(low, min(high, low + 2048) + 1)]
    if "internet" in sources:
        return destination == "edge" and set(every) <= WEB_PORTS
    if sources & {"mgmt", MGMT_CONTAINERS} and set(every) <= MGMT_PORTS:
        return True
    return bool(sources & ALLOWED.get(destination, set()))


def _host_map(args):
    """address -> (host name, tiers on it, host urn) for on-prem hosts."""
    hosts = {}
    for host in by_type(args, T_ONPREM):
        tiers = {str(host.props.get("tier"))}
        if any(labels_of(c.props).get("platform.tier") == "mgmt" for c in by_type(args, T_CONTAINER)
               if c.parent is not None and c.parent.urn == host.urn):
            tiers.add(MGMT_CONTAINERS)
        for key in ("address", "privateAddress"):
            if host.props.get(key):
                hosts[str(host.props.get(key))] = (host.name, tiers, str(host.props.get("tier")))
    return hosts


def management_networks(args) -> list:
    """The stack's management networks (``platform:components:ManagementNetwork``)."""
    return [n for n in (network(m.props.get("network")) for m in by_type(args, T_MANAGEMENT)) if n is not None]


def _source_tiers(cidr, hosts, managed=()):
    if cidr == "any" or is_world(cidr):
        return "internet", {"internet"}
    parsed = network(cidr)
    if parsed is None:
        return cidr, {"internet"}
    if any(parsed.version == m.version and parsed.subnet_of(m) for m in managed):
        return cidr, {"mgmt"}  # DESIGN.md "mgmt: admin CIDRs / VPN only": the WireGuard network
    for address, (name, tiers, _) in hosts.items():
        if parsed.num_addresses == 1 and ipaddress.ip_address(address) in parsed:
            return name, tiers
    if not is_internal(parsed):
        return cidr, {"mgmt"}  # admin CIDRs: DESIGN.md "mgmt: admin CIDRs / VPN only"
    return cidr, {"unknown"}


def _check_reachability(args):
    hosts = _host_map(args)
    managed = management_networks(args)
    vpn = wireguard_ports(args)
    droplets = {d.urn: d for d in by_type(args, T_DROPLET)}
    for firewall in by_type(args, T_FIREWALL):
        tier = firewall_tier(firewall.props.get("name"))
        for rule in items(firewall.props.get("inboundRules")):
            rule = mapping(rule)
            range_ = port_range(rule.get("portRange"))
            if range_ and rule.get("protocol") != "icmp" and any(is_world(s) for s in items(rule.get("sourceAddresses"))) \
                    and not is_wireguard_rule(rule.get("protocol"), range_, vpn) \
                    and not allowed_flow({"internet"}, tier or "none", [range_]):
                flow = f"internet->{firewall.props.get('name')}:{rule.get('portRange')}"
                yield (f"internet -> {firewall.props.get('name')} ({tier}) on {rule.get('portRange')}: "
                       "only the edge tier on 80/443 faces the internet"), firewall.urn, flow
            tags = [str(t) for t in items(rule.get("sourceTags")) if str(t).startswith("tier-")]
            tiers = {t.removeprefix("tier-") for t in tags} | ({"edge"} if items(rule.get("sourceLoadBalancerUids")) else set())
            if range_ and tiers and not allowed_flow(tiers, tier or "none", [range_]):
                flow = f"{','.join(sorted(tiers))}->{firewall.props.get('name')}:{rule.get('portRange')}"
                yield (f"{', '.join(sorted(tiers))} -> {firewall.props.get('name')} ({tier}) on "
                       f"{rule.get('portRange')} through a DigitalOcean firewall breaks the tier model"), firewall.urn, flow
    for db_firewall in by_type(args, T_DB_FIREWALL):
        for rule in items(db_firewall.props.get("rules")):
            rule = mapping(rule)
            if rule.get("type") == "droplet":
                for dep in db_firewall.dependencies:
                    if dep.urn in droplets:
                        tags = {str(t) for t in items(dep.props.get("tags"))}
                        tiers = {t.removeprefix("tier-") for t in tags if t.startswith("tier-")}
                        if not allowed_flow(tiers, "data", [(1, 65535)]):
                            yield (f"{dep.name} ({', '.join(sorted(tags)) or 'untagged'}) -> data "
                                   "tier: only app and mgmt tiers reach data"), db_firewall.urn, f"{dep.name}->data"
            elif rule.get("type") == "ip_addr" and is_world(rule.get("value")):
                yield "internet -> data tier through a database firewall", db_firewall.urn, "internet->data"
    for item in by_type(args, T_CONTAINER):
        tier = labels_of(item.props).get("platform.tier")
        for port in items(item.props.get("ports")):
            port = mapping(port)
            number = integer(port.get("external"))
            if (port.get("ip") or "0.0.0.0") in ("0.0.0.0", "::") and not allowed_flow({"internet"}, tier or "none", [(number, number)]):
                yield (f"internet -> {item.name} ({tier}) on {number}: published on all interfaces"), item.urn, f"internet->{item.name}:{number}"
    for command in by_type(args, T_COMMAND):
        rules, _ = ufw_rules(stdin_of(command.props))
        connection = mapping(command.props.get("connection"))
        host = hosts.get(str(connection.get("host")))
        for rule in rules:
            if rule.action not in ("allow", "limit") or rule.direction != "in":
                continue
            source, tiers = _source_tiers(rule.src, hosts, managed)
            if host is None and "internet" not in tiers:
                continue
            ranges = rule.port_ranges()
            if "internet" in tiers and len(ranges) == 1 and is_wireguard_rule(rule.proto, ranges[0], vpn):
                continue
            destination = host[2] if host else None
            # A host of unknown tier is judged at its kindest (edge): only 80/443 may face the world.
            if not allowed_flow(tiers, destination or "edge", rule.port_ranges()):
                target = host[0] if host else command.name
                flow = f"{source}->{target}:{rule.dst_port}"
                shown = source if source == "internet" else f"{source} ({', '.join(sorted(tiers))})"
                yield (f"{shown} -> {target} ({destination or 'unknown tier'}) on "
                       f"{rule.dst_port} through UFW breaks the tier model"), command.urn, flow, rule.waiver


_HOSTS = [res(T_ONPREM, "p-app", {"tier": "app", "address": "10.0.0.2", "privateAddress": "10.0.0.2"}, custom=False),
          res(T_ONPREM, "p-data", {"tier": "data", "address": "10.0.0.3", "privateAddress": "10.0.0.3"}, custom=False),
          res(T_ONPREM, "p-edge", {"tier": "edge", "address": "203.0.113.5", "privateAddress": "10.0.0.1"}, custom=False)]


def _ufw(name, host, body):
    command = script(name, body="ufw default deny incoming\n" + body)
    command["inputs"]["connection"]["host"] = host
    return command


stack_policy(
    "platform-stack-configure-tier-reachability",
    "Flows computed across DigitalOcean firewalls, database firewalls, container bindings and UFW follow the tier model.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["Kredete network tiers (DESIGN.md tier model)", "CIS Controls v8 12.2 (segmentation)"],
    fix="Remove the flow, or declare a waiver with reason and expiry in policy/config.<stack>.json.",
    check=_check_reachability,
    cases=Case(doc(*_HOSTS, res(T_FIREWALL, "f", {"name": "x-edge", "inboundRules": [{"protocol": "tcp", "portRange": "443", "sourceAddresses": ["0.0.0.0/0"]}]}),
                   _ufw("p-data-ufw", "10.0.0.3", "ufw allow proto tcp from 10.0.0.2/32 to any port 5432\n"
                                                   "ufw allow proto tcp from 10.0.0.1/32 to any port 5432  # waiver: gateway-reads\n"),
                   _ufw("p-edge-ufw", "203.0.113.5", "ufw allow 443/tcp\nufw allow proto tcp from 198.51.100.10/32 to any port 22\n"),
                   res(T_FIREWALL, "g", {"name": "x-app", "inboundRules": [{"protocol": "tcp", "portRange": "3000", "sourceTags": ["tier-edge"]}]})),
               [(doc(*_HOSTS, res(T_FIREWALL, "f", {"name": "x-data", "inboundRules": [{"protocol": "tcp", "portRange": "5432", "sourceAddresses": ["0.0.0.0/0"]}]}),
                     _ufw("p-data-ufw", "10.0.0.3", "ufw allow proto tcp from 10.0.0.1/32 to any port 5432\nufw allow 6379/tcp\n")),
                 ["internet -> x-data (data) on 5432: only the edge tier on 80/443 faces the internet",
                  "p-edge (edge) -> p-data (data) on 5432 through UFW breaks the tier model",
                  "internet -> p-data (data) on 6379 through UFW breaks the tier model"]),
                (doc(res(T_FIREWALL, "f", {"name": "x-data", "inboundRules": [
                    {"protocol": "tcp", "portRange": "5432", "sourceTags": ["tier-edge", "web"]},
                    {"protocol": "tcp", "portRange": "5432", "sourceTags": ["tier-app"]}]})),
                 ["edge -> x-data (data) on 5432 through a DigitalOcean firewall breaks the tier model"]),
                (doc(*_HOSTS, _ufw("p-data-ufw", "10.0.0.3", "ufw allow proto tcp from 10.0.0.1/32 to any port 27017  # waiver: old-read\n")),
                 ["p-edge (edge) -> p-data (data) on 27017 through UFW breaks the tier model (waiver old-read expired on 2000-01-01)"])],
               config={"waivers": [{"name": "gateway-reads", "reason": "read-only role", "expires": "2999-01-01"},
                                   {"name": "old-read", "reason": "migration", "expires": "2000-01-01"}]}))


def _check_waiver_register(args):
    config = args.get_config() or {}
    declared = {str(mapping(w).get("name")): mapping(w) for w in items(config.get("waivers"))}
    for command in by_type(args, T_COMMAND):
        for token in sorted(set(re.findall(r"#\s*waiver:\s*([\w.-]+)", stdin_of(command.props)))):
            waiver = declared.get(token)
            if waiver is None:
                yield f"{command.name} carries waiver {token}, which the policy config does not declare", command.urn, "-"
            elif not waiver.get("reason") or not waiver.get("expires"):
                yield f"waiver {token} names no reason or expiry date", command.urn, "-"
            else:
                try:
                    until = datetime.date.fromisoformat(str(waiver.get("expires")))
                except ValueError:
                    yield f"waiver {token} expires {waiver.get('expires')!r}, which is not a YYYY-MM-DD date", command.urn, "-"
                    continue
                if until < today():
                    yield f"waiver {token} expired on {waiver.get('expires')}; renew it with a reason or remove the exception", command.urn, "-"


stack_policy(
    "platform-waiver-configure-reason-and-expiry", "Every waiver written on a resource is declared in policy config with a reason and an unexpired date.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["Kredete tier model (exceptions are named, documented waivers)"],
    fix="Declare the waiver in policy/config.<stack>.json with reason and expires (YYYY-MM-DD), or remove the exception.",
    check=_check_waiver_register,
    cases=Case(doc(script("ufw", body="ufw allow proto tcp from 10.0.0.1/32 to any port 5432  # waiver: gateway-reads")),
               [(doc(script("ufw", body="ufw allow proto tcp from 10.0.0.1/32 to any port 5432  # waiver: gateway-reads\n"
                                        "ufw allow proto tcp from 10.0.0.1/32 to any port 6379  # waiver: cache-peek\n"
                                        "ufw allow proto tcp from 10.0.0.1/32 to any port 27017  # waiver: undeclared")),
                 ["waiver cache-peek expired on 2001-02-03; renew it with a reason or remove the exception",
                  "ufw carries waiver undeclared, which the policy config does not declare"])],
               config={"waivers": [{"name": "gateway-reads", "reason": "read-only role", "expires": "2999-01-01"},
                                   {"name": "cache-peek", "reason": "debug", "expires": "2001-02-03"}]}))
