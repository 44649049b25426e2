"""Network policies: DigitalOcean firewalls, database trusted sources, load balancers and
container port bindings, checked against the tier model (DESIGN.md, "The tier model")."""

from __future__ import annotations

import datetime

from policy.parsers.ufw import ufw_rules
from policy.rules.base import (ADVISORY, CRITICAL, HIGH, MANDATORY, MEDIUM, SENSITIVE_PORTS,
                               T_CLUSTER, T_COMMAND, T_CONTAINER, T_DB_FIREWALL, T_DROPLET,
                               T_FIREWALL, T_LB, T_ONPREM, TIERS, WEB_PORTS, Case, by_type, firewall_tier, integer,
                               T_MANAGEMENT, WIREGUARD_PORT, is_internal, is_wireguard_rule, is_world, items, labels_of, mapping, network, port_range, ports_in,
                               production, resource_policy, stack_policy, stdin_of, today)
from policy.rules.fixtures import WORLD, container, doc, res, script, urn

DEBUG_PORTS = {2375: "Docker API", 2376: "Docker API", 9229: "Node.js inspector",
               5005: "JVM debugger", 6060: "Go pprof", 9090: "Prometheus", 9093: "Alertmanager",
               9100: "node-exporter", 8080: "cAdvisor", 3000: "Grafana", 15672: "RabbitMQ admin",
               9001: "MinIO console", 8081: "nginx status"}


def fw(name, *rules, outbound=None):
    inputs = {"name": name, "inboundRules": [
        {"protocol": "tcp", "portRange": str(port), "sourceAddresses": list(sources)}
        for port, sources in rules]}
    if outbound is not None:
        inputs["outboundRules"] = outbound
    return inputs


def _with_wireguard(inputs, port=str(WIREGUARD_PORT)):
    inputs["inboundRules"].append({"protocol": "udp", "portRange": port, "sourceAddresses": list(WORLD)})
    return inputs


def _world_rules(props):
    for rule in items(props.get("inboundRules")):
        rule = mapping(rule)
        if any(is_world(s) for s in items(rule.get("sourceAddresses"))):
            if rule.get("protocol") != "icmp":
                yield rule, port_range(rule.get("portRange"))


def _check_world_only_web_on_edge(props, args):
    tier = firewall_tier(props.get("name"))
    for rule, range_ in _world_rules(props):
        if range_ is None or is_wireguard_rule(rule.get("protocol"), range_, {WIREGUARD_PORT}):
            continue
        if tier != "edge":
            yield (f"firewall {props.get('name')} ({tier or 'no tier'}) opens port "
                   f"{rule.get('portRange')} to the internet; only edge-tier firewalls may face it")
        elif not set(range(range_[0], range_[1] + 1)) <= WEB_PORTS:
            yield (f"firewall {props.get('name')} opens port {rule.get('portRange')} to the "
                   "internet; an edge firewall opens only 80 and 443")


resource_policy(
    "digitalocean-firewall-disallow-public-non-web",
    "Only edge-tier firewalls are open to the internet, and only on ports 80 and 443.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["Checkov CKV_DIO_4", "Trivy AVD-DIG-0001 (digitalocean-compute-no-public-ingress)"],
    fix="Remove 0.0.0.0/0 and ::/0 from the rule, or move the service behind the edge tier.",
    types=[T_FIREWALL], check=_check_world_only_web_on_edge,
    cases=Case(doc(res(T_FIREWALL, "f", _with_wireguard(fw("kro-prod-edge", (80, WORLD), (443, WORLD), (22, ["198.51.100.10/32"]))))),
               [(doc(res(T_FIREWALL, "f", fw("kro-prod-app", (8080, WORLD)))),
                 ["firewall kro-prod-app (app) opens port 8080 to the internet; only edge-tier firewalls may face it"]),
                (doc(res(T_FIREWALL, "f", _with_wireguard(fw("giv-prod-ops-mgmt"), port="51821"))),
                 ["firewall giv-prod-ops-mgmt (mgmt) opens port 51821 to the internet; only edge-tier firewalls may face it"]),
                (doc(res(T_FIREWALL, "f", fw("kro-prod-edge", ("8000-8100", ["::/0"])))),
                 ["firewall kro-prod-edge opens port 8000-8100 to the internet; an edge firewall opens only 80 and 443"])]))


def _check_sensitive_ports(props, args):
    for rule, range_ in _world_rules(props):
        if range_ is None:
            continue
        for port in ports_in([range_], SENSITIVE_PORTS):
            yield (f"firewall {props.get('name')} opens {SENSITIVE_PORTS[port]} ({port}) to the "
                   "internet; allow only admin CIDRs or internal peers")


resource_policy(
    "digitalocean-firewall-disallow-public-admin-ports",
    "SSH, database, cache, metrics and debug ports are never open to the internet.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["Trivy AVD-DIG-0001", "CIS Ubuntu 24.04 5.1 (SSH access limited)", "CIS Controls v8 4.4"],
    fix="Restrict the rule's source_addresses to admin_cidrs or the internal peers.",
    types=[T_FIREWALL], check=_check_sensitive_ports,
    cases=Case(doc(res(T_FIREWALL, "f", fw("kro-prod-edge", (443, WORLD), (22, ["198.51.100.10/32"])))),
               [(doc(res(T_FIREWALL, "f", fw("kro-prod-edge", (22, WORLD)))),
                 ["firewall kro-prod-edge opens SSH (22) to the internet; allow only admin CIDRs or internal peers"]),
                (doc(res(T_FIREWALL, "f", fw("kro-prod-edge", ("5400-5500", ["0.0.0.0/0"])))),
                 ["firewall kro-prod-edge opens Postgres (5432) to the internet; allow only admin CIDRs or internal peers"])]))


def _check_egress(props, args):
    for rule in items(props.get("outboundRules")):
        rule = mapping(rule)
        destinations = items(rule.get("destinationAddresses"))
        if rule.get("protocol") in ("tcp", "udp") and any(is_world(d) for d in destinations) \
                and port_range(rule.get("portRange")) == (1, 65535):
            yield (f"firewall {props.get('name')} allows {rule.get('protocol')} egress to the whole "
                   "internet on every port; allow the ports the hosts need (53, 123, 443)")


resource_policy(
    "digitalocean-firewall-configure-egress-ports",
    "DigitalOcean firewalls never allow egress to the whole internet on every port.",
    level=ADVISORY, severity=MEDIUM, category="network",
    sources=["Trivy AVD-DIG-0003 (digitalocean-compute-no-public-egress)"],
    fix="List outbound rules per port (DNS, NTP, HTTPS) instead of 1-65535 to 0.0.0.0/0.",
    types=[T_FIREWALL], check=_check_egress,
    cases=Case(doc(res(T_FIREWALL, "f", fw("x-edge", outbound=[
        {"protocol": "tcp", "portRange": "443", "destinationAddresses": WORLD}]))),
               [(doc(res(T_FIREWALL, "f", fw("x-edge", outbound=[
                   {"protocol": "tcp", "portRange": "1-65535", "destinationAddresses": WORLD}]))),
                 ["firewall x-edge allows tcp egress to the whole internet on every port; allow the ports the hosts need (53, 123, 443)"])]))


def _check_droplets_firewalled(args):
    guarded = {d.urn for f in by_type(args, T_FIREWALL) for d in f.dependencies
               if d.resource_type == T_DROPLET}
    for droplet in by_type(args, T_DROPLET):
        if droplet.urn not in guarded:
            yield f"droplet {droplet.name} is behind no DigitalOcean Firewall", droplet.urn


stack_policy(
    "digitalocean-droplet-enable-firewall",
    "Every droplet sits behind a DigitalOcean Firewall.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["Checkov CKV_DIO_4", "Trivy AVD-DIG-0001"],
    fix="Attach the droplet to its tier's Firewall (droplet_ids or tags).",
    check=_check_droplets_firewalled,
    cases=Case(doc(res(T_DROPLET, "d", {"name": "d"}), res(T_FIREWALL, "f", fw("x-edge"), deps=[urn(T_DROPLET, "d")])),
               [(doc(res(T_DROPLET, "d", {"name": "d"})), ["droplet d is behind no DigitalOcean Firewall"])]))


def _check_one_db_firewall(args):
    counts: dict[str, int] = {}
    for firewall in by_type(args, T_DB_FIREWALL):
        for dep in firewall.dependencies:
            if dep.resource_type == T_CLUSTER:
                counts[dep.urn] = counts.get(dep.urn, 0) + 1
    for cluster in by_type(args, T_CLUSTER):
        count = counts.get(cluster.urn, 0)
        if count != 1:
            yield (f"database cluster {cluster.name} has {count} DatabaseFirewalls; exactly one "
                   "keeps its trusted sources in one place"), cluster.urn


stack_policy(
    "digitalocean-databasecluster-enable-single-firewall",
    "Every managed database cluster has exactly one DatabaseFirewall.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["DigitalOcean docs: databases/how-to/secure (trusted sources)"],
    fix="Give the cluster one DatabaseFirewall listing every trusted source.",
    check=_check_one_db_firewall,
    cases=Case(doc(res(T_CLUSTER, "db", {"engine": "pg"}), res(T_DB_FIREWALL, "dbfw", {"rules": []}, deps=[urn(T_CLUSTER, "db")])),
               [(doc(res(T_CLUSTER, "db", {"engine": "pg"})),
                 ["database cluster db has 0 DatabaseFirewalls; exactly one keeps its trusted sources in one place"])]))


def _admin(config):
    return [n for n in (network(a) for a in items(config.get("adminCidrs"))) if n is not None]


def _check_trusted_sources(props, args):
    rules = items(props.get("rules"))
    if not rules:
        yield "the database firewall has no trusted sources"
    admins = _admin(args.get_config() or {})
    for rule in rules:
        rule = mapping(rule)
        kind, value = rule.get("type"), str(rule.get("value"))
        parsed = network(value) if kind == "ip_addr" else None
        if kind == "ip_addr" and parsed is None:
            yield f"the database firewall admits {value!r}, which is not an address"
        elif kind == "ip_addr" and is_world(value):
            yield f"the database firewall admits {value}, the whole internet"
        elif kind == "ip_addr" and not is_internal(parsed) and not any(
                parsed.version == a.version and parsed.subnet_of(a) for a in admins):
            yield (f"the database firewall admits public address {value}, which is not an admin "
                   "CIDR; admit app-tier droplets, apps or tags instead")
        elif kind == "tag" and value not in ("tier-app", "tier-mgmt"):
            yield f"the database firewall trusts tag {value}; only tier-app or tier-mgmt may reach data"


resource_policy(
    "digitalocean-databasefirewall-disallow-untrusted-sources",
    "A database firewall trusts only app-tier or mgmt-tier clients, never the internet.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["DigitalOcean docs: databases trusted sources", "CIS Controls v8 12.2"],
    fix="Trust the droplets, apps or tier tags that need the database; admin CIDRs go in config adminCidrs.",
    types=[T_DB_FIREWALL], check=_check_trusted_sources,
    config={"adminCidrs": {"type": "array", "items": {"type": "string"}}},
    cases=Case(doc(res(T_DB_FIREWALL, "dbfw", {"rules": [{"type": "droplet", "value": "123"}, {"type": "tag", "value": "tier-mgmt"},
                                                       {"type": "ip_addr", "value": "fd12:3456::/64"}]})),
               [(doc(res(T_DB_FIREWALL, "dbfw", {"rules": [{"type": "ip_addr", "value": "0.0.0.0/0"}, {"type": "tag", "value": "web"}]})),
                 ["the database firewall admits 0.0.0.0/0, the whole internet",
                  "the database firewall trusts tag web; only tier-app or tier-mgmt may reach data"]),
                (doc(res(T_DB_FIREWALL, "dbfw", {"rules": [{"type": "ip_addr", "value": "2a01:4f8::1/128"}]})),
                 ["the database firewall admits public address 2a01:4f8::1/128, which is not an admin CIDR; admit app-tier droplets, apps or tags instead"])],
               config={"adminCidrs": ["198.51.100.0/24"]}))


def _check_broad_private(props, args):
    for rule in items(props.get("rules")):
        rule = mapping(rule)
        parsed = network(rule.get("value")) if rule.get("type") == "ip_addr" else None
        if parsed is not None and is_internal(parsed) and not is_world(rule.get("value")) and \
                parsed.prefixlen < (24 if parsed.version == 4 else 64):
            yield (f"the database firewall trusts {rule.get('value')}, a whole private range; trust "
                   "the droplets, apps or tags that need the database")


resource_policy(
    "digitalocean-databasefirewall-disallow-broad-private-range",
    "A database firewall never trusts a whole private range instead of the resources that need it.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["DigitalOcean docs: databases trusted sources", "Kredete tier model (data reachable from app only)"],
    fix="Replace the range with droplet, app or tier-app tag rules.",
    types=[T_DB_FIREWALL], check=_check_broad_private,
    cases=Case(doc(res(T_DB_FIREWALL, "dbfw", {"rules": [{"type": "ip_addr", "value": "10.10.0.5/32"}]})),
               [(doc(res(T_DB_FIREWALL, "dbfw", {"rules": [{"type": "ip_addr", "value": "10.0.0.0/8"}]})),
                 ["the database firewall trusts 10.0.0.0/8, a whole private range; trust the droplets, apps or tags that need the database"]),
                (doc(res(T_DB_FIREWALL, "dbfw", {"rules": [{"type": "ip_addr", "value": "fd00::/8"}]})),
                 ["the database firewall trusts fd00::/8, a whole private range; trust the droplets, apps or tags that need the database"])]))


def _check_database_in_vpc(props, args):
    if not props.get("privateNetworkUuid"):
        yield f"database cluster {props.get('name')} has no private_network_uuid; put it in a VPC"


resource_policy(
    "digitalocean-databasecluster-enable-vpc",
    "Every managed database cluster sits in a VPC.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["DigitalOcean docs: VPC best practices"],
    fix="Set private_network_uuid to the stack's VPC.",
    types=[T_CLUSTER], check=_check_database_in_vpc,
    cases=Case(doc(res(T_CLUSTER, "db", {"name": "db", "privateNetworkUuid": "vpc-1"})),
               [(doc(res(T_CLUSTER, "db", {"name": "db"})), ["database cluster db has no private_network_uuid; put it in a VPC"])]))


def _check_lb(props, args):
    if not props.get("redirectHttpToHttps"):
        yield f"load balancer {props.get('name')} does not redirect HTTP to HTTPS"
    for rule in items(props.get("forwardingRules")):
        rule = mapping(rule)
        if str(rule.get("entryProtocol", "")).lower() == "http" and not props.get("redirectHttpToHttps"):
            yield f"load balancer {props.get('name')} serves plain HTTP on port {integer(rule.get('entryPort'))}"


resource_policy(
    "digitalocean-loadbalancer-enable-https-redirect",
    "DigitalOcean load balancers redirect HTTP to HTTPS and serve nothing over plain HTTP.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Trivy AVD-DIG-0002 (digitalocean-compute-enforce-https)"],
    fix="Set redirect_http_to_https and use https entry protocols.",
    types=[T_LB], check=_check_lb,
    cases=Case(doc(res(T_LB, "lb", {"name": "lb", "redirectHttpToHttps": True})),
               [(doc(res(T_LB, "lb", {"name": "lb", "forwardingRules": [{"entryProtocol": "http", "entryPort": 80}]})),
                 ["load balancer lb does not redirect HTTP to HTTPS", "load balancer lb serves plain HTTP on port 80"])]))


def _all_interfaces(port):
    return (mapping(port).get("ip") or "0.0.0.0") in ("0.0.0.0", "::", "")


def _check_container_bind(props, args):
    tier = labels_of(props).get("platform.tier")
    for port in items(props.get("ports")):
        if _all_interfaces(port) and tier != "edge":
            yield (f"container publishes port {integer(mapping(port).get('external'))} on "
                   f"{mapping(port).get('ip') or '0.0.0.0'} but its tier is {tier or 'unset'}; "
                   "Docker-published ports bypass the host firewall, so only edge containers may "
                   "listen on all interfaces")


resource_policy(
    "docker-container-disallow-public-bind-outside-edge",
    "Containers outside the edge tier never publish ports on all interfaces.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["CIS Docker 5.13 (bind incoming traffic to a specific host interface)",
             "KICS 451d79dc-0588-476a-ad03-3c7f0320abb3 (Container Traffic Not Bound To Host Interface)"],
    fix="Publish on 127.0.0.1 or the node's private address (ports[].ip).",
    types=[T_CONTAINER], check=_check_container_bind,
    cases=Case(doc(container(ports=[{"internal": 5432, "external": 5432, "ip": "127.0.0.1"}])),
               [(doc(container(ports=[{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}])),
                 ["container publishes port 5432 on 0.0.0.0 but its tier is app; Docker-published ports "
                  "bypass the host firewall, so only edge containers may listen on all interfaces"]),
                (doc(container(ports=[{"internal": 5432, "external": 5432}])),
                 ["container publishes port 5432 on 0.0.0.0 but its tier is app; Docker-published ports "
                  "bypass the host firewall, so only edge containers may listen on all interfaces"])]))


EDGE = [{"label": "platform.tier", "value": "edge"}]


def _check_debug_ports(props, args):
    if labels_of(props).get("platform.tier") != "edge":
        return
    for port in items(props.get("ports")):
        port = mapping(port)
        number = integer(port.get("external") or port.get("internal"))
        if _all_interfaces(port) and number not in WEB_PORTS:
            label = DEBUG_PORTS.get(number, "a non-web port")
            yield (f"edge container publishes {label} ({number}) on all interfaces; an edge "
                   "container faces the internet on 80 and 443 only")


resource_policy(
    "docker-container-disallow-public-debug-ports",
    "Edge containers publish nothing but 80 and 443 on all interfaces (no debug or admin ports).",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["CIS Docker 5.8 (only needed ports open)", "KICS 451d79dc-0588-476a-ad03-3c7f0320abb3"],
    fix="Publish debug and admin ports on 127.0.0.1 and reach them over SSH.",
    types=[T_CONTAINER], check=_check_debug_ports,
    cases=Case(doc(container(labels=EDGE, ports=[{"internal": 8443, "external": 443, "ip": "0.0.0.0"},
                                                  {"internal": 9229, "external": 9229, "ip": "127.0.0.1"}])),
               [(doc(container(labels=EDGE, ports=[{"internal": 9229, "external": 9229, "ip": "0.0.0.0"}])),
                 ["edge container publishes Node.js inspector (9229) on all interfaces; an edge container faces the internet on 80 and 443 only"])]))


def _check_tier_label(props, args):
    tier = labels_of(props).get("platform.tier")
    if tier not in TIERS:
        yield (f"container has platform.tier {tier or 'unset'}; every container carries one of "
               f"{', '.join(TIERS)} so the tier rules can apply")


resource_policy(
    "docker-container-configure-tier-label",
    "Every container carries a platform.tier label naming its tier.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["Kredete tier model (every workload has one tier)"],
    fix="Set the container's tier in the product config; the component writes the label.",
    types=[T_CONTAINER], check=_check_tier_label,
    cases=Case(doc(container()),
               [(doc(container(labels=[])), ["container has platform.tier unset; every container carries one of edge, app, data, mgmt so the tier rules can apply"])]))


def _check_droplet_tier(props, args):
    tags = [str(t) for t in items(props.get("tags"))]
    if not any(t in (f"tier-{x}" for x in TIERS) for t in tags):
        yield f"droplet {props.get('name')} has no tier-<tier> tag; firewalls and policies select droplets by it"


resource_policy(
    "digitalocean-droplet-configure-tier-tag",
    "Every droplet carries a tier-<tier> tag.",
    level=MANDATORY, severity=MEDIUM, category="network",
    sources=["Kredete tier model (every host has one tier)"],
    fix="Tag the droplet tier-edge, tier-app, tier-data or tier-mgmt.",
    types=[T_DROPLET], check=_check_droplet_tier,
    cases=Case(doc(res(T_DROPLET, "d", {"name": "d", "tags": ["tier-edge"]})),
               [(doc(res(T_DROPLET, "d", {"name": "d", "tags": ["web"]})),
                 ["droplet d has no tier-<tier> tag; firewalls and policies select droplets by it"])]))


def _check_published_ports_filtered(args):
    """Docker DNATs published ports before UFW sees them; only DOCKER-USER can filter them."""
    scripts = "\n".join(stdin_of(c.props) for c in by_type(args, T_COMMAND))
    for item in by_type(args, T_CONTAINER):
        for port in items(item.props.get("ports")):
            port = mapping(port)
            address = port.get("ip") or "0.0.0.0"
            if address in ("0.0.0.0", "::") or str(address).startswith("127."):
                continue
            external = integer(port.get("external"))
            rule = f"--ctorigdst {address} --ctorigdstport {external} -j DROP"
            if rule not in scripts:
                yield (f"container {item.name} publishes {address}:{external}, which "
                       "bypasses UFW, and no DOCKER-USER rule filters it"), item.urn


_FILTERED = container(ports=[{"ip": "10.40.0.12", "external": 4000, "internal": 4000},
                             {"ip": "127.0.0.1", "external": 3300, "internal": 3000}])
stack_policy(
    "docker-container-enable-published-port-filter",
    "A port published on a private address is filtered in DOCKER-USER, which Docker consults before its own rules.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["Docker docs: packet filtering and firewalls (DOCKER-USER)", "CIS Docker 5.13"],
    fix="Add the port to the node's DOCKER-USER rules with the sources UFW admits.",
    check=_check_published_ports_filtered,
    cases=Case(doc(_FILTERED, script("fw", body="iptables -A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.40.0.12 --ctorigdstport 4000 -j DROP")),
               [(doc(_FILTERED, script("fw", body="iptables -A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.40.0.12 --ctorigdstport 5000 -j DROP")),
                 ["container c publishes 10.40.0.12:4000, which bypasses UFW, and no DOCKER-USER rule filters it"])]))


# --- the bridge guard -----------------------------------------------------------------------------
# Docker's own DOCKER chain accepts every packet addressed to a published container port, from
# any interface, so a neighbour that routes the container subnet via the host skips the filter on
# the published address. The DOCKER-USER rules a host installs must drop every new connection
# into a container bridge that did not come from a bridge and was not DNATed by Docker. Judged
# here by walking the rules file as the kernel would for such a packet, not by its text.
DOCKER_BRIDGES = ("docker0", "br-0123456789ab")
"""The default bridge, and a user-defined network's bridge as Docker names it (br-<id>)."""
_RULES_FILE = "/etc/platform/docker-user.rules"


DOCKER_POOLS = ("172.16.0.0/12", "192.168.0.0/16")
"""Docker's default address pools (docker0 and the networks without a fixed subnet)."""


def _may_be_container(value: str, ranges: list[str]) -> bool:
    target = network(value)
    return target is None or any(target.version == network(r).version and target.overlaps(network(r))
                                 for r in ranges)


def _iface_matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _rule_match(words: list[str], bridge: str, bridges: list[str], ranges: list[str]) -> str:
    """How a DOCKER-USER rule's match meets a new, not DNATed packet from the segment into
    ``bridge``: ``all``, ``none`` or ``some`` of them (a source or port match)."""
    verdict, index, negate = "all", 0, False
    while index < len(words):
        word = words[index]
        if word == "!":
            negate, index = True, index + 1
            continue
        value = words[index + 1] if index + 1 < len(words) else ""
        if word == "-o":
            hit = _iface_matches(value, bridge)
            if hit == negate:
                return "none"
        elif word == "-i":
            # The packet comes from the segment: an interface that is no container bridge.
            if any(_iface_matches(value, b) or _iface_matches(b, value) for b in bridges):
                if not negate:
                    return "none"
            elif not negate:
                verdict = "some"
        elif word == "--ctstate":
            # The states listed are alternatives; the packet is NEW and carries no DNAT.
            if ("NEW" in value.split(",")) == negate:
                return "none"
        elif word in ("-d", "--ctorigdst"):
            # Not DNATed: the packet's destination, original and current, is a container's address.
            overlaps = _may_be_container(value, ranges)
            if not negate and not overlaps:
                return "none"
            if not (negate and not overlaps):
                verdict = "some"
        elif word in ("-s", "--dport", "--sport", "--ctorigdstport", "-p"):
            verdict = "some"
        elif word in ("-m", "-j", "-A"):
            pass
        else:
            index += 1
            negate = False
            continue
        negate = False
        index += 2
    return verdict


def _chains(rules_text: str) -> dict[str, list[list[str]]]:
    chains: dict[str, list[list[str]]] = {}
    for line in rules_text.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "-A":
            chains.setdefault(words[1], []).append(words[2:])
    return chains


def _leak(chains, chain: str, bridge: str, bridges: list[str], ranges: list[str], depth: int = 0):
    """The first rule through which such a packet may leave ``chain`` towards Docker's accept
    (``None`` when every such packet is dropped, ``"fall"`` when some reach the chain's end)."""
    for words in chains.get(chain, []):
        match = _rule_match(words, bridge, bridges, ranges)
        if match == "none":
            continue
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if target in ("DROP", "REJECT"):
            if match == "all":
                return None
            continue
        if target in chains and depth < 8:
            inner = _leak(chains, target, bridge, bridges, ranges, depth + 1)
            if inner not in (None, "fall"):
                return inner
            if inner is None and match == "all":
                return None
            continue
        if target in ("RETURN", "ACCEPT"):
            return " ".join(["-A", chain, *words])
    return "fall"


def _host_networks(args, host_urn: str) -> tuple[list[str], list[str]]:
    """The host's container bridges (Docker's own and the fixed names) and container subnets."""
    networks = [n for n in by_type(args, "docker:index/network:Network")
                if n.parent is not None and n.parent.urn == host_urn]
    named = [str(mapping(n.props.get("options")).get("com.docker.network.bridge.name")) for n in networks
             if mapping(n.props.get("options")).get("com.docker.network.bridge.name")]
    subnets = [str(mapping(c).get("subnet")) for n in networks for c in items(n.props.get("ipamConfigs"))
               if network(mapping(c).get("subnet")) is not None]
    return [*DOCKER_BRIDGES, *named], [*DOCKER_POOLS, *subnets]


def _check_bridge_guard(args):
    from policy.parsers.heredoc import written_files

    hosts: dict[str, object] = {}
    for item in by_type(args, T_CONTAINER):
        if item.parent is not None:
            hosts.setdefault(item.parent.urn, item.parent)
    for urn_, host in sorted(hosts.items()):
        files = [body for c in by_type(args, T_COMMAND) if c.parent is not None and c.parent.urn == urn_
                 for path, body in written_files(stdin_of(c.props)) if path == _RULES_FILE]
        if not files:
            yield (f"host {host.name} runs containers but installs no DOCKER-USER rules "
                   f"({_RULES_FILE}); a neighbour that routes its container subnet reaches "
                   "every container directly"), urn_
            continue
        chains = _chains(files[-1])
        bridges, ranges = _host_networks(args, urn_)
        for bridge in bridges:
            leak = _leak(chains, "DOCKER-USER", bridge, bridges, ranges)
            if leak is None:
                continue
            shown = "br-<id>" if bridge == DOCKER_BRIDGES[1] else bridge
            how = "nothing drops it" if leak == "fall" else f"`{leak}` lets it through"
            yield (f"host {host.name}: a new connection into container bridge {shown} that Docker "
                   f"did not DNAT passes DOCKER-USER ({how}); a neighbour that routes the "
                   "container subnet reaches the containers directly"), urn_


def _guarded_host(rules_text: str, bridge: str | None = "pencom-data") -> list[dict]:
    host = res(T_ONPREM, "p-data", {"tier": "data", "address": "10.0.0.3", "privateAddress": "10.0.0.3"}, custom=False)
    pg = container("p-data-postgres", ports=[{"ip": "10.0.0.3", "external": 5432, "internal": 5432}])
    fw_ = script("p-data-docker-firewall", files={_RULES_FILE: rules_text})
    net = res("docker:index/network:Network", "p-data-network",
              {"name": "p-data", "driver": "bridge", **({"options": {"com.docker.network.bridge.name": bridge}} if bridge else {})})
    for child in (pg, fw_, net):
        child["parent"] = host["urn"]
    return [host, pg, fw_, net]


_GUARD = """*filter
:DOCKER-USER - [0:0]
:PLATFORM-BRIDGE-IN - [0:0]
-F DOCKER-USER
-F PLATFORM-BRIDGE-IN
-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
-A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.0.0.3 --ctorigdstport 5432 -s 10.0.0.2/32 -j RETURN
-A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.0.0.3 --ctorigdstport 5432 -j DROP
-A DOCKER-USER -o docker0 -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN
-A DOCKER-USER -o br-+ -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN
-A DOCKER-USER -o pencom-data -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN
-A PLATFORM-BRIDGE-IN -i docker0 -j RETURN
-A PLATFORM-BRIDGE-IN -i br-+ -j RETURN
-A PLATFORM-BRIDGE-IN -i pencom-data -j RETURN
-A PLATFORM-BRIDGE-IN -m conntrack --ctstate DNAT ! --ctorigdst 127.0.0.0/8 -j RETURN
-A PLATFORM-BRIDGE-IN -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""
_UNGUARDED = "\n".join(l for l in _GUARD.splitlines() if "BRIDGE-IN" not in l) + "\n"
stack_policy(
    "docker-host-enable-bridge-guard",
    "A Docker host's DOCKER-USER rules drop every new connection into a container bridge that Docker did not DNAT for a published port.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["Docker docs: packet filtering and firewalls (direct routing to containers)",
             "Docker 28.0 release notes (raw-table rules against direct access to container addresses)",
             "CIS Controls v8 12.2 (segmentation)"],
    fix="Install the host's DOCKER-USER rules from components/egress.render_docker_user_rules, which carry the bridge guard.",
    check=_check_bridge_guard,
    cases=Case(doc(*_guarded_host(_GUARD)),
               [(doc(*_guarded_host(_UNGUARDED)),
                 ["host p-data: a new connection into container bridge docker0 that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge br-<id> that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge pencom-data that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly"]),
                (doc(*_guarded_host(_GUARD.replace("-A DOCKER-USER -o pencom-data -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN\n", "")
                                    .replace("-A PLATFORM-BRIDGE-IN -m conntrack --ctstate DNAT ! --ctorigdst 127.0.0.0/8 -j RETURN",
                                             "-A PLATFORM-BRIDGE-IN -s 10.0.0.0/8 -j RETURN"))),
                 ["host p-data: a new connection into container bridge docker0 that Docker did not DNAT passes DOCKER-USER (`-A PLATFORM-BRIDGE-IN -s 10.0.0.0/8 -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge br-<id> that Docker did not DNAT passes DOCKER-USER (`-A PLATFORM-BRIDGE-IN -s 10.0.0.0/8 -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge pencom-data that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly"]),
                (doc(*[r for r in _guarded_host(_GUARD) if r["type"] != T_COMMAND]),
                 ["host p-data runs containers but installs no DOCKER-USER rules (/etc/platform/docker-user.rules); a neighbour that routes its container subnet reaches every container directly"])]))


# --- no container opens SSH ---------------------------------------------------------------------
# A container's traffic leaves masqueraded to its host's address. On the bastion that address is
# the one every internal node admits for SSH, so a compromised container there reached every
# node's sshd (found by the staging rehearsal's reachability matrix). Judged, as the bridge guard
# is, by walking the rules file for a new TCP packet from each container bridge to port 22.
def _ssh_match(words: list[str], bridge: str, bridges: list[str], ssh_port: int) -> str:
    """How a DOCKER-USER rule's match meets a new TCP packet from ``bridge`` to ``ssh_port`` on
    an address outside the host: ``all``, ``none`` or ``some`` of them."""
    verdict, index, negate = "all", 0, False
    while index < len(words):
        word = words[index]
        if word == "!":
            negate, index = True, index + 1
            continue
        value = words[index + 1] if index + 1 < len(words) else ""
        if word == "-i":
            if _iface_matches(value, bridge) == negate:
                return "none"
        elif word == "-o":
            # It leaves through the uplink, not a container bridge.
            if any(_iface_matches(value, b) or _iface_matches(b, value) for b in bridges):
                if not negate:
                    return "none"
            elif not negate:
                verdict = "some"
        elif word == "-p":
            if (value in ("tcp", "6")) == negate:
                return "none"
        elif word in ("--dport", "--destination-port", "--dports", "--destination-ports", "--ctorigdstport"):
            # Not DNATed: its original destination port is the SSH port too.
            ports = set()
            for part in value.split(","):
                first, _, last = part.partition(":")
                if first.isdigit() and (last or first).isdigit() and int(first) <= ssh_port <= int(last or first):
                    ports.add(ssh_port)
            if bool(ports) == negate:
                return "none"
        elif word == "--ctstate":
            if ("NEW" in value.split(",")) == negate:
                return "none"
        elif word in ("-s", "-d", "--sport", "--ctorigdst", "--ctorigsrc"):
            verdict = "some"
        elif word in ("-m", "-j", "-A"):
            pass
        else:
            index += 1
            negate = False
            continue
        negate = False
        index += 2
    return verdict


def _ssh_leak(chains, chain: str, bridge: str, bridges: list[str], depth: int = 0):
    for words in chains.get(chain, []):
        match = _ssh_match(words, bridge, bridges, 22)
        if match == "none":
            continue
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if target in ("DROP", "REJECT"):
            if match == "all":
                return None
            continue
        if target in chains and depth < 8:
            inner = _ssh_leak(chains, target, bridge, bridges, depth + 1)
            if inner not in (None, "fall"):
                return inner
            if inner is None and match == "all":
                return None
            continue
        if target in ("RETURN", "ACCEPT"):
            return " ".join(["-A", chain, *words])
    return "fall"


def _check_container_ssh(args):
    from policy.parsers.heredoc import written_files

    hosts: dict[str, object] = {}
    for item in by_type(args, T_CONTAINER):
        if item.parent is not None:
            hosts.setdefault(item.parent.urn, item.parent)
    for urn_, host in sorted(hosts.items()):
        files = [body for c in by_type(args, T_COMMAND) if c.parent is not None and c.parent.urn == urn_
                 for path, body in written_files(stdin_of(c.props)) if path == _RULES_FILE]
        if not files:
            continue  # docker-host-enable-bridge-guard reports the missing file
        chains = _chains(files[-1])
        bridges, _ = _host_networks(args, urn_)
        for bridge in bridges:
            leak = _ssh_leak(chains, "DOCKER-USER", bridge, bridges)
            if leak is None:
                continue
            shown = "br-<id>" if bridge == DOCKER_BRIDGES[1] else bridge
            how = "nothing drops it" if leak == "fall" else f"`{leak}` lets it through"
            yield (f"host {host.name}: a container on bridge {shown} may open SSH (22) to another host "
                   f"({how}); its traffic leaves as the host's address, which the bastion's peers "
                   "admit for SSH"), urn_


_SSH_DROPS = "".join(f"-A DOCKER-USER -i {b} -p tcp --dport 22 -j DROP\n" for b in ("docker0", "br-+", "pencom-data"))
_NO_SSH = _GUARD.replace("-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n",
                         "-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n" + _SSH_DROPS)
stack_policy(
    "docker-host-disallow-container-ssh",
    "A Docker host's DOCKER-USER rules drop every new connection from a container to an SSH port.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["CIS Controls v8 12.2 (segmentation) and 4.4 (firewalls on servers)",
             "Kredete reference architecture: SSH only through the bastion, from the admin network"],
    fix="Install the host's DOCKER-USER rules from components/egress.render_docker_user_rules, which drop SSH from every container bridge first.",
    check=_check_container_ssh,
    cases=Case(doc(*_guarded_host(_NO_SSH)),
               [(doc(*_guarded_host(_GUARD)),
                 [f"host p-data: a container on bridge {b} may open SSH (22) to another host (`-A DOCKER-USER -j RETURN` "
                  "lets it through); its traffic leaves as the host's address, which the bastion's peers admit for SSH"
                  for b in ("docker0", "br-<id>", "pencom-data")]),
                (doc(*_guarded_host(_NO_SSH.replace("-A DOCKER-USER -i pencom-data -p tcp --dport 22 -j DROP\n",
                                                    "-A DOCKER-USER -i pencom-data -p tcp --dport 2222 -j DROP\n"
                                                    "-A DOCKER-USER -i pencom-data -d 10.0.0.0/24 -j RETURN\n"))),
                 ["host p-data: a container on bridge pencom-data may open SSH (22) to another host (`-A DOCKER-USER "
                  "-i pencom-data -d 10.0.0.0/24 -j RETURN` lets it through); its traffic leaves as the host's "
                  "address, which the bastion's peers admit for SSH"])]))


# --- the management plane (issue #22) ------------------------------------------------------------

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
    if production(args.get_config() or {}) is not True:
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
    check=_check_ssh_management_only,
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
