"""The policy pack: every policy bites on a violating case and passes a compliant one."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from policy.offline import evaluate, has_mandatory
from policy.rules import CATALOG, POLICIES
from synth.engine import PROJECT_ROOT
from synth.run import synth_stack

URN = "urn:pulumi:{stack}::platform::{type}::{name}"


def res(type_, name, inputs, *, stack="prod", deps=(), protect=False, secret_inputs=(),
        custom=True):
    return {"urn": URN.format(stack=stack, type=type_, name=name), "type": type_, "name": name,
            "custom": custom, "parent": None, "provider": None, "inputs": inputs,
            "secret_inputs": list(secret_inputs), "dependencies": list(deps), "protect": protect,
            "retain_on_delete": protect, "delete_before_replace": False, "ignore_changes": [],
            "import_id": None}


def doc(*resources, stack="prod"):
    return {"project": "platform", "stack": stack, "resources": list(resources), "outputs": {}}


def only(policy_name, document, config=None):
    policy = next(p for p in POLICIES if p.name == policy_name)
    return [v["message"] for v in evaluate(document, config, policies=[policy])]


FW, DROPLET, CLUSTER = ("digitalocean:index/firewall:Firewall", "digitalocean:index/droplet:Droplet",
                        "digitalocean:index/databaseCluster:DatabaseCluster")
DBFW, CONTAINER = "digitalocean:index/databaseFirewall:DatabaseFirewall", "docker:index/container:Container"
CMD, IMAGE = "command:remote:Command", "docker:index/remoteImage:RemoteImage"
WORLD = ["0.0.0.0/0", "::/0"]


def fw(name, *rules):
    return {"name": name, "inboundRules": [
        {"protocol": "tcp", "portRange": str(port), "sourceAddresses": list(sources)}
        for port, sources in rules]}


def container(**overrides):
    inputs = {"memory": 256, "cpus": "0.5", "healthcheck": {"tests": ["CMD", "true"]},
              "privileged": False, "securityOpts": ["no-new-privileges:true"], "user": "1000:1000",
              "logDriver": "json-file", "logOpts": {"max-size": "10m", "max-file": "5"},
              "labels": [{"label": "platform.tier", "value": "app"}], "ports": [],
              "image": "sha256:abc", "volumes": []}
    inputs.update(overrides)
    return res(CONTAINER, "c", inputs)


NGINX_OK = """http {
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 8080 default_server;
    location ^~ /.well-known/acme-challenge/ { root /acme; }
    location / { return 301 https://$host$request_uri; }
  }
  server {
    listen 8443 ssl;
    add_header Strict-Transport-Security "max-age=63072000" always;
  }
}"""


def nginx_cmd(conf):
    return res(CMD, "ingress", {"stdin": f"if put_file /srv/x/nginx.conf 0644 root:root <<'PLATFORM_EOF'; then\n{conf}\nPLATFORM_EOF\n  reload\nfi\n"})


def sshd_cmd(body):
    return res(CMD, "host-setup-sshd", {"stdin": f"if put_file /etc/ssh/sshd_config.d/00-platform.conf 0644 root:root <<'PLATFORM_EOF'; then\n{body}PLATFORM_EOF\n  x\nfi\n"})


SSHD_OK = "PermitRootLogin no\nPasswordAuthentication no\nMaxAuthTries 3\n"

# policy -> (compliant document, violating document, exact messages of the violating one)
CASES = {
    "digitalocean-firewall-disallow-public-non-web": (
        doc(res(FW, "f", fw("kro-prod-edge", (80, WORLD), (443, WORLD), (22, ["198.51.100.10/32"])))),
        doc(res(FW, "f", fw("kro-prod-app", (8080, WORLD)))),
        ["firewall kro-prod-app (app) opens port 8080 to the internet; only edge-tier firewalls may face it"]),
    "digitalocean-firewall-disallow-public-admin-ports": (
        doc(res(FW, "f", fw("kro-prod-edge", (443, WORLD), (22, ["198.51.100.10/32"])))),
        doc(res(FW, "f", fw("kro-prod-edge", (22, WORLD)))),
        ["firewall kro-prod-edge opens SSH (22) to the internet; allow only admin CIDRs or internal peers"]),
    "digitalocean-droplet-enable-firewall": (
        doc(res(DROPLET, "d", {"name": "d"}), res(FW, "f", fw("x-edge"), deps=[URN.format(stack="prod", type=DROPLET, name="d")])),
        doc(res(DROPLET, "d", {"name": "d"})),
        ["droplet d is behind no DigitalOcean Firewall"]),
    "digitalocean-databasecluster-enable-single-firewall": (
        doc(res(CLUSTER, "db", {"engine": "pg"}), res(DBFW, "dbfw", {"rules": []}, deps=[URN.format(stack="prod", type=CLUSTER, name="db")])),
        doc(res(CLUSTER, "db", {"engine": "pg"})),
        ["database cluster db has 0 DatabaseFirewalls; exactly one keeps its trusted sources in one place"]),
    "digitalocean-databasefirewall-disallow-untrusted-sources": (
        doc(res(DBFW, "dbfw", {"rules": [{"type": "droplet", "value": "123"}, {"type": "tag", "value": "tier-mgmt"}]})),
        doc(res(DBFW, "dbfw", {"rules": [{"type": "ip_addr", "value": "0.0.0.0/0"}, {"type": "tag", "value": "web"}]})),
        ["the database firewall admits 0.0.0.0/0, the whole internet",
         "the database firewall trusts tag web; only tier-app or tier-mgmt may reach data"]),
    "digitalocean-databasecluster-enable-vpc": (
        doc(res(CLUSTER, "db", {"name": "db", "privateNetworkUuid": "vpc-1"})),
        doc(res(CLUSTER, "db", {"name": "db"})),
        ["database cluster db has no private_network_uuid; put it in a VPC"]),
    "docker-container-disallow-public-bind-outside-edge": (
        doc(container(ports=[{"internal": 5432, "external": 5432, "ip": "127.0.0.1"}])),
        doc(container(ports=[{"internal": 5432, "external": 5432, "ip": "0.0.0.0"}])),
        ["container publishes port 5432 on 0.0.0.0 but its tier is app; Docker-published ports "
         "bypass the host firewall, so only edge containers may listen on all interfaces"]),
    "platform-stack-configure-tier-reachability": (
        doc(res(FW, "f", fw("x-edge", (443, WORLD))), container()),
        doc(res(FW, "f", fw("x-data", (5432, WORLD))),
            res(CMD, "ufw", {"stdin": "ufw allow from any to any port 6379 proto tcp\n"})),
        ["internet -> x-data (data) on 5432: only the edge tier on 80/443 faces the internet",
         "internet -> ufw on 6379 through UFW"]),
    "command-nginx-enable-https-redirect": (
        doc(nginx_cmd(NGINX_OK)),
        doc(nginx_cmd(NGINX_OK.replace("location / { return 301 https://$host$request_uri; }", "location / { proxy_pass http://app; }"))),
        ["an nginx HTTP server answers without redirecting to HTTPS"]),
    "command-nginx-configure-modern-tls": (
        doc(nginx_cmd(NGINX_OK)),
        doc(nginx_cmd(NGINX_OK.replace("TLSv1.2 TLSv1.3", "TLSv1 TLSv1.1 TLSv1.2").replace(
            '    add_header Strict-Transport-Security "max-age=63072000" always;\n', ""))),
        ["nginx allows TLSv1, TLSv1.1; allow TLSv1.2 and TLSv1.3 only",
         "an nginx HTTPS server sends no Strict-Transport-Security header"]),
    "digitalocean-loadbalancer-enable-https-redirect": (
        doc(res("digitalocean:index/loadBalancer:LoadBalancer", "lb", {"name": "lb", "redirectHttpToHttps": True})),
        doc(res("digitalocean:index/loadBalancer:LoadBalancer", "lb", {"name": "lb"})),
        ["load balancer lb does not redirect HTTP to HTTPS"]),
    "digitalocean-app-enable-https-redirect": (
        doc(res("digitalocean:index/app:App", "app", {"spec": {"ingress": {"rules": [{"redirect": {"scheme": "https"}}]}}})),
        doc(res("digitalocean:index/app:App", "app", {"spec": {"ingress": {"rules": [{"redirect": {"scheme": "http"}}]}}})),
        ["an App Platform ingress rule redirects to a non-HTTPS scheme"]),
    "platform-connection-configure-postgres-verify-full": (
        doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=verify-full&sslrootcert=/ca.crt",
                            "SCRATCH=postgresql://postgres@127.0.0.1:55432"])),
        doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=require"])),
        ["envs[0] carries a Postgres URL without sslmode=verify-full"]),
    "cloudflare-zonesetting-configure-strict-tls": (
        doc(res("cloudflare:index/zoneSetting:ZoneSetting", "ssl", {"settingId": "ssl", "value": "strict"}),
            res("cloudflare:index/zoneSetting:ZoneSetting", "tls", {"settingId": "min_tls_version", "value": "1.2"})),
        doc(res("cloudflare:index/zoneSetting:ZoneSetting", "ssl", {"settingId": "ssl", "value": "flexible"}),
            res("cloudflare:index/zoneSetting:ZoneSetting", "tls", {"settingId": "min_tls_version", "value": "1.0"})),
        ["Cloudflare zone SSL mode is 'flexible'; set it to strict (full, with validation)",
         "Cloudflare zone minimum TLS version is 1.0; set 1.2 or newer"]),
    "cloudflare-r2customdomain-configure-min-tls": (
        doc(res("cloudflare:index/r2CustomDomain:R2CustomDomain", "d", {"domain": "b.example.com", "minTls": "1.2"})),
        doc(res("cloudflare:index/r2CustomDomain:R2CustomDomain", "d", {"domain": "b.example.com", "minTls": "1.0"})),
        ["R2 custom domain b.example.com allows TLS below 1.2; set min_tls to 1.2"]),
    "platform-bucket-disallow-public-access": (
        doc(res("digitalocean:index/spacesBucket:SpacesBucket", "b", {"name": "media", "acl": "private"}),
            res("minio:index/s3Bucket:S3Bucket", "m", {"bucket": "docs", "acl": "private"})),
        doc(res("digitalocean:index/spacesBucket:SpacesBucket", "b", {"name": "media", "acl": "public-read"}),
            res("minio:index/s3BucketPolicy:S3BucketPolicy", "p", {"policy": '{"Statement":[{"Principal": "*"}]}'}),
            res("cloudflare:index/r2ManagedDomain:R2ManagedDomain", "r", {"enabled": True})),
        ["Spaces bucket media has acl public-read; buckets are private",
         "a MinIO bucket policy grants access to everyone (Principal *)",
         "the R2 bucket's public r2.dev URL is enabled; keep backups private"]),
    "platform-bucket-disallow-force-destroy": (
        doc(res("digitalocean:index/spacesBucket:SpacesBucket", "b", {"name": "media"})),
        doc(res("digitalocean:index/spacesBucket:SpacesBucket", "b", {"name": "media", "forceDestroy": True})),
        ["bucket media sets force_destroy; a delete would erase its objects"]),
    "digitalocean-spacesbucket-enable-versioning": (
        doc(res("digitalocean:index/spacesBucket:SpacesBucket", "b", {"name": "media", "versioning": {"enabled": True}})),
        doc(res("digitalocean:index/spacesBucket:SpacesBucket", "b", {"name": "media"})),
        ["Spaces bucket media is not versioned"]),
    "minio-s3bucket-enable-versioning": (
        doc(res("minio:index/s3Bucket:S3Bucket", "certs", {"bucket": "certificates"}),
            res("minio:index/s3BucketVersioning:S3BucketVersioning", "certs-versioning",
                {"bucket": "certificates", "versioningConfiguration": {"status": "Enabled"}},
                deps=[URN.format(stack="prod", type="minio:index/s3Bucket:S3Bucket", name="certs")])),
        doc(res("minio:index/s3Bucket:S3Bucket", "certs", {"bucket": "certificates"})),
        ["MinIO bucket certificates is not versioned"]),
    "platform-stateful-enable-protection": (
        doc(res(CLUSTER, "db", {}, protect=True), res(CLUSTER, "db2", {}, stack="staging")),
        doc(res(CLUSTER, "db", {}, stack="pencom-prod")),
        ["DatabaseCluster db holds state in a production stack and is not protected"]),
    "platform-datastore-enable-offsite-backup": (
        doc(res(CLUSTER, "db", {"engine": "pg"}),
            res("platform:components:R2Backup", "bk", {"source": "db", "restoreTest": True}, custom=False)),
        doc(res(CLUSTER, "db", {"engine": "pg"}), container(labels=[{"label": "platform.tier", "value": "data"}])),
        ["datastore db has no R2Backup with a restore test", "datastore c has no R2Backup with a restore test"]),
    "digitalocean-app-configure-secret-env": (
        doc(res("digitalocean:index/app:App", "app", {"spec": {"services": [{"name": "api", "envs": [
            {"key": "JWT_SECRET", "type": "SECRET", "value": "[secret]"}, {"key": "NODE_ENV", "value": "production"}]}]}})),
        doc(res("digitalocean:index/app:App", "app", {"spec": {"services": [{"name": "api", "envs": [
            {"key": "JWT_SECRET", "type": "GENERAL", "value": "x"}]}]}})),
        ["App env var JWT_SECRET of api looks secret but is not type SECRET"]),
    "platform-resource-disallow-plaintext-secrets": (
        doc(container(envs="[secret]")),
        doc(container(envs=["DB_PASSWORD=hunter2", "URL=https://u:p@example.com/x"])),
        ["envs[0] sets DB_PASSWORD in plain text; pass it as a secret",
         "envs[1] holds a URL with credentials in plain text; pass it as a secret"]),
    "docker-container-disallow-privileged": (
        doc(container()), doc(container(privileged=True)), ["the container is privileged; it would own the host"]),
    "docker-container-configure-resource-limits": (
        doc(container()), doc(container(memory=None, cpus=None)),
        ["the container has no memory limit", "the container has no CPU limit"]),
    "docker-container-enable-healthcheck": (
        doc(container()), doc(container(healthcheck=None)), ["the container has no healthcheck"]),
    "docker-image-disallow-unpinned-tag": (
        doc(res(IMAGE, "i", {"name": "nginx:1.27.3-alpine"})),
        doc(res(IMAGE, "i", {"name": "nginx:latest"}), res(IMAGE, "j", {"name": "redis"})),
        ["image nginx:latest is not pinned; use a version tag (not latest) or an @sha256 digest",
         "image redis is not pinned; use a version tag (not latest) or an @sha256 digest"]),
    "docker-container-configure-non-root-user": (
        doc(container()), doc(container(user=None)),
        ["the container runs as the image's default user (often root); set user"]),
    "docker-container-disallow-host-access": (
        doc(container()),
        doc(container(volumes=[{"hostPath": "/var/run/docker.sock", "containerPath": "/s"}], pidMode="host")),
        ["the container mounts the Docker socket, which gives it the host",
         "the container shares the host's PID namespace"]),
    "docker-container-enable-no-new-privileges": (
        doc(container()), doc(container(securityOpts=[])), ["the container does not set no-new-privileges"]),
    "docker-container-configure-log-rotation": (
        doc(container()), doc(container(logOpts={})),
        ["the container's logs do not rotate; set log_opts max-size and max-file"]),
    "digitalocean-droplet-configure-ssh-keys": (
        doc(res(DROPLET, "d", {"name": "d", "sshKeys": ["aa:bb"]})), doc(res(DROPLET, "d", {"name": "d"})),
        ["droplet d has no SSH keys; it would get a root password by email"]),
    "command-sshd-configure-baseline": (
        doc(sshd_cmd(SSHD_OK)),
        doc(sshd_cmd("PermitRootLogin prohibit-password\nPasswordAuthentication yes\n")),
        ["sshd config does not set PermitRootLogin no", "sshd config does not set PasswordAuthentication no",
         "sshd config sets no MaxAuthTries limit of 6 or fewer"]),
    "command-ufw-enable-default-deny": (
        doc(res(CMD, "ufw", {"stdin": "ufw default deny incoming\nufw allow 22/tcp\n"})),
        doc(res(CMD, "ufw", {"stdin": "ufw default allow incoming\n"})),
        ["a UFW script does not deny incoming traffic by default"]),
    "docker-container-enable-published-port-filter": (
        doc(container(ports=[{"ip": "10.40.0.12", "external": 4000, "internal": 4000},
                             {"ip": "127.0.0.1", "external": 3300, "internal": 3000},
                             {"ip": "0.0.0.0", "external": 443, "internal": 8443}]),
            res(CMD, "fw", {"stdin": "-A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.40.0.12 "
                                     "--ctorigdstport 4000 -j DROP\n"})),
        doc(container(ports=[{"ip": "10.40.0.12", "external": 4000, "internal": 4000}]),
            res(CMD, "fw", {"stdin": "-A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.40.0.12 "
                                     "--ctorigdstport 5000 -j DROP\n"})),
        ["container c publishes 10.40.0.12:4000, which bypasses UFW, and no DOCKER-USER rule filters it"]),
    "command-fail2ban-enable-service": (
        doc(sshd_cmd(SSHD_OK), res(CMD, "host-setup-fail2ban", {"stdin": "ensure_service_enabled fail2ban\n"})),
        doc(sshd_cmd(SSHD_OK)),
        ["host host hardens sshd but runs no fail2ban"]),
}


def test_every_policy_has_cases():
    assert set(CASES) == {p.name for p in POLICIES}


@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_passes_compliant_case(name):
    compliant, _, _ = CASES[name]
    assert only(name, compliant) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_reports_violating_case_with_exact_message(name):
    _, violating, messages = CASES[name]
    assert only(name, violating) == messages


NAME = re.compile(r"^(digitalocean|docker|command|cloudflare|minio|platform)-[a-z0-9]+-(disallow|enable|configure)-[a-z0-9-]+$")


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_policy_metadata(policy):
    assert NAME.match(policy.name), policy.name
    description = policy.description
    assert description[0].isupper() and description.endswith(".")
    assert description.count(". ") == 0, "one sentence"
    assert policy.severity is not None
    info = CATALOG[policy.name]
    expected = EnforcementLevel.MANDATORY if info.category in ("network", "tls", "data") else EnforcementLevel.ADVISORY
    assert policy.enforcement_level is expected
    assert info.anchor
    assert isinstance(policy, (ResourceValidationPolicy, StackValidationPolicy))


def test_names_are_unique():
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names))


def test_enforcement_level_is_configurable():
    _, violating, _ = CASES["docker-container-disallow-privileged"]
    assert evaluate(violating, policies=POLICIES)[0]["level"] == "advisory"
    raised = evaluate(violating, {"docker-container-disallow-privileged": "mandatory"})
    assert [v["level"] for v in raised if v["policy"] == "docker-container-disallow-privileged"] == ["mandatory"]
    assert not [v for v in evaluate(violating, {"docker-container-disallow-privileged": "disabled"})
                if v["policy"] == "docker-container-disallow-privileged"]


def test_a_named_waiver_excuses_one_flow():
    document = doc(res(CMD, "vps3-ufw", {"stdin": "ufw allow from any to any port 5432 proto tcp  # waiver: gateway-reads-compliance\n"}))
    name = "platform-stack-configure-tier-reachability"
    assert only(name, document) == ["internet -> vps3-ufw on 5432 through UFW"]
    waived = {name: {"waivers": [{"name": "gateway-reads-compliance", "reason": "seed"}]}}
    assert only(name, document, waived) == []


def test_plaintext_rule_is_not_applicable_without_secret_knowledge():
    """Under the real engine secrets arrive unwrapped; the rule then stands aside, not guesses."""
    from pulumi_policy import ResourceValidationArgs
    from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResourceOptions, _NotApplicableError

    policy = next(p for p in POLICIES if p.name == "platform-resource-disallow-plaintext-secrets")
    args = ResourceValidationArgs(CONTAINER, {"envs": ["DB_PASSWORD=x"]}, "urn", "c",
                                  PolicyResourceOptions(False, [], False, [], PolicyCustomTimeouts(0, 0, 0), []),
                                  None)
    with pytest.raises(_NotApplicableError):
        policy.validate(args, lambda *a: None)


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_committed_stacks_have_no_mandatory_violation(stack):
    from policy.offline import load_policy_config

    violations = evaluate(synth_stack(stack, reveal_secrets=True), load_policy_config(stack))
    assert not has_mandatory(violations), [v for v in violations if v["level"] == "mandatory"]


def _broken_prod() -> dict:
    document = synth_stack("prod")
    by_name = {r["name"]: r for r in document["resources"]}
    by_name["kro-prod-db-firewall"]["inputs"]["rules"].append({"type": "ip_addr", "value": "0.0.0.0/0"})
    by_name["kro-prod-firewall"]["inputs"]["inboundRules"].append(
        {"protocol": "tcp", "portRange": "22", "sourceAddresses": ["0.0.0.0/0"]})
    by_name["kro-prod-backend-image"]["inputs"]["name"] = "registry.digitalocean.com/kro/kro-backend:latest"
    by_name["kro-prod-frontend"]["inputs"]["privileged"] = True
    bucket = copy.deepcopy(by_name["kro-prod-vpc"])
    bucket.update(type="digitalocean:index/spacesBucket:SpacesBucket", name="kro-prod-media",
                  urn=bucket["urn"].replace("digitalocean:index/vpc:Vpc::kro-prod-vpc",
                                            "digitalocean:index/spacesBucket:SpacesBucket::kro-prod-media"),
                  inputs={"name": "kro-prod-media", "acl": "public-read", "versioning": {"enabled": True}},
                  protect=True)
    document["resources"].append(bucket)
    return document


def test_broken_state_fails_synth_check_with_the_right_violations(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_broken_prod()))
    result = subprocess.run([sys.executable, "-m", "synth", "check", str(path)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    for expected in [
        "[mandatory] digitalocean-databasefirewall-disallow-untrusted-sources: the database firewall admits 0.0.0.0/0, the whole internet",
        "[mandatory] digitalocean-firewall-disallow-public-admin-ports: firewall kro-prod-edge opens SSH (22) to the internet",
        "[advisory] docker-image-disallow-unpinned-tag: image registry.digitalocean.com/kro/kro-backend:latest is not pinned",
        "[advisory] docker-container-disallow-privileged: the container is privileged; it would own the host",
        "[mandatory] platform-bucket-disallow-public-access: Spaces bucket kro-prod-media has acl public-read; buckets are private",
        "[mandatory] platform-stack-configure-tier-reachability: internet -> data tier through a database firewall",
    ]:
        assert expected in out, expected


def test_clean_state_passes_synth_check(tmp_path):
    path = tmp_path / "prod.json"
    path.write_text(json.dumps(synth_stack("prod")))
    result = subprocess.run([sys.executable, "-m", "synth", "check", str(path)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


def test_synth_policy_flag_adds_violations_and_exit_code(tmp_path):
    out = tmp_path / "s.json"
    result = subprocess.run([sys.executable, "-m", "synth", "staging", "--policy", "--json", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    assert isinstance(document["violations"], list)
    assert all(set(v) == {"policy", "level", "urn", "message"} for v in document["violations"])
    assert "[secret]" in json.dumps(document), "the written file stays masked"


def test_synth_check_rejects_a_file_that_is_not_a_state(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    result = subprocess.run([sys.executable, "-m", "synth", "check", str(path)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a desired-state document" in result.stderr  # bad input


def test_readme_catalog_matches_the_code():
    from policy.catalog import END, README, START, readme_with_catalog

    text = README.read_text()
    assert START in text and END in text
    assert text == readme_with_catalog(text), "run: python -m policy.catalog --write"
