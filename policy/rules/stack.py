"""Whole-stack network policies: reachability across every firewall layer (DigitalOcean
firewalls, database firewalls, container bindings, UFW) compared with the tier model, and the
waiver register."""

from __future__ import annotations

import datetime
import ipaddress
import re

from policy.parsers.ufw import ufw_rules
from policy.rules.base import (CRITICAL, HIGH, MANDATORY, T_COMMAND, T_CONTAINER, T_DB_FIREWALL, T_DROPLET,
                               T_FIREWALL, T_MANAGEMENT, T_ONPREM, WEB_PORTS, Case, by_type, firewall_tier,
                               integer, is_internal, is_world, items, labels_of, mapping, network, port_range,
                               stack_policy, stdin_of, today, wireguard_ports, is_wireguard_rule)
from policy.rules.fixtures import container, doc, res, script

# --- reachability -------------------------------------------------------------------------------
# The tier model (DESIGN.md), written here on its own so a bug in components/tiers.py shows:
# who may open a connection to a tier, on which ports.
MGMT_PORTS = {22, 9100, 8080, 9115, 9090, 9093}
# A host of another tier that runs mgmt-tier containers (monitoring) may use the mgmt ports
# only; its other flows are judged by the host's own tier.
MGMT_CONTAINERS = "mgmt containers"
# Where Docker publishes a port given no host port: net.ipv4.ip_local_port_range's default.
EPHEMERAL = (32768, 60999)
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
            # No external port: Docker picks one from the ephemeral range, so the whole range
            # is judged (net.ipv4.ip_local_port_range's default).
            span, shown = ((number, number), str(number)) if number else (EPHEMERAL, f"{EPHEMERAL[0]}-{EPHEMERAL[1]}")
            if (port.get("ip") or "0.0.0.0") in ("0.0.0.0", "::") and not allowed_flow({"internet"}, tier or "none", [span]):
                yield (f"internet -> {item.name} ({tier}) on {shown}: published on all interfaces"), item.urn, f"internet->{item.name}:{shown}"
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
                # No host port: Docker picks one of the ephemeral range, not 443.
                (doc(container(labels=[{"label": "platform.tier", "value": "edge"}],
                               ports=[{"internal": 443, "ip": "0.0.0.0"}])),
                 ["internet -> c (edge) on 32768-60999: published on all interfaces"]),
                (doc(*_HOSTS, _ufw("p-data-ufw", "10.0.0.3", "ufw allow proto tcp from 10.0.0.1/32 to any port 27017  # waiver: old-read\n")),
                 ["p-edge (edge) -> p-data (data) on 27017 through UFW breaks the tier model (waiver old-read expired on 2000-01-01)"])],
               config={"waivers": [{"name": "gateway-reads", "reason": "read-only role",
                                    "expires": str(today() + datetime.timedelta(days=30))},
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
    check=_check_waiver_register, waivable=False,
    cases=Case(doc(script("ufw", body="ufw allow proto tcp from 10.0.0.1/32 to any port 5432  # waiver: gateway-reads")),
               [(doc(script("ufw", body="ufw allow proto tcp from 10.0.0.1/32 to any port 5432  # waiver: gateway-reads\n"
                                        "ufw allow proto tcp from 10.0.0.1/32 to any port 6379  # waiver: cache-peek\n"
                                        "ufw allow proto tcp from 10.0.0.1/32 to any port 27017  # waiver: undeclared")),
                 ["waiver cache-peek expired on 2001-02-03; renew it with a reason or remove the exception",
                  "ufw carries waiver undeclared, which the policy config does not declare"])],
               config={"waivers": [{"name": "gateway-reads", "reason": "read-only role", "expires": "2999-01-01"},
                                   {"name": "cache-peek", "reason": "debug", "expires": "2001-02-03"}]}))
