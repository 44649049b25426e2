"""Pencom: the tier rules, TLS and secrets, proven from what the resources actually carry (the
UFW rules in the setup scripts, the DOCKER-USER rules, container port bindings, connection
URLs), not from the module that computed them."""

from __future__ import annotations

import copy
import json
import ipaddress
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from components import egress, hostsetup, tiers
from stacks.errors import ConfigError
from synth.engine import PROJECT_ROOT
from synth.state import State
from tests.conftest import synth_once

CONTAINER = "docker:index/container:Container"
COMMAND = "command:remote:Command"
NODES = ("edge", "app", "data", "storage")
TIER = {"edge": tiers.Tier.EDGE, "app": tiers.Tier.APP, "data": tiers.Tier.DATA, "storage": tiers.Tier.DATA}
UFW_ALLOW = re.compile(r"^ufw allow proto (\w+) from (\S+) to any port (\S+) comment '([^']*)'(?:\s+# waiver: ([\w-]+))?$")


def _pencom_only(stack: str) -> dict:
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
    config = document["config"]
    config["platform:products"] = ["pencom"]
    for key in [k for k in config if k.startswith("platform:") and k.split(":")[1] in ("kro", "giv", "vedfinance")]:
        del config[key]
    return document


@pytest.fixture(scope="module")
def prod():
    return State(synth_once("prod", document=_pencom_only("prod")))


@pytest.fixture(scope="module")
def revealed():
    return State(synth_once("prod", document=_pencom_only("prod"), reveal_secrets=True))


@pytest.fixture(scope="module")
def cfg():
    return _pencom_only("prod")["config"]["platform:pencom"]


@pytest.fixture(scope="module")
def addresses(cfg):
    nodes = cfg["nodes"]
    return {node: nodes[node]["private_address"] for node in NODES}


MANAGEMENT = _pencom_only("prod")["config"]["platform:environment"]["management"]["network"]


def _who(cidr: str, addresses: dict[str, str], admin: list[str]) -> str:
    if tiers.is_world(cidr) or cidr == "any":
        return "internet"
    if cidr in admin or cidr == MANAGEMENT:
        return "admin"
    for node, address in addresses.items():
        if cidr == f"{address}/32":
            return node
    raise AssertionError(f"a rule admits {cidr}, which is no node, admin CIDR or the internet")


def _ufw_rules(state: State, node: str) -> list[tuple[str, str, str, str, str | None]]:
    script = state.named(f"pencom-prod-{node}-setup-ufw", COMMAND)["inputs"]["stdin"]
    body = script.split("<<'PLATFORM_EOF'", 1)[1].split("PLATFORM_EOF", 1)[0]
    rules = []
    for line in body.splitlines():
        match = UFW_ALLOW.match(line.strip())
        if match:
            rules.append(match.groups())
        elif line.startswith("ufw allow") and " out " not in f" {line} ":
            raise AssertionError(f"unparsed UFW rule: {line}")
    return rules


def _ports(spec: str) -> list[int]:
    low, _, high = spec.partition(":")
    return list(range(int(low), int(high or low) + 1))


@pytest.mark.fast
def test_every_inbound_flow_is_the_tier_model_or_a_named_waiver(prod, cfg, addresses):
    admin = _pencom_only("prod")["config"]["platform:environment"]["admin_cidrs"]
    waivers = {w["name"] for w in cfg["read_waivers"]}
    seen_waivers = set()
    proxy_ports = set(egress.proxy_ports([egress.ProxyRoute(r["name"], tuple(r["domains"]), tuple(r["services"]))
                                          for r in cfg["egress"]["https"]]
                                         + [egress.ProxyRoute("nodes", ("x.example",), (egress.HOST_ROUTE,))]).values())
    for node in NODES:
        for proto, source, ports, reason, waiver in _ufw_rules(prod, node):
            who = _who(source, addresses, admin)
            for port in _ports(ports):
                if waiver:
                    assert waiver in waivers, f"{node}: waiver {waiver} is not declared in config"
                    seen_waivers.add(waiver)
                    continue
                if reason == "session logs":
                    # Internal nodes ship admin-session records to the collector on the edge.
                    assert node == "edge" and who in ("app", "data", "storage") and port == hostsetup.SESSION_LOG_PORT
                    continue
                if reason == tiers.WIREGUARD_REASON:
                    # The management network's own port, on the edge (its endpoint) only.
                    assert node == "edge" and who == "internet" and proto == "udp" and port == 51820
                    continue
                if reason == "egress proxy":
                    # The one flow back towards the edge: internal nodes to their proxy ports.
                    assert node == "edge" and who in ("app", "data", "storage") and port in proxy_ports
                    continue
                source_tier = who if who in ("internet", "admin") else TIER[who]
                if who == "edge" and node != "edge" and reason == "ssh from mgmt":
                    source_tier = tiers.BASTION
                if who == "edge" and reason == "metrics from monitoring":
                    source_tier = tiers.Tier.MGMT  # the monitoring containers on the edge node
                assert tiers.may_reach(source_tier, TIER[node], port), \
                    f"{who} -> {node}:{port} is outside the tier model and not a waiver"
    assert seen_waivers == waivers


@pytest.mark.fast
def test_only_the_edge_faces_the_internet_and_only_on_80_443(prod, addresses):
    for node in NODES:
        world = {(r[0], r[1], r[2]) for r in _ufw_rules(prod, node) if tiers.is_world(r[1]) or r[1] == "any"}
        # Besides the web, the edge's WireGuard port (UDP): the management network's endpoint.
        assert world == ({("tcp", "0.0.0.0/0", "80"), ("tcp", "::/0", "80"), ("tcp", "0.0.0.0/0", "443"),
                          ("tcp", "::/0", "443"), ("udp", "0.0.0.0/0", "51820"), ("udp", "::/0", "51820")}
                         if node == "edge" else set()), node


@pytest.mark.fast
def test_ssh_reaches_the_internal_nodes_only_through_the_edge(prod, revealed, addresses):
    """In prod (break-glass off) the edge's SSH answers only from the management network, and
    the program connects to the edge's management address (10.99.0.3: the network's address
    plus Pencom's offset), the internal nodes through it."""
    for node in NODES:
        sources = {r[1] for r in _ufw_rules(prod, node) if r[0] == "tcp" and "22" in _ports_str(r[2])}
        assert sources == ({MANAGEMENT} if node == "edge" else {f"{addresses['edge']}/32"}), node
        connection = revealed.named(f"pencom-prod-{node}-setup-ufw", COMMAND)["inputs"]["connection"]
        if node == "edge":
            assert "proxy" not in connection and connection["host"] == "10.99.0.3"
        else:
            assert connection["host"] == addresses[node]
            assert connection["proxy"]["host"] == "10.99.0.3"
        sshd = prod.named(f"pencom-prod-{node}-setup-sshd", COMMAND)["inputs"]["stdin"]
        assert ("AllowTcpForwarding yes" in sshd) == (node == "edge")


def _ports_str(spec: str) -> set[str]:
    return {str(p) for p in _ports(spec)}


@pytest.mark.fast
def test_data_ports_admit_the_app_node_and_the_named_waiver_only(prod, addresses):
    data = _ufw_rules(prod, "data")
    by_port: dict[str, set] = {}
    for _, source, port, _, waiver in data:
        by_port.setdefault(port, set()).add((source, waiver))
    app, edge = f"{addresses['app']}/32", f"{addresses['edge']}/32"
    assert by_port["5432"] == {(app, None), (edge, "external-gateway-reads-compliance")}
    assert by_port["27017"] == {(app, None)} and by_port["6379"] == {(app, None)}
    storage = {(r[1], r[2]) for r in _ufw_rules(prod, "storage") if r[2] != "22" and "metrics" not in r[3]}
    assert storage == {(app, "9000")}


@pytest.mark.fast
def test_no_container_outside_the_edge_binds_all_interfaces(prod, addresses):
    containers = [c for c in prod.of_type(CONTAINER) if c["name"].startswith("pencom-")]
    # services and stores, the mutual-TLS terminator and 3 sidecars, monitoring servers, exporters per node
    assert len(containers) == 14 + 4 + 4 + 2 * 4
    for container in containers:
        node = container["name"].split("-")[2]
        labels = {l["label"]: l["value"] for l in container["inputs"]["labels"]}
        for port in container["inputs"].get("ports", []):
            if port["ip"] == "0.0.0.0":
                assert labels["platform.tier"] == "edge" and container["name"] == "pencom-prod-edge-nginx"
                assert port["external"] in (80, 443)
            elif port["ip"] == "127.0.0.1":
                assert container["name"] == "pencom-prod-edge-grafana", "only Grafana, behind an SSH tunnel"
            else:
                assert port["ip"] == addresses[node], container["name"]


@pytest.mark.fast
def test_published_ports_are_filtered_in_docker_user_like_ufw(prod, addresses):
    """Docker-published ports bypass UFW: DOCKER-USER must admit exactly UFW's sources."""
    for node in NODES:
        rules_text = prod.named(f"pencom-prod-{node}-docker-firewall", COMMAND)["inputs"]["stdin"]
        ufw = _ufw_rules(prod, node)
        for container in prod.of_type(CONTAINER):
            if not container["name"].startswith(f"pencom-prod-{node}-"):
                continue
            for port in container["inputs"].get("ports", []):
                if port["ip"] in ("0.0.0.0", "127.0.0.1"):
                    continue
                match = f"--ctorigdst {port['ip']} --ctorigdstport {port['external']}"
                admitted = set(re.findall(re.escape(match) + r" -s (\S+) -j RETURN", rules_text))
                expected = {r[1] for r in ufw if str(port["external"]) in _ports_str(r[2])}
                assert admitted == expected and expected, (node, port)
                assert f"{match} -j DROP" in rules_text
        assert f"-A DOCKER-USER -i pencom-{node} -j DROP" in rules_text, "every node's containers are locked"
        exempt = re.findall(rf"-A DOCKER-USER -i pencom-{node} -s (\S+) -j RETURN", rules_text)
        assert exempt == ([] if node != "edge" else ["172.31.250.10/32", "172.31.250.11/32", "172.31.250.12/32"])
    app_rules = prod.named("pencom-prod-app-docker-firewall", COMMAND)["inputs"]["stdin"]
    assert "-i pencom-app -p tcp -d 10.50.8.20/32 --dport 1521 -j RETURN" in app_rules
    assert "1521" not in prod.named("pencom-prod-data-docker-firewall", COMMAND)["inputs"]["stdin"]


@pytest.mark.fast
def test_internal_nodes_deny_egress_except_internal_dns_ntp(prod):
    for node in NODES:
        script = prod.named(f"pencom-prod-{node}-setup-ufw", COMMAND)["inputs"]["stdin"]
        if node == "edge":
            assert "ufw default allow outgoing" in script
            continue
        assert "ufw default deny outgoing" in script
        outbound = re.findall(r"^ufw allow out (.*) comment", script, re.M)
        assert sorted(set(outbound)) == sorted({
            "to 10.40.0.0/24", f"on pencom-{node} to any", "proto udp to 1.1.1.1/32 port 53", "proto tcp to 1.1.1.1/32 port 53",
            "proto udp to 1.0.0.1/32 port 53", "proto tcp to 1.0.0.1/32 port 53", "proto udp to any port 123"})
        proxy = prod.named(f"pencom-prod-{node}-setup-proxy", COMMAND)["inputs"]["stdin"]
        assert 'Acquire::https::Proxy "http://10.40.0.11:3128"' in proxy


def _env(state: State, name: str) -> dict[str, str]:
    envs = state.named(name, CONTAINER)["inputs"]["envs"]
    return dict(e.split("=", 1) for e in envs)


@pytest.mark.fast
def test_every_service_gets_the_same_internal_api_key(revealed, cfg):
    services = [s["name"] for s in cfg["edge_services"]] + [s["name"] for s in cfg["app_services"]]
    keys = set()
    for service in services:
        node = "edge" if service in ("api-gateway", "external-gateway") else "app"
        keys.add(_env(revealed, f"pencom-prod-{node}-{service}")["INTERNAL_API_KEY"])
    assert len(keys) == 1 and len(keys.pop()) >= 40
    assert len(services) == 8


@pytest.mark.fast
def test_each_service_gets_only_its_own_database(revealed, cfg, addresses):
    owners = {d["name"]: d["service"] for d in cfg["databases"]}
    for database, service in owners.items():
        url = urlsplit(_env(revealed, f"pencom-prod-app-{service}")["DATABASE_URL"])
        assert url.hostname == addresses["data"] and url.path == f"/{database}"
        assert url.username == service.replace("-", "_")
        query = parse_qs(url.query)
        assert query["sslmode"] == ["verify-full"] and query["sslrootcert"] == ["/run/platform/ca.crt"]
    gateway = _env(revealed, "pencom-prod-edge-external-gateway")
    reader = urlsplit(gateway["COMPLIANCE_DATABASE_URL"])
    assert reader.path == "/pencom_compliance" and reader.username == "external_gateway"
    assert "DATABASE_URL" not in gateway and "REDIS_URL" not in gateway


@pytest.mark.fast
def test_every_datastore_connection_is_tls(revealed, addresses):
    for container in revealed.of_type(CONTAINER):
        if not container["name"].startswith("pencom-"):
            continue
        for key, value in _env(revealed, container["name"]).items():
            if value.startswith("postgresql://"):
                assert "sslmode=verify-full" in value, (container["name"], key)
            elif value.startswith(("mongodb://", "redis://")):
                assert value.startswith("mongodb://") and "tls=true" in value, (container["name"], key)
            elif key == "SPACES_ENDPOINT":
                assert value == f"https://{addresses['storage']}:9000"
    commands = {c: revealed.named(f"pencom-prod-data-{c}", CONTAINER)["inputs"]["command"]
                for c in ("postgres", "mongodb", "redis")}
    assert "ssl=on" in commands["postgres"]
    assert commands["mongodb"][commands["mongodb"].index("--tlsMode") + 1] == "requireTLS"
    assert "--port 0 --tls-port 6379" in commands["redis"][-1]
    minio = revealed.named("pencom-prod-storage-minio", CONTAINER)["inputs"]["command"]
    assert "--certs-dir" in minio


@pytest.mark.fast
def test_internal_ca_certificates_name_the_addresses_clients_use(prod, addresses):
    csrs = {r["name"]: r["inputs"] for r in prod.of_type("tls:index/certRequest:CertRequest")}
    assert set(csrs["pencom-prod-ca-data-csr"]["ipAddresses"]) == {addresses["data"], "127.0.0.1"}
    assert addresses["storage"] in csrs["pencom-prod-ca-minio-csr"]["ipAddresses"]


@pytest.mark.fast
def test_generated_secrets_and_none_in_plaintext(prod, revealed):
    passwords = {r["name"] for r in prod.of_type("random:index/randomPassword:RandomPassword")}
    for expected in ("pencom-prod-internal-api-key", "pencom-prod-jwt-users", "pencom-prod-jwt-partners",
                     "pencom-prod-pg-superuser", "pencom-prod-mongo-root", "pencom-prod-redis-password",
                     "pencom-prod-minio-root", "pencom-prod-files-core-secret"):
        assert expected in passwords
    text = yaml.safe_dump(prod.document)
    secret_names = ("PASSWORD", "SECRET", "KEY", "_URL", "_URI")
    checked = 0
    plain = ("SPACES_ACCESS_KEY_ID", "NODE_EXTRA_CA_CERTS", "GF_SERVER_ROOT_URL")
    for container in revealed.of_type(CONTAINER):
        if container["name"].startswith("pencom-"):
            masked = {leaf.get("env") for leaf in prod.named(container["name"], CONTAINER)
                      .get("secret_leaves", {}).values()}
            for key, value in _env(revealed, container["name"]).items():
                if any(n in key for n in secret_names) and not key.endswith("_SERVICE_URL") \
                        and key not in plain:
                    assert key in masked and value not in text, (container["name"], key)
                    checked += 1
    assert checked > 30
    assert "synth-placeholder-secret" not in text


@pytest.mark.fast
def test_jwt_secrets_are_split_between_users_and_partners(revealed):
    users = _env(revealed, "pencom-prod-edge-api-gateway")
    partners = _env(revealed, "pencom-prod-edge-external-gateway")
    assert "JWT_SECRET" in users and "PFC_JWT_SECRET" not in users
    assert "PFC_JWT_SECRET" in partners and "JWT_SECRET" not in partners
    assert users["JWT_SECRET"] != partners["PFC_JWT_SECRET"]


@pytest.mark.fast
def test_egress_proxy_allows_each_service_only_its_providers(revealed):
    squid = revealed.named("pencom-prod-edge-files-egress-proxy", COMMAND)["inputs"]["stdin"]
    ports = {m[1]: int(m[0]) for m in re.findall(r"http_port (\d+) name=(\S+)", squid)}
    domains = {m[0]: m[1].split() for m in re.findall(r"acl to_(\S+) dstdomain (.*)", squid)}
    assert "api.sendgrid.com" in domains["notifications"]
    assert "api.sendgrid.com" not in domains["core"] and "login.remita.net" not in domains["notifications"]
    assert "us.i.posthog.com" in domains["api_gateway"] and "us.i.posthog.com" not in domains["core"]
    assert ".r2.cloudflarestorage.com" in domains["hosts"]
    notifications = _env(revealed, "pencom-prod-app-notifications")
    assert notifications["HTTPS_PROXY"] == f"http://10.40.0.11:{ports['notifications']}"
    assert _env(revealed, "pencom-prod-edge-api-gateway")["HTTPS_PROXY"] == f"http://egress-proxy:{ports['api_gateway']}"


@pytest.mark.fast
def test_bucket_users_are_limited_to_their_prefixes(prod):
    import json

    policies = {r["name"]: json.loads(r["inputs"]["policy"])
                for r in prod.of_type("minio:index/iamPolicy:IamPolicy")}
    core = policies["pencom-prod-files-core-access"]["Statement"][0]["Resource"]
    assert sorted(core) == sorted(f"arn:aws:s3:::pencom-ehub-prod/{p}*" for p in (
        "EMPLOYER_CODE_REQUEST_DOCUMENT/", "TUTORIAL_VIDEOS/", "TUTORIAL_THUMBNAILS/"))
    backup = policies["pencom-prod-files-backup-access"]["Statement"][0]
    assert backup["Action"] == ["s3:GetObject"] and len(backup["Resource"]) == 5


@pytest.mark.fast
def test_every_datastore_and_the_bucket_have_an_off_site_backup(prod, revealed):
    backups = {r["name"]: r for r in prod.of_type("platform:components:R2Backup")}
    sources = {b["inputs"]["source"] for b in backups.values()}
    assert sources == {"pencom-prod-data-postgres", "pencom-prod-data-mongodb", "pencom-prod-data-redis",
                       "pencom-prod-storage-minio"}
    kinds = sorted(b["inputs"]["kind"] for b in backups.values())
    assert kinds == ["minio", "mongodb", "mongodb", "pitr", "postgres", "postgres", "postgres", "postgres", "postgres",
                     "redis"]
    # One WAL archive for the cluster, at the strictest RPO of its databases (payments, compliance).
    wal = backups["pencom-prod-wal-backup"]["inputs"]
    assert (wal["source"], wal["rpoMinutesDeclared"], wal["rpoMinutesEffective"]) == ("pencom-prod-data-postgres", 1, 1)
    assert backups["pencom-prod-pencom-payments-backup"]["inputs"]["rpoMinutesEffective"] == 24 * 60 + 10
    # Seven jobs on the data node do not start at one moment.
    data_jobs = [b["inputs"]["schedule"] for b in backups.values() if b["inputs"]["kind"] != "minio"]
    assert len(set(data_jobs)) >= 6
    minio = revealed.named("pencom-prod-files-backup-install", COMMAND)
    assert minio["inputs"]["connection"]["host"] == "10.40.0.14"


def _broken(stack_document, mutate) -> dict:
    document = copy.deepcopy(_pencom_only("prod"))
    mutate(document["config"]["platform:pencom"])
    return document


@pytest.mark.fast
@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["read_waivers"][0].update(service="core"),
     "platform:pencom.read_waivers[0] (external-gateway-reads-compliance).service: core is not an edge service"),
    (lambda c: c["app_services"][0].update(publish=[{"host_port": 4000, "container_port": 4000}]),
     "platform:pencom.app_services[0] (core).publish: the program publishes the port"),
    (lambda c: c["nodes"]["data"].update(private_address="192.168.7.3"),
     "platform:pencom.nodes.data.private_address: 192.168.7.3 is outside internal_cidr 10.40.0.0/24"),
    (lambda c: c["nodes"]["app"].update(public_address="203.0.113.99"),
     "platform:pencom.nodes.app.public_address: internal nodes have no public_address"),
    (lambda c: c["bucket"]["consumers"].append({"service": "api-gateway", "prefixes": ["X/"]}),
     "platform:pencom.bucket.consumers[3] (api-gateway).service: api-gateway is not an app service"),
    (lambda c: c["egress"]["https"][0].update(domains=["api.sendgrid.com", ".api.sendgrid.com"]),
     "api.sendgrid.com is listed twice"),
    (lambda c: c["postgres"].update(tier="app"), "platform:pencom.postgres.tier: tier data"),
    (lambda c: c["databases"][1].update(rpo_minutes=0), "platform:pencom.databases[1]"),
    (lambda c: c.update(callers={"core": ["notifications"], "api-gateway": []}),
     "platform:pencom.callers.core[0]: notifications is not an edge service"),
    (lambda c: c.update(callers={"api-gateway": []}),
     "platform:pencom.callers.api-gateway: api-gateway is not an app service"),
    (lambda c: c["app_services"][5].update(port=60000),
     "platform:pencom.app_services[5] (audit).port: 60000 would be served over mutual TLS on 70000"),
    (lambda c: c["app_services"][5].update(name="audit-mtls"),
     "platform:pencom.app_services[5] (audit-mtls).name: 'audit-mtls' ends in '-mtls'"),
])
def test_unsafe_or_inconsistent_config_is_rejected_before_anything_is_registered(
        stack_document, write_stack, synth, mutate, message):
    path = write_stack(_broken(stack_document, mutate), "prod")
    with pytest.raises(ConfigError) as raised:
        synth(path)
    text = str(raised.value)
    assert "platform:pencom" in text and message in text, text
    assert "Traceback" not in text


@pytest.mark.fast
def test_the_seed_addresses_never_appear_as_connection_targets(revealed):
    """Every SSH target is in the internal network or the edge's management address (prod keeps
    break-glass off, so not even the edge's public address)."""
    for command in revealed.of_type(COMMAND):
        if command["name"].startswith("pencom-"):
            host = command["inputs"]["connection"]["host"]
            assert ipaddress.ip_address(host) in ipaddress.ip_network("10.40.0.0/24") or host == "10.99.0.3"


@pytest.mark.fast
def test_metrics_ports_admit_only_the_monitoring_host(prod, addresses):
    for node in ("app", "data", "storage"):
        metrics = {(r[1], r[2]) for r in _ufw_rules(prod, node) if r[3] == "metrics from monitoring"}
        assert metrics == {(f"{addresses['edge']}/32", "9100"), (f"{addresses['edge']}/32", "8080")}, node
        for exporter, port in (("node-exporter", 9100), ("cadvisor", 8080)):
            inputs = prod.named(f"pencom-prod-{node}-{exporter}", CONTAINER)["inputs"]
            assert inputs["ports"] == [{"internal": port, "external": port, "ip": addresses[node], "protocol": "tcp"}]
            assert inputs["privileged"] is False
    assert prod.named("pencom-prod-edge-node-exporter", CONTAINER)["inputs"]["ports"] == []


@pytest.mark.fast
def test_monitoring_scrapes_every_node_and_service_and_probes_the_public_hosts(revealed, addresses):
    files = revealed.named("pencom-prod-edge-files-prometheus", COMMAND)["inputs"]["stdin"]
    config = yaml.safe_load(files.split("/prometheus.yml 0444 root:root <<'PLATFORM_EOF'", 1)[1]
                            .split("\n", 1)[1].split("PLATFORM_EOF", 1)[0])
    jobs = {j["job_name"]: [t for c in j["static_configs"] for t in c["targets"]] for j in config["scrape_configs"]}
    assert sorted(jobs["node"]) == sorted(["node-exporter:9100"] + [f"{addresses[n]}:9100" for n in ("app", "data", "storage")])
    assert sorted(jobs["cadvisor"]) == sorted(["cadvisor:8080"] + [f"{addresses[n]}:8080" for n in ("app", "data", "storage")])
    # The app services' metrics cross hosts: through Prometheus' mutual-TLS sidecar.
    assert jobs["core"] == ["prometheus-mtls:4000"] and jobs["api-gateway"] == ["api-gateway:3000"]
    assert sorted(jobs["blackbox-http"]) == ["https://api.ehub.pencom.example", "https://partners.ehub.pencom.example"]
    grafana = revealed.named("pencom-prod-edge-files-grafana", COMMAND)["inputs"]["stdin"]
    assert "/files/grafana/etc/grafana/dashboards/service-core.json" in grafana
    assert "/files/grafana/etc/grafana/dashboards/backups.json" in grafana


@pytest.mark.fast
def test_grafana_admin_password_is_generated_and_secret(prod, revealed):
    assert "pencom-prod-grafana-admin" in {r["name"] for r in prod.of_type("random:index/randomPassword:RandomPassword")}
    grafana = _env(revealed, "pencom-prod-edge-grafana")
    assert len(grafana["GF_SECURITY_ADMIN_PASSWORD"]) >= 32 and grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    masked = prod.named("pencom-prod-edge-grafana", CONTAINER)
    assert [leaf["env"] for leaf in masked["secret_leaves"].values()] == ["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] not in json.dumps(masked)


def _heredoc_file(script: str, suffix: str) -> str:
    return script.split(f"{suffix} ", 1)[1].split("<<'PLATFORM_EOF'", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]


@pytest.mark.realtool
def test_the_stack_monitoring_configs_pass_promtool_and_amtool(revealed, tmp_path):
    import subprocess

    from tests.conftest import require_tool

    promtool = require_tool("promtool", "Debian package prometheus")
    amtool = require_tool("amtool", "Debian package prometheus-alertmanager")
    files = revealed.named("pencom-prod-edge-files-prometheus", COMMAND)["inputs"]["stdin"]
    alerting = revealed.named("pencom-prod-edge-files-alertmanager", COMMAND)["inputs"]["stdin"]
    (tmp_path / "prometheus.yml").write_text(_heredoc_file(files, "etc/prometheus/prometheus.yml"))
    (tmp_path / "platform.yml").write_text(_heredoc_file(files, "rules/platform.yml"))
    (tmp_path / "alertmanager.yml").write_text(_heredoc_file(alerting, "etc/alertmanager/alertmanager.yml"))
    for argv in ([promtool, "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
                 [promtool, "check", "rules", str(tmp_path / "platform.yml")],
                 [amtool, "check-config", str(tmp_path / "alertmanager.yml")]):
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    alertmanager = yaml.safe_load((tmp_path / "alertmanager.yml").read_text())
    assert alertmanager["global"]["smtp_auth_password_file"] == "/etc/alertmanager/secrets/smtp_password"
    assert "mock" not in (tmp_path / "alertmanager.yml").read_text()


@pytest.mark.fast
def test_monitoring_expects_every_backup_job_the_stack_installs(revealed, prod):
    files = revealed.named("pencom-prod-edge-files-prometheus", COMMAND)["inputs"]["stdin"]
    rules = yaml.safe_load(_heredoc_file(files, "rules/platform.yml"))
    missing = next(r for r in rules["groups"][0]["rules"] if r["alert"] == "BackupMissing")
    expected = set(re.findall(r'job="([^"]+)"', missing["expr"]))
    installed = {re.search(r"platform-backup-(\S+)\.timer", c["inputs"]["stdin"]).group(1)
                 for c in revealed.of_type(COMMAND) if c["name"].endswith("-backup-install")
                 and c["name"].startswith("pencom-") and not c["name"].endswith("-wal-backup-install")}
    assert expected == installed and len(installed) == 9


@pytest.mark.fast
def test_only_the_proxy_alertmanager_and_blackbox_leave_the_edge_node_directly(prod):
    pinned = {}
    for container in prod.of_type(CONTAINER):
        if container["name"].startswith("pencom-prod-edge-"):
            network = container["inputs"]["networksAdvanced"][0]
            if "ipv4Address" in network:
                pinned[container["name"].removeprefix("pencom-prod-edge-")] = network["ipv4Address"]
    assert pinned == {"egress-proxy": "172.31.250.10", "alertmanager": "172.31.250.11", "blackbox": "172.31.250.12"}
    network = prod.named("pencom-prod-edge-network", "docker:index/network:Network")["inputs"]
    assert network["ipamConfigs"] == [{"subnet": "172.31.250.0/24", "ipRange": "172.31.250.128/25"}]


@pytest.mark.fast
def test_each_node_has_a_container_subnet_of_its_own(prod):
    """Fixed and apart: a container address names one node, so a route to a neighbour's
    container subnet is unambiguous (Docker would give every node 172.18.0.0/16)."""
    subnets = {node: prod.named(f"pencom-prod-{node}-network", "docker:index/network:Network")["inputs"]["ipamConfigs"]
               for node in NODES}
    assert {n: [c["subnet"] for c in s] for n, s in subnets.items()} == {
        "edge": ["172.31.250.0/24"], "app": ["172.31.251.0/24"], "data": ["172.31.252.0/24"],
        "storage": ["172.31.253.0/24"]}


@pytest.mark.fast
def test_the_tunnel_script_targets_minio_through_the_edge_node(prod):
    import subprocess
    import sys

    from synth.engine import PROJECT_ROOT

    printed = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "pencom_tunnel.py"), "prod", "--print"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert printed == ("ssh -f -N -o ExitOnForwardFailure=yes -o StrictHostKeyChecking=accept-new "
                       "-J deploy@10.99.0.3:22 -L 19000:10.40.0.14:9000 -p 22 deploy@10.40.0.14")
    # The forward it asks for is the one the storage node's sshd permits, and no other node's.
    assert "PermitOpen 10.40.0.14:9000" in prod.named("pencom-prod-storage-setup-sshd", COMMAND)["inputs"]["stdin"]
    for node in ("app", "data"):
        assert "AllowTcpForwarding no" in prod.named(f"pencom-prod-{node}-setup-sshd", COMMAND)["inputs"]["stdin"]


@pytest.mark.fast
def test_every_ca_file_a_backup_verifies_against_is_a_file_the_host_receives(revealed):
    # As on the V-EdFinance rehearsal box: a CA path written as files/<service>/ca.crt while
    # the file is delivered at files/<service>/run/platform/ca.crt fails every TLS backup.
    import re

    scripts = {r["name"]: r["inputs"].get("stdin") or "" for r in revealed.of_type("command:remote:Command")}
    referenced = {path for name, text in scripts.items() if name.endswith("-backup-credentials")
                  for path in re.findall(r'(?:^(?:PGSSLROOTCERT|BACKUP_CA_CERT|RCLONE_CA_CERT)="|tlsCAFile=)'
                                         r'([^"&\\]+)', text, re.M)}
    assert len({p.rsplit("/files/", 1)[1].split("/")[0] for p in referenced}) == 4, referenced
    delivered = "\n".join(text for name, text in scripts.items() if not name.endswith("-backup-credentials"))
    assert all(f"{path} " in delivered or f"{path}\n" in delivered for path in referenced), referenced


@pytest.mark.fast
def test_every_datastore_dump_reaches_its_server_where_the_server_is_published(revealed, prod):
    """The data node publishes Postgres, MongoDB and Redis on its private address only (Docker's
    DNAT matches that address), so a dump tool on the host's network dialling 127.0.0.1 meets
    nothing. Each dump job's tools run in the server container's network namespace instead,
    where 127.0.0.1 is the server (and the server's certificate carries 127.0.0.1)."""
    bindings = {c["name"].removeprefix("pencom-prod-data-"): {p["ip"] for p in c["inputs"].get("ports", [])}
                for c in prod.of_type(CONTAINER) if c["name"].startswith("pencom-prod-data-")}
    services = {"postgres": "postgres", "mongodb": "mongodb", "redis": "redis"}
    checked = 0
    for command in revealed.of_type(COMMAND):
        name = command["name"]
        if not (name.startswith("pencom-prod-") and name.endswith("-backup-install")) or "-files-" in name:
            continue
        script = command["inputs"]["stdin"]
        kind = next(k for k in services if f"label=platform.service={k}" in script or k in name)
        assert bindings[services[kind]] and "127.0.0.1" not in bindings[services[kind]], bindings
        assert f'--network "container:$(docker ps -q --filter label=platform.service={services[kind]}' in script, name
        assert "--network host" not in script, name
        checked += 1
    assert checked == 9, checked  # seven databases, Redis, the WAL archive


@pytest.mark.fast
def test_the_redis_backup_tool_mounts_only_the_ca_not_every_datastores_keys(revealed):
    """The data node's ``files`` directory holds the TLS private key of every datastore; the redis
    backup's tool container needs only the CA that verifies the rediss:// source."""
    script = revealed.named("pencom-prod-redis-backup-install", COMMAND)["inputs"]["stdin"]
    mounts = set(re.findall(r" -v (\S+):ro ", script))
    ca = "/srv/pencom-prod-data/files/redis/run/platform/ca.crt"
    assert mounts == {f"{ca}:{ca}"}, mounts
    assert "-v /srv/pencom-prod-data/files:" not in script
    postgres = revealed.named("pencom-prod-pencom-payments-backup-install", COMMAND)["inputs"]["stdin"]
    assert "-v /srv/pencom-prod-data/files:/srv/pencom-prod-data/files:ro " in postgres
