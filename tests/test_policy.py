"""The policy pack: every policy passes its compliant fixture and reports the exact messages of
each violating mutation, on plain dicts (the offline runner) and through pulumi-policy's own
unknown-checking proxies (``pulumi preview``); unknown values give the analyzer's
"can't run policy ... during preview" outcome, never a crash and never a silent pass."""

from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import sys

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy.offline import evaluate, has_mandatory, load_policy_config
from policy.rules import CASES, CATALOG, POLICIES
from policy.rules.base import MISSING_PRODUCTION, PACK_NAME, PACK_VERSION
from policy.rules.fixtures import container, doc, res
from synth.engine import PROJECT_ROOT
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

BY_NAME = {p.name: p for p in POLICIES}
MODES = ["plain", "proxies"]


def run(name, document, config=None, proxies=False):
    policy = BY_NAME[name]
    case_config = CASES[name].config if config is None else config
    settings = {name: case_config} if case_config else None
    return [v["message"] for v in evaluate(document, settings, policies=[policy], proxies=proxies)]


def test_the_pack_has_at_least_70_policies_each_with_cases_and_metadata():
    assert len(POLICIES) >= 70
    assert set(CASES) == set(BY_NAME) == set(CATALOG)
    for name, case in CASES.items():
        assert case.mutations, name
        assert all(messages for _, messages in case.mutations), name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_passes_its_compliant_fixture(name, mode):
    assert run(name, CASES[name].compliant, proxies=mode == "proxies") == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_policy_reports_each_mutation_with_exact_messages(name, mode):
    for document, messages in CASES[name].mutations:
        assert run(name, document, proxies=mode == "proxies") == messages


def _paths(value, path=()):
    """Every key path into ``value`` (subtrees and leaves)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path + (key,)
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield path + (index,)
            yield from _paths(item, path + (index,))


def _set(document, resource_index, path, value):
    changed = copy.deepcopy(document)
    target = changed["resources"][resource_index]["inputs"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


CANNOT = re.compile(r"^can't run policy '([a-z0-9-]+)' from policy pack 'platform-guardrails@v0\.1\.0' during preview: "
                    r"\w+ value at \.\S+ of urn:pulumi:\S+ can't be known during preview$")


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_unknown_value_is_reported_as_unknown_never_a_silent_pass(name):
    """Every input of every violating mutation, made unknown in turn: the policy either still
    reports what it did (it did not need that value) or says it cannot check during preview."""
    tried = 0
    for document, messages in CASES[name].mutations:
        for index, resource in enumerate(document["resources"]):
            for path in list(_paths(resource["inputs"]))[:60]:
                got = run(name, _set(document, index, path, UNKNOWN_STRING_VALUE), proxies=True)
                cannot = [m for m in got if CANNOT.match(m)]
                assert got == messages or cannot, (path, got)
                assert all(CANNOT.match(m).group(1) == name for m in cannot)
                tried += 1
    assert tried or not any(r["inputs"] for d, _ in CASES[name].mutations for r in d["resources"])


def test_postgres_urls_inside_env_lists_are_checked_under_the_proxies():
    """The regression of issue 19: walk_strings descended into list/tuple only."""
    document = doc(container(envs=["DATABASE_URL=postgresql://u:p@db.internal:25060/kro?sslmode=require"]))
    name = "platform-connection-configure-postgres-verify-full"
    assert run(name, document, proxies=True) == [
        "envs[0] (DATABASE_URL) carries a Postgres URL to db.internal without sslmode=verify-full"]


def test_reading_an_unknown_raises_the_analyzers_error_inside_validate():
    """What `pulumi preview` does: the proxy raises UnknownValueError out of validate, and the
    analyzer turns it into its "can't run policy" diagnostic (pulumi_policy.policy)."""
    from pulumi_policy import ResourceValidationArgs
    from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResourceOptions

    policy = BY_NAME["digitalocean-firewall-disallow-public-non-web"]
    props = unknown_checking_proxy({"name": "x-app", "inboundRules": [
        {"protocol": "tcp", "portRange": "8080", "sourceAddresses": UNKNOWN_STRING_VALUE}]})
    args = ResourceValidationArgs("digitalocean:index/firewall:Firewall", props, "urn", "f",
                                  PolicyResourceOptions(False, [], False, [], PolicyCustomTimeouts(0, 0, 0), []), None, {})
    with pytest.raises(UnknownValueError) as raised:
        policy.validate(args, lambda *a: pytest.fail("reported a violation from an unknown"))
    assert raised.value.message == "string value at .inboundRules.0.sourceAddresses of urn can't be known during preview"


def test_synth_unknown_mask_becomes_an_unknown_under_the_offline_runner():
    document = doc(res("digitalocean:index/firewall:Firewall", "f", {"name": "x-app", "inboundRules": "[unknown]"}))
    got = evaluate(document, policies=[BY_NAME["digitalocean-firewall-disallow-public-non-web"]])
    assert got == [{"policy": "digitalocean-firewall-disallow-public-non-web", "level": "advisory", "urn": "",
                    "message": f"can't run policy 'digitalocean-firewall-disallow-public-non-web' from policy pack "
                               f"'{PACK_NAME}@v{PACK_VERSION}' during preview: string value at .inboundRules of {document['resources'][0]['urn']} "
                               "can't be known during preview"}]


@pytest.mark.parametrize("mode", MODES)
def test_a_public_ipv6_source_with_ipv4_admin_cidrs_is_reported_not_a_type_error(mode):
    document = doc(res("digitalocean:index/databaseFirewall:DatabaseFirewall", "dbfw",
                       {"rules": [{"type": "ip_addr", "value": "2606:4700::1"}]}))
    assert run("digitalocean-databasefirewall-disallow-untrusted-sources", document,
               config={"adminCidrs": ["198.51.100.0/24"]}, proxies=mode == "proxies") == [
        "the database firewall admits public address 2606:4700::1, which is not an admin CIDR; "
        "admit app-tier droplets, apps or tags instead"]


PRODUCTION_POLICIES = ["platform-stateful-enable-protection", "platform-backup-configure-retention",
                       "cloudflare-r2bucket-enable-lock-in-production", "platform-ssh-configure-management-network-only"]


@pytest.mark.parametrize("name", PRODUCTION_POLICIES)
def test_production_must_come_from_config_not_the_stack_name(name):
    document = CASES[name].mutations[0][0]
    assert run(name, document, config={}) == [MISSING_PRODUCTION]
    assert run(name, document, config={"production": False}) == [] or name == "platform-backup-configure-retention"


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_policy_config_production_matches_the_stack_environment(stack):
    from stacks.config import validate_stack_config
    from synth.stackfile import load_stack_file

    file = load_stack_file(PROJECT_ROOT / f"Pulumi.{stack}.yaml", stack, "platform")
    raw = {k.split(":", 1)[1]: v for k, v in file.config.items() if k.startswith("platform:")}
    flag = validate_stack_config(raw, check_secrets=False).environment.is_production
    expected = flag() if callable(flag) else flag
    config = load_policy_config(stack)
    for name in PRODUCTION_POLICIES:
        assert config[name]["production"] is expected


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_policy_config_names_real_policies_and_every_waiver_has_reason_and_future_expiry(stack):
    config = load_policy_config(stack)
    for name, entry in config.items():
        assert name in BY_NAME, name
        schema = BY_NAME[name].config_schema.properties
        assert set(entry) <= set(schema) | {"enforcementLevel"}, (name, set(entry) - set(schema))
        for waiver in entry.get("waivers", []):
            assert waiver["reason"] and len(waiver["reason"]) > 40, waiver["name"]
            assert datetime.date.fromisoformat(waiver["expires"]) > datetime.date.today(), waiver["name"]


def test_waivers_excuse_only_while_they_have_a_reason_and_have_not_expired():
    name = "docker-container-disallow-privileged"
    document = doc(container("pencom-prod-app-core", privileged=True))
    base = "the container is privileged; it would own the host"
    waiver = {"name": "legacy", "reason": "vendor image needs it", "resources": ["*-core"]}
    assert run(name, document, config={}) == [base]
    soon = str(datetime.date.today() + datetime.timedelta(days=30))
    assert run(name, document, config={"waivers": [{**waiver, "expires": soon}]}) == []
    assert run(name, document, config={"waivers": [{**waiver, "expires": "2001-01-01"}]}) == [
        f"{base} (waiver legacy expired on 2001-01-01)"]
    assert run(name, document, config={"waivers": [{"name": "legacy", "resources": ["*-core"], "expires": soon}]}) == [
        f"{base} (waiver legacy names no reason or expiry date, so it excuses nothing)"]
    assert run(name, document, config={"waivers": [{**waiver, "expires": "next year"}]}) == [
        f"{base} (waiver legacy expires 'next year', which is not a YYYY-MM-DD date)"]


NAME = re.compile(r"^(digitalocean|docker|command|cloudflare|minio|platform)-[a-z0-9]+-(disallow|enable|configure)-[a-z0-9-]+$")


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_policy_metadata(policy):
    assert NAME.match(policy.name), policy.name
    assert (policy.description[0].isupper() or policy.description.split()[0] in ("sshd", "nginx")) \
        and policy.description.endswith(".")
    assert policy.severity is not None and policy.enforcement_level in (EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY)
    info = CATALOG[policy.name]
    assert info.sources and all(s.strip() for s in info.sources)
    assert info.fix.endswith(".")
    assert isinstance(policy, (ResourceValidationPolicy, StackValidationPolicy))


def test_enforcement_level_is_configurable():
    name = "docker-container-disallow-privileged"
    violating = CASES[name].mutations[0][0]
    assert [v["level"] for v in evaluate(violating, policies=[BY_NAME[name]])] == ["mandatory"]
    assert [v["level"] for v in evaluate(violating, {name: "advisory"}, policies=[BY_NAME[name]])] == ["advisory"]
    assert evaluate(violating, {name: "disabled"}, policies=[BY_NAME[name]]) == []


def test_plaintext_rule_is_not_applicable_without_secret_knowledge():
    """Under the real engine secrets arrive unwrapped; the rule then stands aside, not guesses."""
    from pulumi_policy import ResourceValidationArgs
    from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResourceOptions, _NotApplicableError

    args = ResourceValidationArgs("docker:index/container:Container", {"envs": ["DB_PASSWORD=x"]}, "urn", "c",
                                  PolicyResourceOptions(False, [], False, [], PolicyCustomTimeouts(0, 0, 0), []), None)
    with pytest.raises(_NotApplicableError):
        BY_NAME["platform-resource-disallow-plaintext-secrets"].validate(args, lambda *a: None)


@pytest.fixture(scope="module")
def prod_state():
    return synth_once("prod", reveal_secrets=True)


@pytest.mark.parametrize("mode", MODES)
def test_prod_is_clean_with_its_waivers(prod_state, mode):
    violations = evaluate(prod_state, load_policy_config("prod"), proxies=mode == "proxies")
    assert violations == [], violations


def test_staging_is_clean_with_its_waivers():
    violations = evaluate(synth_once("staging", reveal_secrets=True), load_policy_config("staging"))
    assert violations == [], violations


def _named(state, name):
    return next(r for r in state["resources"] if r["name"] == name)


def _unsafe(state):
    """One hidden unsafe resource per kind of issue 19, in a copy of the prod state."""
    state = copy.deepcopy(state)
    _named(state, "kro-prod-db-firewall")["inputs"]["rules"].append({"type": "ip_addr", "value": "10.0.0.0/8"})
    _named(state, "pencom-prod-files-policy")["inputs"]["policy"] = json.dumps({"Statement": [
        {"Sid": "Leak", "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::pencom-ehub-prod/*"}]})
    _named(state, "pencom-prod-files-backup-access")["inputs"]["policy"] = json.dumps({"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::*"}]})
    _named(state, "giv-prod-media-key")["inputs"]["grants"] = [{"bucket": "", "permission": "fullaccess"}]
    _named(state, "giv-prod-mongo-backup-token")["inputs"]["policies"][0]["resources"] = json.dumps(
        {"com.cloudflare.api.account.4f3e2d1c0b9a88776655443322110fed": "*"})
    backend = _named(state, "kro-prod-backend")["inputs"]
    backend["capabilities"]["adds"] = ["SYS_ADMIN"]
    backend["securityOpts"].append("seccomp=unconfined")
    backend["mounts"] = [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}]
    _named(state, "pencom-prod-data-redis")["inputs"]["networkMode"] = "host"
    _named(state, "kro-prod-nginx")["inputs"]["ports"].append({"internal": 9229, "external": 9229, "ip": "0.0.0.0"})
    droplet = _named(state, "giv-prod-ops-droplet")["inputs"]
    droplet["userData"] = droplet["userData"].replace("ssh_pwauth: false", "ssh_pwauth: true")
    ufw = _named(state, "pencom-prod-data-setup-ufw")["inputs"]
    ufw["stdin"] = ufw["stdin"].replace("ufw --force enable >/dev/null\n}", "ufw allow 5432/tcp\n  ufw --force enable >/dev/null\n}")
    _named(state, "kro-prod-setup-sshd")["inputs"]["connection"]["user"] = "root"
    app = _named(state, "giv-prod-app-app")["inputs"]["spec"]
    app["services"][0].pop("healthCheck", None)
    app["services"][0]["envs"].append({"key": "LEGACY_URL", "type": "GENERAL", "value": "redis://cache.example.com:6379"})
    app["services"][0]["envs"].append({"key": "REPORTS_DSN", "type": "GENERAL",
                                       "value": "postgresql://rep:pw@db.example.com/r?sslmode=verify-full"})
    _named(state, "pencom-prod-edge-external-gateway")["inputs"]["envs"].append("AUDIT=postgresql://a@10.40.0.13/x?sslmode=disable")
    state["resources"] = [r for r in state["resources"] if r["name"] != "giv-prod-mongo-backup-lifecycle"]
    record = copy.deepcopy(_named(state, "kro-prod-dns-admin-krotrust-com"))
    record.update(name="kro-prod-dns-status", urn=record["urn"] + "-status")
    record["inputs"]["name"] = "status"
    state["resources"].append(record)
    for backup in state["resources"]:
        if backup["name"] == "kro-prod-db-backup":
            backup["inputs"]["schedule"] = "Sun *-*-* 03:00:00 UTC"
    return state


EXPECTED_UNSAFE = [
    ("digitalocean-databasefirewall-disallow-broad-private-range", "trusts 10.0.0.0/8, a whole private range"),
    ("platform-bucketpolicy-disallow-any-principal", "statement Leak allows s3:getobject to any principal"),
    ("minio-iampolicy-disallow-full-access-all-buckets", "allows s3:* on every bucket"),
    ("digitalocean-spaceskey-disallow-full-access", "fullaccess on every bucket"),
    ("cloudflare-token-disallow-account-wide-scope", "scoped to the whole account"),
    ("docker-container-disallow-added-capabilities", "adds SYS_ADMIN"),
    ("docker-container-disallow-unconfined-profiles", "seccomp=unconfined"),
    ("docker-container-disallow-docker-socket", "/var/run/docker.sock (through mounts)"),
    ("docker-container-disallow-host-namespaces-in-data-tier", "shares the host's network namespace"),
    ("docker-container-disallow-public-debug-ports", "Node.js inspector (9229)"),
    ("digitalocean-droplet-disallow-ssh-root-or-password-userdata", "sets ssh_pwauth"),
    ("command-ufw-disallow-public-data-port", "`ufw allow 5432/tcp` opens Postgres (5432) to anyone"),
    ("command-connection-disallow-password-or-root", "as root"),
    ("digitalocean-app-enable-health-check", "krogiving-backend has no health check"),
    ("platform-connection-configure-redis-tls", "redis:// URL to cache.example.com"),
    ("platform-connection-disallow-tls-disabled", "(sslmode=disable)"),
    ("cloudflare-r2bucket-enable-lifecycle", "R2 bucket giv-prod-backups-mongo has no lifecycle rules"),
    ("platform-hostname-enable-uptime-check", "status.krotrust.com has no uptime check"),
    ("platform-backup-configure-rpo", "runs every 168 h"),
    ("platform-stack-configure-tier-reachability", "internet -> pencom-prod-data (data) on 5432 through UFW"),
    ("digitalocean-app-configure-secret-env", "App env var REPORTS_DSN of krogiving-backend looks secret but is not type SECRET"),
]
# Only the synth capture knows which inputs are secret (the analyzer stands this policy aside).
EXPECTED_UNSAFE_OFFLINE = [
    ("platform-resource-disallow-plaintext-secrets", "holds a URL with credentials in plain text"),
]


@pytest.mark.parametrize("mode", MODES)
def test_a_deliberately_unsafe_state_is_flagged_for_every_kind(prod_state, mode):
    violations = evaluate(_unsafe(prod_state), load_policy_config("prod"), proxies=mode == "proxies")
    for policy, fragment in EXPECTED_UNSAFE + EXPECTED_UNSAFE_OFFLINE:
        assert any(v["policy"] == policy and fragment in v["message"] for v in violations), (policy, fragment)
    assert has_mandatory(violations)


def test_an_expired_waiver_in_the_stack_config_becomes_a_violation(prod_state):
    config = copy.deepcopy(load_policy_config("prod"))
    for entry in config["platform-stack-configure-tier-reachability"]["waivers"]:
        if entry["name"] == "egress-proxy":
            entry["expires"] = "2020-01-01"
    violations = evaluate(prod_state, config)
    assert {v["message"] for v in violations} == {
        f"pencom-prod-{node} ({tier}, mgmt containers) -> pencom-prod-edge (edge) on 3128:3136 through UFW breaks "
        "the tier model (waiver egress-proxy expired on 2020-01-01)" for node, tier in (("app", "app"), ("data", "data"), ("storage", "data"))}


def test_broken_state_fails_synth_check_with_the_right_violations(prod_state, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_unsafe(prod_state)))
    result = subprocess.run([sys.executable, "-m", "synth", "check", str(path), "--stack", "prod"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("[mandatory] docker-container-disallow-docker-socket: the container mounts the container runtime "
            "socket /var/run/docker.sock (through mounts), which gives it the host") in result.stdout


def test_synth_policy_flag_adds_violations_and_exit_code(tmp_path):
    out = tmp_path / "s.json"
    result = subprocess.run([sys.executable, "-m", "synth", "staging", "--policy", "--json", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "policy: no violations" in result.stdout
    document = json.loads(out.read_text())
    assert document["violations"] == []
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
    for policy in POLICIES:
        assert f"| `{policy.name}` |" in text
    mandatory = sum(p.enforcement_level is EnforcementLevel.MANDATORY for p in POLICIES)
    assert f"{len(POLICIES)} policies ({mandatory} mandatory, {len(POLICIES) - mandatory} advisory)" in text


def test_pack_version_matches_pulumipolicy_yaml():
    import yaml

    assert yaml.safe_load((PROJECT_ROOT / "policy" / "PulumiPolicy.yaml").read_text())["version"] == PACK_VERSION


def test_a_plaintext_credential_beside_a_secret_env_entry_is_flagged(prod_state):
    """One secret entry makes the capture list envs in secret_inputs; the other entries are
    still plain and judged one by one (the secret ones stay masked, per secret_leaves)."""
    state = copy.deepcopy(prod_state)
    gateway = _named(state, "pencom-prod-edge-external-gateway")
    assert "envs" in gateway["secret_inputs"] and "envs" not in gateway["secret_leaves"]
    gateway["inputs"]["envs"].append("DB_URL=postgres://u:S3cretPassw0rdXyZ@db:5432/x?sslmode=disable")
    index = len(gateway["inputs"]["envs"]) - 1
    violations = evaluate(state, load_policy_config("prod"))
    assert any(v["policy"] == "platform-resource-disallow-plaintext-secrets"
               and v["message"] == f"envs[{index}] (DB_URL) holds a URL with credentials in plain text; pass it as a secret"
               and v["urn"] == gateway["urn"] for v in violations), violations
    assert not any(v["policy"] == "platform-resource-disallow-plaintext-secrets" for v in evaluate(
        prod_state, load_policy_config("prod")))


@pytest.mark.parametrize("mode", MODES)
def test_a_service_url_to_its_own_node_is_no_route_to_another_host(prod_state, mode):
    """On the captured state, where the container's host is its parent OnPremVps: the app
    node's own address is the same host, the data node's another."""
    state = copy.deepcopy(prod_state)
    payments = _named(state, "pencom-prod-app-payments")
    payments["inputs"]["envs"] += ["CORE_URL=http://10.40.0.12:4000", "LEDGER_URL=http://10.40.0.13:4000"]
    index = len(payments["inputs"]["envs"]) - 1
    name = "platform-serviceroute-enable-mtls"
    violations = [v for v in evaluate(state, load_policy_config("prod"), proxies=mode == "proxies")
                  if v["policy"] == name]
    assert violations == [{"policy": name, "level": "mandatory", "urn": payments["urn"], "message":
                           f"envs[{index}] (LEDGER_URL) routes plain HTTP to 10.40.0.13:4000 on another host; "
                           "call it through the mutual-TLS sidecar (http://<caller>-mtls:<port>)"}]


def test_an_indefinite_session_archive_lock_is_longer_than_any_floor_and_a_prefix_lock_is_none():
    from policy.rules.management import _HOST, _archive

    name = "platform-sessions-enable-off-host-archive"
    assert run(name, doc(_HOST, *_archive(1, kind="Indefinite")), config={"production": True}) == []
    prefixed = _archive(30)
    prefixed[-1]["inputs"]["rules"][0]["prefix"] = "kro-prod/"
    assert len(run(name, doc(_HOST, *prefixed), config={"production": True})) == 2
