"""KRO's captured graph proves the tier model, TLS settings, secrets and state safety."""

from __future__ import annotations

import copy
import json

import pytest

from components.database import CLUSTER_REPLACING_INPUTS
from components.droplet_stack import DROPLET_REPLACING_INPUTS
from stacks.errors import ConfigError
from synth.state import State
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"
CLUSTER = "digitalocean:index/databaseCluster:DatabaseCluster"
DB_FIREWALL = "digitalocean:index/databaseFirewall:DatabaseFirewall"
CONTAINER = "docker:index/container:Container"
WORLD = {"0.0.0.0/0", "::/0"}


@pytest.fixture(scope="module")
def prod():
    from synth.state import State

    return State(synth_once("prod", reveal_secrets=True))


@pytest.fixture(scope="module")
def staging():
    from synth.state import State

    return State(synth_once("staging"))


def _kro(stack_document, env="prod"):
    return copy.deepcopy(stack_document(env)["config"]["platform:kro"])


def test_only_80_and_443_are_open_to_the_world(prod):
    firewalls = prod.of_type(FIREWALL)
    assert firewalls
    for firewall in firewalls:
        # The management network's UDP port aside (the WireGuard endpoint: every droplet has one).
        world_ports = {r["portRange"] for r in firewall["inputs"]["inboundRules"]
                       if WORLD & set(r.get("sourceAddresses", [])) and r["protocol"] == "tcp"}
        if firewall["inputs"]["name"].endswith("-edge"):
            assert world_ports == {"80", "443"}
        else:
            assert world_ports == set(), firewall["name"]


def test_ssh_is_closed_in_the_cloud_firewall_without_break_glass(prod, staging, stack_document):
    """Prod (break-glass off): no SSH rule at all in the DigitalOcean Firewall (SSH arrives on
    wg0, behind it) and the WireGuard port open; staging (break-glass on): SSH from admin_cidrs."""
    admin = set(stack_document("staging")["config"]["platform:environment"]["admin_cidrs"])
    for state, expected in ((prod, None), (staging, admin)):
        for firewall in state.of_type(FIREWALL):
            rules = firewall["inputs"]["inboundRules"]
            ssh = [r for r in rules if r["portRange"] == "22"]
            if expected is None:
                assert ssh == [], firewall["name"]
            else:
                assert len(ssh) == 1 and set(ssh[0]["sourceAddresses"]) == expected
            assert [r["protocol"] for r in rules if r["portRange"] == "51820"] == ["udp"], firewall["name"]


def test_every_droplet_is_behind_a_firewall(prod):
    from synth.mockdata import mock_id

    protected = {i for f in prod.of_type(FIREWALL) for i in f["inputs"]["dropletIds"]}
    for droplet in prod.of_type(DROPLET):
        assert int(mock_id(DROPLET, droplet["name"])) in protected


def test_database_admits_the_droplet_only(prod):
    from synth.mockdata import mock_id

    droplet = prod.named("kro-prod-droplet")
    cluster = prod.named("kro-prod-db-cluster")
    firewalls = [f for f in prod.of_type(DB_FIREWALL)
                 if f["inputs"]["clusterId"] == f"{cluster['name']}-id"]
    assert len(firewalls) == 1, "exactly one DatabaseFirewall per cluster"
    assert firewalls[0]["inputs"]["rules"] == [
        {"type": "droplet", "value": mock_id(DROPLET, droplet["name"])}]


def test_database_is_in_the_product_vpc(prod):
    cluster = prod.named("kro-prod-db-cluster")
    assert cluster["inputs"]["privateNetworkUuid"] == "kro-prod-vpc-id"
    assert prod.named("kro-prod-droplet")["inputs"]["vpcUuid"] == "kro-prod-vpc-id"


def test_database_url_is_secret_and_verifies_tls_against_the_mounted_ca(prod, stack_document):
    ca_path = _kro(stack_document)["database_ca_path"]
    backend = prod.named("kro-prod-backend", CONTAINER)
    assert "envs" in backend["secret_inputs"]
    urls = [e.split("=", 1)[1] for e in backend["inputs"]["envs"] if e.startswith("DATABASE_URL=")]
    assert len(urls) == 1
    assert urls[0].startswith("postgresql://kro_backend:")
    assert "@private-" in urls[0], "connects over the private host"
    assert urls[0].endswith(f"?sslmode=verify-full&sslrootcert={ca_path}")
    # The CA reaches the backend through a read-only mount of its directory (a file mount would
    # keep the old inode when the file is replaced).
    mounts = {v["containerPath"]: v for v in backend["inputs"]["volumes"]}
    directory = mounts[ca_path.rsplit("/", 1)[0]]
    assert directory["readOnly"] is True
    files = prod.named("kro-prod-files-backend")["inputs"]["stdin"]
    assert f'{directory["hostPath"]}/{ca_path.rsplit("/", 1)[1]} ' in files and "BEGIN CERTIFICATE" in files


def _kro_containers(state):
    return [c for c in state.of_type(CONTAINER) if c["name"].startswith("kro-")]


def test_no_other_container_gets_the_database_url(prod):
    for container in _kro_containers(prod):
        if container["name"] != "kro-prod-backend":
            envs = container["inputs"].get("envs", [])
            assert not any(str(e).startswith("DATABASE_URL=") for e in envs)


def test_masked_synth_never_shows_secret_values(staging):
    text = json.dumps(staging.document)
    assert "postgresql://kro_backend:" not in text
    assert "mock-kro-staging-db-user-kro_backend-password" not in text
    assert "mock-token-value" not in text and "RCLONE_CONFIG_R2_SECRET_ACCESS_KEY=" not in text
    assert "synth-placeholder-secret" not in text
    backend = staging.named("kro-staging-backend", CONTAINER)
    # Secrecy per variable: the secret ones masked, the plain ones reviewable.
    assert {leaf["env"] for leaf in backend["secret_leaves"].values()} == {"DATABASE_URL", "JWT_SECRET"}
    assert "NODE_ENV=production" in backend["inputs"]["envs"]
    assert backend["inputs"]["envs"].count("[secret]") == 2


def test_only_nginx_publishes_ports_and_on_80_443(prod):
    for container in _kro_containers(prod):
        ports = container["inputs"].get("ports", [])
        if container["name"].endswith("-nginx"):
            assert {(p["external"], p["ip"]) for p in ports} == {(80, "0.0.0.0"), (443, "0.0.0.0")}
            assert container["delete_before_replace"], "host ports cannot be held twice"
        elif container["name"] == "kro-prod-grafana":
            assert ports == [{"internal": 3000, "external": 3300, "ip": "127.0.0.1", "protocol": "tcp"}]
        else:
            assert ports == []


MONITORING = {"prometheus", "alertmanager", "grafana", "blackbox", "node-exporter", "cadvisor"}


def test_containers_are_hardened(prod):
    containers = _kro_containers(prod)
    assert {c["name"] for c in containers} == {
        "kro-prod-nginx", "kro-prod-backend", "kro-prod-frontend", "kro-prod-admin-frontend",
        *(f"kro-prod-{m}" for m in MONITORING)}
    for container in containers:
        inputs = container["inputs"]
        assert inputs["privileged"] is False
        assert inputs["memory"] > 0 and float(inputs["cpus"]) > 0
        assert inputs["healthcheck"]["tests"][0] == "CMD"
        assert "no-new-privileges:true" in inputs["securityOpts"]
        assert inputs["capabilities"]["drops"] == ["ALL"]
        assert inputs["logOpts"] == {"max-file": "5", "max-size": "10m"}
        assert "name" not in inputs, "fixed names would collide on replacement"
        image = prod.named(container["name"] + "-image")
        assert not image["inputs"]["name"].endswith(":latest")


def test_stateful_resources_are_protected_in_prod_only(prod, staging):
    for state, env, expected in ((prod, "prod", True), (staging, "staging", False)):
        for name in (f"kro-{env}-droplet", f"kro-{env}-db-cluster", f"kro-{env}-db-db-kro",
                     f"kro-{env}-db-user-kro_backend"):
            resource = state.named(name)
            assert resource["protect"] is expected, name
            assert resource["retain_on_delete"] is expected, name
        assert state.named(f"kro-{env}-vpc")["protect"] is expected


def test_host_setup_runs_before_the_docker_provider(prod):
    provider = prod.named("kro-prod-docker")
    setup = [r["urn"] for r in prod.of_type("command:remote:Command") if r["name"].startswith("kro-prod-setup-")]
    # wireguard (the management endpoint), base, dirs, docker, fail2ban, sshd and sessions
    # (the admin session log).
    assert len(setup) == 7
    assert set(setup) <= prod.all_dependencies(provider)
    assert prod.named("kro-prod-backend")["provider"] == provider["urn"]


def test_certificates_wait_for_dns_and_nginx(prod):
    certificates = prod.named("kro-prod-certificates")
    needed = {prod.named("kro-prod-nginx")["urn"]} | {
        r["urn"] for r in prod.of_type("digitalocean:index/dnsRecord:DnsRecord")}
    assert needed <= set(certificates["dependencies"])
    hosts = {"api.krotrust.com", "app.krotrust.com", "app2.krotrust.com", "admin.krotrust.com"}
    assert {r["inputs"]["name"] + ".krotrust.com"
            for r in prod.of_type("digitalocean:index/dnsRecord:DnsRecord")} == hosts
    for host in hosts:
        assert f"-d {host}" in certificates["inputs"]["stdin"]


ROUTINE_CHANGES = {
    "env var": lambda k: k["services"][0]["env"].__setitem__("LOG_LEVEL", "debug"),
    "image tag": lambda k: k["services"][0].__setitem__(
        "image", "registry.digitalocean.com/kro/kro-backend:2026.12.1"),
    "route": lambda k: k["routes"].append({"host": "app3.krotrust.com", "service": "frontend"}),
    "domain": lambda k: k["routes"][1].__setitem__("host", "web.krotrust.com"),
    "memory": lambda k: k["services"][0].__setitem__("memory_mb", 2048),
    "secret env": lambda k: k["services"][0]["secret_env"].__setitem__("SENTRY_DSN", "kro_sentry_dsn"),
}


@pytest.mark.parametrize("change", sorted(ROUTINE_CHANGES))
def test_routine_change_touches_no_droplet_or_database_input(change, prod, stack_document, synth):
    kro = _kro(stack_document)
    ROUTINE_CHANGES[change](kro)
    after = synth("prod", overrides={"kro": kro}, reveal_secrets=True)
    assert after.document != prod.document, "the change must change something"
    for name in ("kro-prod-droplet", "kro-prod-db-cluster", "kro-prod-vpc"):
        before_inputs = prod.named(name)["inputs"]
        after_inputs = after.named(name)["inputs"]
        assert before_inputs == after_inputs, name
    for key in DROPLET_REPLACING_INPUTS:
        assert prod.named("kro-prod-droplet")["inputs"].get(key) == \
            after.named("kro-prod-droplet")["inputs"].get(key)
    for key in CLUSTER_REPLACING_INPUTS:
        assert prod.named("kro-prod-db-cluster")["inputs"].get(key) == \
            after.named("kro-prod-db-cluster")["inputs"].get(key)


def test_cloud_init_carries_no_secret_and_no_per_deploy_value(prod):
    user_data = prod.named("kro-prod-droplet")["inputs"]["userData"]
    assert user_data.startswith("#cloud-config")
    for needle in ("kro-backend", "2026.", "BEGIN", "password", "krotrust"):
        assert needle not in user_data


def test_adoption_imports_existing_resources(stack_document, synth):
    kro = _kro(stack_document)
    kro["adopt"] = {"droplet_id": "412345678",
                    "database_cluster_id": "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30", "domain": True}
    state = synth("prod", overrides={"kro": kro})
    droplet = state.named("kro-prod-droplet")
    assert droplet["import_id"] == "412345678"
    assert set(droplet["ignore_changes"]) == {"userData", "sshKeys", "image"}
    assert state.named("kro-prod-db-cluster")["import_id"] == "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"
    domain = state.named("kro-prod-domain")
    assert domain["import_id"] == "krotrust.com" and domain["protect"]


def test_staging_is_separate_from_prod(prod, staging):
    assert staging.named("kro-staging-vpc")["inputs"]["ipRange"] != prod.named("kro-prod-vpc")["inputs"]["ipRange"]
    assert staging.named("kro-staging-db-cluster")["inputs"]["name"] == "kro-staging-db"
    hosts = {r["inputs"]["name"] for r in staging.of_type("digitalocean:index/dnsRecord:DnsRecord")}
    assert hosts == {"api.stage", "app.stage", "app2.stage", "admin.stage"}


def test_cloudflare_dns_is_selectable(stack_document, synth):
    kro = _kro(stack_document)
    kro["dns"] = {"provider": "cloudflare", "zone": "krotrust.com",
                  "cloudflare_zone_id": "0123456789abcdef0123456789abcdef"}
    state = synth("prod", overrides={"kro": kro})
    records = state.of_type("cloudflare:index/dnsRecord:DnsRecord")
    assert len(records) == 4 and not state.of_type("digitalocean:index/dnsRecord:DnsRecord")
    assert all(r["inputs"]["proxied"] is False for r in records)


BAD_KRO = {
    "latest image": (lambda k: k["services"][0].__setitem__("image", "kro-backend:latest"),
                     "platform:kro.services[0] (backend).image: image must be pinned"),
    # A tag without a digit names a channel that moves, whatever its case.
    "LATEST image": (lambda k: k["services"][0].__setitem__("image", "kro-backend:LATEST"),
                     "platform:kro.services[0] (backend).image: image must be pinned by a version tag"),
    "stable image": (lambda k: k["services"][2].__setitem__("image", "kro-admin:stable"),
                     "platform:kro.services[2] (admin-frontend).image: image must be pinned by a version tag"),
    "untagged image": (lambda k: k["services"][1].__setitem__("image", "kro-frontend"),
                       "platform:kro.services[1] (frontend).image: image must be pinned"),
    "negative memory": (lambda k: k["services"][1].__setitem__("memory_mb", -5),
                        "platform:kro.services[1] (frontend).memory_mb: Input should be greater than 0, got -5"),
    "route to nowhere": (lambda k: k["routes"].append({"host": "x.krotrust.com", "service": "nope"}),
                         "platform:kro.routes[4] (x.krotrust.com).service: nope is not a service"),
    "published port": (lambda k: k["services"][0].__setitem__(
        "publish", [{"host_port": 3000, "container_port": 3000}]),
        "platform:kro.services[0] (backend).publish: only the ingress publishes ports"),
    "plaintext secret": (lambda k: k["services"][0]["env"].__setitem__("JWT_SECRET", "hunter2"),
                         "platform:kro.services[0] (backend).env.JWT_SECRET: the name says it holds a secret"),
    "host outside zone": (lambda k: k["routes"][0].__setitem__("host", "api.example.com"),
                          "platform:kro.routes[0] (api.example.com).host: api.example.com is outside the DNS zone krotrust.com"),
    "missing healthcheck": (lambda k: k["services"][2].pop("healthcheck"),
                            "platform:kro.services[2] (admin-frontend).healthcheck: required key is missing"),
    "public vpc range": (lambda k: k.__setitem__("vpc_ip_range", "8.8.0.0/16"),
                         "must be a private range"),
    # The backend's own network is the /28 below egress.subnet: 172.15.255.240/28 is public,
    # 10.110.0.240/28 the prod VPC's, 172.17.255.240/28 docker0's.
    "own network public": (lambda k: k.__setitem__("egress", {"subnet": "172.16.0.0/24"}),
                           "platform:kro.egress.subnet: the database service's own network takes the /28 "
                           "below it, 172.15.255.240/28, which must be private"),
    # The subnet just past the VPC (10.110.0.0/20): only the derived /28 below it falls inside
    # (a subnet inside the VPC is its own error, tests/test_config_subnets_sizes.py).
    "own network in the vpc": (lambda k: k.__setitem__("egress", {"subnet": "10.110.16.0/24"}),
                               "platform:kro.egress.subnet: the database service's own network takes the /28 "
                               "below it, 10.110.15.240/28"),
    "own network on docker0": (lambda k: k.__setitem__("egress", {"subnet": "172.18.0.0/24"}),
                               "platform:kro.egress.subnet: the database service's own network takes the /28 "
                               "below it, 172.17.255.240/28"),
}


@pytest.mark.parametrize("case", sorted(BAD_KRO))
def test_unsafe_kro_config_is_a_clear_error(case, stack_document, synth):
    kro = _kro(stack_document)
    mutate, expected = BAD_KRO[case]
    mutate(kro)
    with pytest.raises(ConfigError) as raised:
        synth("prod", overrides={"kro": kro})
    assert expected in str(raised.value)


def test_missing_secret_names_the_command_to_run(tmp_path):
    from synth.run import synth_stack as run

    with pytest.raises(ConfigError) as raised:
        run("prod", fill_secrets=False)
    message = str(raised.value)
    assert "pulumi config set --secret platform:kro_ssh_private_key" in message
    assert "pulumi config set --secret platform:kro_jwt_secret" in message


def test_the_droplet_watches_itself_and_its_backup_job(prod):
    """Self-hosted monitoring on the droplet: mgmt tier, nothing opened in the firewall, and the
    backup job's freshness alerted on (DigitalOcean's monitoring cannot see textfile metrics)."""
    firewall = prod.named("kro-prod-firewall", "digitalocean:index/firewall:Firewall")["inputs"]
    # The web and the WireGuard port; SSH arrives through the tunnel, behind this firewall.
    assert {r["portRange"] for r in firewall["inboundRules"]} == {"51820", "80", "443"}
    for name in MONITORING:
        labels = prod.named(f"kro-prod-{name}", CONTAINER)["inputs"]["labels"]
        assert {"label": "platform.tier", "value": "mgmt"} in labels
    files = prod.named("kro-prod-files-prometheus")["inputs"]["stdin"]  # revealed synth
    assert 'absent(platform_backup_last_success_timestamp_seconds{job="kro-prod-db"})' in files
    assert "platform-backup-kro-prod-db.timer" in prod.named("kro-prod-db-backup-install")["inputs"]["stdin"]
    masked = State(synth_once("prod"))
    # The SMTP password travels alone; the alerting config stays readable in a preview.
    assert masked.named("kro-prod-secrets-alertmanager")["inputs"]["stdin"] == "[secret]"
    assert "alertmanager.yml" in masked.named("kro-prod-files-alertmanager")["inputs"]["stdin"]


def test_the_backend_has_a_network_of_its_own_that_its_database_flows_match(prod, staging):
    """KRO's api is replaced create-first: not pinned to an address, it sits alone (with the
    ingress nginx joining) on a /28 network whose subnet its database flows match, on a bridge
    locked like the host's; the host's own bridge admits no database flow at all."""
    for state, env, vpc in ((prod, "prod", "10.110.0.0/20"), (staging, "staging", "10.111.0.0/20")):
        network = state.named(f"kro-{env}-backend-network", "docker:index/network:Network")["inputs"]
        assert network["ipamConfigs"] == [{"subnet": "172.31.250.240/28"}]
        assert network["options"] == {"com.docker.network.bridge.name": "kro-db-ctr"}
        nets = {c["name"]: [n["name"] for n in c["inputs"]["networksAdvanced"]] for c in _kro_containers(state)}
        assert nets[f"kro-{env}-backend"] == [f"kro-{env}-backend"]
        assert nets[f"kro-{env}-nginx"] == [f"kro-{env}", f"kro-{env}-backend"]  # the host's network first
        joined = sorted(c for c, n in nets.items() if f"kro-{env}-backend" in n)
        assert joined == [f"kro-{env}-backend", f"kro-{env}-nginx"], joined
        rules = state.named(f"kro-{env}-docker-firewall")["inputs"]["stdin"]
        own = [line for line in rules.splitlines() if line.startswith("-A DOCKER-USER -i kro-db-ctr ")]
        assert own == ["-A DOCKER-USER -i kro-db-ctr -p tcp --dport 22 -j DROP",
                       "-A DOCKER-USER -i kro-db-ctr -o kro-db-ctr -j RETURN",
                       *(f"-A DOCKER-USER -i kro-db-ctr -p tcp -s 172.31.250.240/28 -d {vpc} --dport {p} -j RETURN"
                         for p in (25060, 25061)),
                       f"-A DOCKER-USER -i kro-db-ctr -d {vpc} -j DROP", "-A DOCKER-USER -i kro-db-ctr -j DROP"]
        assert "-A PLATFORM-BRIDGE-IN -i kro-db-ctr -j RETURN" in rules
        assert not [line for line in rules.splitlines() if " -i kro-ctr " in line and "--dport 2506" in line]


def test_an_own_network_is_checked_and_its_flows_match_its_subnet():
    from components.egress import EgressLock, OwnNetwork, workload_lock

    lock = workload_lock(bridge="h-ctr", subnet="172.31.251.0/24", exempt=["alertmanager"],
                         allowed=[("api", "10.0.0.0/20", 25060), ("worker", "10.0.0.0/20", 5432)],
                         own_networks=[OwnNetwork("api", "h-api", "172.31.250.240/28", peers=("nginx",))])
    assert lock.static_addresses() == {"alertmanager": "172.31.251.10", "worker": "172.31.251.11"}
    assert lock.allowed_sources() == [("172.31.250.240/28", "10.0.0.0/20", 25060),
                                      ("172.31.251.11", "10.0.0.0/20", 5432)]
    from components.egress import render_docker_user_rules

    text = render_docker_user_rules(published=[], rules=[], bridge="h-ctr", internal_cidr="",
                                    allowed=lock.allowed_sources(), own_networks=lock.own_bridges())
    # Each flow on its own bridge only: a peer binding an address of the api's subnet cannot
    # send it out through the host's bridge.
    assert "-A DOCKER-USER -i h-api -p tcp -s 172.31.250.240/28 -d 10.0.0.0/20 --dport 25060 -j RETURN" in text
    assert "-i h-ctr -p tcp -s 172.31.250.240/28" not in text and "-i h-api -p tcp -s 172.31.251.11/32" not in text
    bad = [dict(own_networks=(OwnNetwork("api", "h-api", "172.31.251.0/28"),)),      # inside the host's
           dict(own_networks=(OwnNetwork("api", "h-ctr", "172.31.250.240/28"),)),    # the host's bridge
           dict(own_networks=(OwnNetwork("api", "h-api", "8.8.8.0/28"),)),           # not private
           dict(own_networks=(OwnNetwork("api", "h-api", "172.31.250.240/28"),), pinned=(("api", "172.31.251.12"),))]
    for extra in bad:
        with pytest.raises(ValueError):
            EgressLock(bridge="h-ctr", internal_cidr="", subnet="172.31.251.0/24", **extra)
    with pytest.raises(ValueError, match="without a fixed address or network of their own"):
        EgressLock(bridge="h-ctr", internal_cidr="", subnet="172.31.251.0/24", allowed=(("api", "10.0.0.0/20", 1),))
