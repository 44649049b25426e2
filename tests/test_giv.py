"""GIV's captured graph: secrets as SECRET, database firewalls, the media bucket, and a spec
whose every key is a real provider input."""

from __future__ import annotations

import inspect
import re
import pytest
from pulumi_digitalocean import _inputs

from components.app_platform import AppPlatformAppArgs, app_spec
from stacks.giv import GivConfig
from synth.state import State
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

APP = "digitalocean:index/app:App"
DBFW = "digitalocean:index/databaseFirewall:DatabaseFirewall"


@pytest.fixture(scope="module")
def prod():
    return State(synth_once("prod"))


@pytest.fixture(scope="module")
def prod_revealed():
    return State(synth_once("prod", reveal_secrets=True))


@pytest.fixture(scope="module")
def staging():
    return State(synth_once("staging"))


def _envs(app: dict):
    spec = app["inputs"]["spec"]
    for kind in ("services", "staticSites", "workers", "jobs"):
        for component in spec.get(kind) or []:
            for env in component.get("envs") or []:
                yield component["name"], env


def test_secret_env_vars_are_type_secret_and_pulumi_secrets(prod, prod_revealed):
    app = prod.named("giv-prod-app-app")
    envs = list(_envs(app))
    secrets = [(c, e) for c, e in envs if e["type"] == "SECRET"]
    assert {e["key"] for _, e in secrets} >= {"DATABASE_URL", "MONGODB_URI", "REDIS_URL", "JWT_SECRET",
                                              "SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY",
                                              "CLOUDINARY_API_KEY", "CLOUDINARY_API_SECRET"}
    for _, env in envs:
        # In the masked capture a value is "[secret]" exactly when it was a Pulumi secret.
        assert (env["value"] == "[secret]") == (env["type"] == "SECRET"), env["key"]
    assert "spec" in app["secret_inputs"]
    revealed = {e["key"]: e["value"] for _, e in _envs(prod_revealed.named("giv-prod-app-app"))}
    assert "sslmode=verify-full&sslrootcert=/workspace/.certs/postgres-ca.crt" in revealed["DATABASE_URL"]
    assert revealed["MONGODB_URI"].startswith("mongodb+srv://") and "tls=true" in revealed["MONGODB_URI"]
    assert revealed["REDIS_URL"].startswith("rediss://")


def test_spaces_settings_are_wired_into_the_backend(prod):
    keys = {e["key"]: e for c, e in _envs(prod.named("giv-prod-app-app")) if c == "krogiving-backend"}
    assert keys["SPACES_BUCKET_NAME"]["value"] == "krogiving-media"
    assert keys["SPACES_REGION"]["value"] == "fra1"
    assert keys["SPACES_ENDPOINT"]["value"] == "https://fra1.digitaloceanspaces.com"


def test_database_firewalls_admit_only_the_app_and_the_ops_droplet(prod):
    from synth.mockdata import mock_id

    app_id = "giv-prod-app-app-id"
    ops_id = mock_id("digitalocean:index/droplet:Droplet", "giv-prod-ops-droplet")
    rules = {fw["name"]: fw["inputs"]["rules"] for fw in prod.of_type(DBFW)}
    assert rules["giv-prod-pg-firewall"] == [{"type": "app", "value": app_id}, {"type": "droplet", "value": ops_id}]
    assert rules["giv-prod-mongo-firewall"] == rules["giv-prod-pg-firewall"]
    assert rules["giv-prod-cache-firewall"] == [{"type": "app", "value": app_id}]
    assert "tier-mgmt" in prod.named("giv-prod-ops-droplet")["inputs"]["tags"]
    ops_firewall = prod.named("giv-prod-ops-firewall")["inputs"]["inboundRules"]
    # Nothing but the management network's WireGuard port: SSH arrives through the tunnel.
    assert [(r["protocol"], r["portRange"]) for r in ops_firewall] == [("udp", "51820")], \
        "the ops droplet faces nobody but the management network"


def test_cache_is_valkey_and_clusters_are_in_the_vpc(prod):
    engines = {c["name"]: c["inputs"]["engine"] for c in prod.of_type("digitalocean:index/databaseCluster:DatabaseCluster")
               if c["name"].startswith("giv-")}
    assert engines == {"giv-prod-pg-cluster": "pg", "giv-prod-mongo-cluster": "mongodb", "giv-prod-cache-cluster": "valkey"}
    for name in engines:
        assert prod.named(name)["inputs"]["privateNetworkUuid"] == "giv-prod-vpc-id"


def test_media_bucket_is_private_versioned_with_lifecycle_and_cors(prod):
    bucket = prod.named("giv-prod-media")["inputs"]
    assert bucket["acl"] == "private" and bucket["versioning"] == {"enabled": True}
    assert "forceDestroy" not in bucket or bucket["forceDestroy"] is False
    assert bucket["lifecycleRules"][0]["abortIncompleteMultipartUploadDays"] == 1
    cors = prod.named("giv-prod-media-cors")["inputs"]["corsRules"]
    assert cors[0]["allowedOrigins"] == ["https://admin.krogiving.com", "https://www.krogiving.com"]
    assert prod.named("giv-prod-media")["protect"]


def test_spaces_key_grants_only_the_media_bucket(prod):
    key = prod.named("giv-prod-media-key")
    assert key["inputs"]["grants"] == [{"bucket": "krogiving-media", "permission": "readwrite"}]
    assert "secret_key" in key["additional_secret_outputs"] or "secretKey" in key["additional_secret_outputs"]


def test_backend_deploys_on_tags_and_sites_follow_branches(prod):
    spec = prod.named("giv-prod-app-app")["inputs"]["spec"]
    assert spec["services"][0]["github"]["deployOnPush"] is False
    assert all(site["github"]["deployOnPush"] for site in spec["staticSites"])
    assert "domains" not in spec and spec["domainNames"][0]["zone"] == "krogiving.com"
    keys = [e["key"] for e in spec["services"][0]["envs"]]
    assert keys == sorted(keys), "sorted env vars avoid a perpetual diff"
    rules = {r["component"]["name"]: r["match"]["authority"]["exact"] for r in spec["ingress"]["rules"]}
    assert rules == {"krogiving-backend": "api.krogiving.com", "krogiving-frontend": "www.krogiving.com",
                     "giv-admin-new": "admin.krogiving.com"}
    alerts = {a["rule"] for a in spec["alerts"]} | {a["rule"] for a in spec["services"][0]["alerts"]}
    assert alerts == {"DEPLOYMENT_FAILED", "DOMAIN_FAILED", "CPU_UTILIZATION", "MEM_UTILIZATION", "RESTART_COUNT"}


def _args_class(annotation: str):
    found = re.findall(r"'(AppSpec\w+Args)'", annotation)
    return getattr(_inputs, found[0]) if found else None


def _unknown_keys(value, cls, path="spec"):
    """Keys of a spec dict that the SDK's input class (recursively) does not define."""
    params = inspect.signature(cls.__init__).parameters
    hints = {name: str(p.annotation) for name, p in params.items()}
    problems = []
    for key, item in value.items():
        if key not in params:
            problems.append(f"{path}.{key}")
            continue
        nested = _args_class(hints[key])
        elements = ([(f"{path}.{key}[{i}]", e) for i, e in enumerate(item)] if isinstance(item, list)
                    else [(f"{path}.{key}", item)])
        for where, element in elements:
            if isinstance(element, dict) and nested is not None:
                problems += _unknown_keys(element, nested, where)
            elif isinstance(element, dict):
                problems.append(f"{where}: a dict where the SDK takes no object")
    return problems


def test_every_app_spec_key_is_a_provider_input(stack_document):
    cfg = GivConfig.model_validate(stack_document("prod")["config"]["platform:giv"])
    args = AppPlatformAppArgs(name="x", region="fra", components=cfg.components, zone=cfg.zone,
                              alert_emails=["a@example.com"])
    spec = app_spec(args, {"krogiving-backend": {"JWT_SECRET": "s"}})
    spec["vpcs"] = [{"id": "v"}]
    assert _unknown_keys(spec, _inputs.AppSpecArgs) == []
    spec["services"][0]["helth_check"] = {}
    spec["alerts"][0]["destinations"]["email"] = ["typo"]
    assert sorted(_unknown_keys(spec, _inputs.AppSpecArgs)) == ["spec.alerts[0].destinations.email",
                                                                "spec.services[0].helth_check"]


# What may differ between the environments: sizes and counts, retention, the network range,
# the branch a site follows, the production flag of a database attachment, and hashes of
# scripts (compared through their text instead).
ALLOWED_KEYS = {"size", "nodeCount", "instanceSizeSlug", "instanceCount", "autoscaling", "ipRange",
                "retentionDays", "lockDays", "maxAge", "maxAgeSeconds", "environment", "backups", "backupPolicy",
                "branch", "production", "triggers"}
NAMES = [("staging.", ""), ("www.", ""), ("krogiving-media-staging", "krogiving-media"),
         ("krogiving-staging", "krogiving"), ("giv-staging", "giv-prod"), ("env-staging", "env-prod"),
         ("GIV staging", "GIV prod"), ("-staging-krogiving", "-krogiving"),
         (" staging-krogiving", " krogiving"), ("www-krogiving", "krogiving")]


def _normalise(value):
    """Map staging names and domains onto prod's, and mock IDs/addresses (derived from names)
    onto placeholders, leaving every other difference visible."""
    if isinstance(value, str):
        for old, new in NAMES:
            value = value.replace(old, new)
        value = re.sub(r"203\.0\.113\.\d+", "<ip>", value)
        value = re.sub(r"RETENTION_DAYS=\d+", "RETENTION_DAYS=<days>", value)
        value = re.sub(r"^do:droplet:\d+$", "do:droplet:<id>", value)  # DigitalOcean URNs hold IDs
        return "<id>" if re.fullmatch(r"\d{6,}", value) else value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**6:
        return "<id>"
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items() if k not in ALLOWED_KEYS}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def test_staging_differs_from_prod_only_in_sizes_names_domains_and_credentials(prod, staging):
    def key(name: str) -> str:  # uptime checks are named after hostnames (www. / staging.)
        return _normalise(name).replace("-staging-", "-").replace("-www-", "-")

    giv = lambda state: {key(r["name"]): r for r in state.resources
                         if r["name"].startswith("giv-") and r["custom"]}
    p, s = giv(prod), giv(staging)
    # Bucket locks are a production retention setting (lock_days), not a difference in shape.
    p = {k: v for k, v in p.items() if not k.endswith("-backup-lock")}
    assert set(p) == set(s), "the same resources in both"
    differences = []
    for name in sorted(p):
        a, b = _normalise(p[name]["inputs"]), _normalise(s[name]["inputs"])
        if a != b:
            differences.append(name)
    # Staging runs under break-glass (SSH from admin_cidrs in the cloud firewall and fail2ban's
    # ignore list, the Docker provider over the public address); prod through the management
    # network. Nothing else differs.
    assert differences == ["giv-prod-ops-docker", "giv-prod-ops-firewall", "giv-prod-ops-setup-fail2ban"], differences
    assert prod.named("giv-prod-pg-cluster")["inputs"]["size"] != staging.named("giv-staging-pg-cluster")["inputs"]["size"]


def test_the_ops_droplet_watches_the_backups_it_runs_and_probes_the_domains(prod, prod_revealed):
    import yaml

    containers = {c["name"] for c in prod.of_type("docker:index/container:Container") if c["name"].startswith("giv-prod-ops-")}
    assert containers == {f"giv-prod-ops-{m}" for m in
                          ("prometheus", "alertmanager", "grafana", "blackbox", "node-exporter", "cadvisor")}
    firewall = prod.named("giv-prod-ops-firewall", "digitalocean:index/firewall:Firewall")["inputs"]
    assert {r["portRange"] for r in firewall["inboundRules"]} == {"51820"}  # WireGuard; SSH through it
    files = prod_revealed.named("giv-prod-ops-files-prometheus")["inputs"]["stdin"]
    rules = files.split("/rules/platform.yml ", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
    missing = next(r for r in yaml.safe_load(rules)["groups"][0]["rules"] if r["alert"] == "BackupMissing")
    assert set(re.findall(r'job="([^"]+)"', missing["expr"])) == {"giv-prod-pg", "giv-prod-mongo"}
    config = files.split("/prometheus/prometheus.yml ", 1)[1].split("\n", 1)[1].split("PLATFORM_EOF", 1)[0]
    probes = next(j for j in yaml.safe_load(config)["scrape_configs"] if j["job_name"] == "blackbox-http")
    assert probes["static_configs"][0]["targets"] == [
        "https://api.krogiving.com", "https://www.krogiving.com", "https://admin.krogiving.com"]


@pytest.mark.parametrize("tag, ok", [("2026.11.2", True), ("v1_rc-2", True), ("v1é", False),
                                     ("-v1", False), ("a" * 129, False)])
def test_an_image_source_tag_follows_the_oci_grammar(tag, ok):
    """OCI distribution spec: ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``, ASCII only."""
    from pydantic import ValidationError

    from components.app_components import ImageSource

    def build():
        return ImageSource(registry_type="GHCR", registry="krotrust", repository="giv/backend", tag=tag)

    if ok:
        assert build().tag == tag
    else:
        with pytest.raises(ValidationError):
            build()
