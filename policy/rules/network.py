"""Network policies: DigitalOcean firewalls, database trusted sources, load balancers and
container port bindings, checked against the tier model (DESIGN.md, "The tier model")."""

from __future__ import annotations

from policy.rules.base import (ADVISORY, CRITICAL, HIGH, MANDATORY, MEDIUM, SENSITIVE_PORTS, T_CLUSTER,
                               T_CONTAINER, T_DB_FIREWALL, T_DROPLET, T_FIREWALL, T_LB, TIERS, WEB_PORTS,
                               Case, by_type, firewall_tier, integer, WIREGUARD_PORT, is_internal,
                               is_wireguard_rule, is_world, items, labels_of, mapping, network, port_range,
                               ports_in, resource_policy, stack_policy)
from policy.rules.fixtures import WORLD, container, doc, res, urn

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
EPHEMERAL_PORTS = "32768-60999"


def _check_debug_ports(props, args):
    if labels_of(props).get("platform.tier") != "edge":
        return
    for port in items(props.get("ports")):
        port = mapping(port)
        if not _all_interfaces(port):
            continue
        if not integer(port.get("external")):
            # No external port: Docker publishes on a host port from the ephemeral range
            # (net.ipv4.ip_local_port_range, 32768-60999 by default), never 80 or 443.
            yield (f"edge container publishes {integer(port.get('internal'))} on a random host port "
                   f"({EPHEMERAL_PORTS}) on all interfaces; an edge container faces the internet on 80 "
                   "and 443 only")
            continue
        number = integer(port.get("external"))
        if number not in WEB_PORTS:
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
                 ["edge container publishes Node.js inspector (9229) on all interfaces; an edge container faces the internet on 80 and 443 only"]),
                # internal 443 without external is not 443 on the host: Docker picks the port.
                (doc(container(labels=EDGE, ports=[{"internal": 443, "ip": "0.0.0.0"}])),
                 ["edge container publishes 443 on a random host port (32768-60999) on all interfaces; an edge container faces the internet on 80 and 443 only"])]))


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
