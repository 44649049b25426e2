"""A bad stack config is one clean error naming every key path, exit 2, nothing registered."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stacks.config import validate_stack_config
from stacks.errors import ConfigError
from synth.capture import Capture
from synth.engine import PROJECT_ROOT, program_from_main, run_program
from synth.stackfile import _as_config_string

pytestmark = pytest.mark.fast


def _raw(document: dict) -> dict:
    """A stack file's config as the engine hands it over: un-namespaced keys, JSON strings."""
    return {k.split(":", 1)[1]: _as_config_string(v) for k, v in document["config"].items()}


def _cli(stack_file, *extra, stack="staging"):
    return subprocess.run(
        [sys.executable, "-m", "synth", stack, "--stack-file", str(stack_file), *extra],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )


BROKEN_CASES = {
    "unknown key": (
        lambda c: c["platform:environment"].__setitem__("regoin", "fra1"),
        "platform:environment.regoin: unknown key",
    ),
    "wrong type": (
        lambda c: c["platform:environment"].__setitem__("admin_cidrs", "198.51.100.10/32"),
        "platform:environment.admin_cidrs: Input should be a valid list",
    ),
    "missing required field": (
        lambda c: c["platform:environment"].pop("name"),
        "platform:environment.name: required key is missing",
    ),
    "invalid value": (
        lambda c: c["platform:environment"]["admin_cidrs"].__setitem__(0, "0.0.0.0/0"),
        "platform:environment.admin_cidrs[0]: an admin CIDR broader than /24 opens SSH",
    ),
    "unknown top-level key": (
        lambda c: c.__setitem__("platform:kr0", {}),
        "platform:kr0: unknown key",
    ),
    "misspelled namespace": (
        lambda c: c.__setitem__("platfrom:kro", c.pop("platform:kro")),
        "platfrom:kro: unknown config namespace 'platfrom', so nothing reads this key",
    ),
    "unknown product": (
        lambda c: c.__setitem__("platform:products", ["kro", "nope"]),
        'platform:products[1]: unknown product "nope"',
    ),
    # Found on the rehearsal: the internal nodes' first pull of cAdvisor got "Forbidden" from
    # the edge's squid, whose host allow-list named no gcr.io.
    "registry the proxy refuses": (
        lambda c: c["platform:pencom"]["egress"].__setitem__("host_domains", [
            d for d in c["platform:pencom"]["egress"]["host_domains"] if d != "storage.googleapis.com"]),
        "platform:pencom.egress.host_domains: add storage.googleapis.com: the internal nodes pull "
        "gcr.io/cadvisor/cadvisor:v0.49.1 (monitoring.cadvisor_image) through the edge's proxy",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CASES))
def test_broken_config_exits_2_with_key_path_and_no_traceback(case, stack_document, write_stack):
    document = stack_document("staging")
    mutate, expected = BROKEN_CASES[case]
    mutate(document["config"])
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "nothing was registered" in result.stderr


@pytest.mark.parametrize("case", sorted(BROKEN_CASES))
def test_broken_config_registers_no_resource(case, stack_document):
    """The program itself (not only synth's pre-check) refuses before registering anything."""
    document = stack_document("staging")
    mutate, expected = BROKEN_CASES[case]
    mutate(document["config"])
    config = {k: _as_config_string(v) for k, v in document["config"].items()}
    capture = Capture(project="platform", stack="staging")
    with pytest.raises(ConfigError) as raised:
        run_program(program_from_main(), stack="staging", config=config, secret_keys=[],
                    capture=capture)
    assert expected in str(raised.value)
    assert capture.resources == []


def test_every_problem_is_reported_at_once(stack_document):
    document = stack_document("staging")
    env = document["config"]["platform:environment"]
    env["regoin"] = "x"
    env.pop("name")
    env["admin_cidrs"] = ["not-a-cidr"]
    with pytest.raises(ConfigError) as raised:
        validate_stack_config(_raw(document))
    paths = [p.split(":", 2)[1].split(":")[0] for p in raised.value.problems]
    assert len(raised.value.problems) == 3, raised.value.problems
    assert any("environment.regoin" in p for p in raised.value.problems)
    assert any("environment.name" in p for p in raised.value.problems)
    assert any("environment.admin_cidrs[0]" in p and '"not-a-cidr"' in p
               for p in raised.value.problems), paths


@pytest.mark.parametrize("text,where,problem", [
    ("config: [unclosed", ":1:18: not valid YAML", "expected ',' or ']'"),
    ("config:\n  platform:products: [kro\n  platform:x: 1\n", ":3:13: not valid YAML", "expected ',' or ']'"),
    ("config:\n\tplatform:products: []\n", ":2:1: not valid YAML", "found character '\\t'"),
])
def test_unreadable_stack_file_is_one_line_naming_the_place(tmp_path, text, where, problem):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text(text)
    result = _cli(path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"{path}{where}" in lines[0] and problem in lines[0], lines
    assert "<unicode string>" not in result.stderr and "Traceback" not in result.stderr


def test_yaml_merge_keys_are_read_and_own_keys_must_still_be_unique():
    """``<<: *anchor`` is valid YAML (1.1 merge keys, which Pulumi's loader reads too): a
    service written as "api-dev's settings, but" was refused as "could not determine a
    constructor for the tag ...merge"."""
    from synth.stackfile import DuplicateKeyError, load_yaml

    text = ("services:\n"
            "  - &api {name: api-dev, port: 3000, env: {APP_ENV: dev}}\n"
            "  - <<: *api\n"
            "    name: api-staging\n"
            "    env: {APP_ENV: staging}\n")
    assert load_yaml(text)["services"][1] == {"name": "api-staging", "port": 3000, "env": {"APP_ENV": "staging"}}
    with pytest.raises(DuplicateKeyError, match="line 6: key 'name' repeats the key on line 4"):
        load_yaml(text + "    name: again\n")


def test_missing_stack_file_names_the_fix(tmp_path):
    result = _cli(tmp_path / "Pulumi.nothere.yaml")
    assert result.returncode == 2
    assert "no stack file" in result.stderr and "--stack-file" in result.stderr


# Hypothesis: feed the boundary random, mostly malformed input; only a ConfigError may come out.

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
TOP_KEYS = ["environment", "products", "kro", "giv", "pencom", "vedfinance", "alerts_slack_webhook_url"]


def _valid_raw() -> dict:
    return json.loads(json.dumps({
        "environment": {"name": "staging", "admin_cidrs": ["198.51.100.10/32"],
                        "alerts": {"emails": ["ops@example.com"]}},
        "products": [],
    }))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(TOP_KEYS) | st.text(max_size=10), json_value, max_size=6))
def test_random_config_gives_only_clean_errors(raw):
    config = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in raw.items()}
    try:
        validate_stack_config(config)
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("platform:") for p in exc.problems)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.sampled_from(["environment", "name", "admin_cidrs", 0, "alerts",
                                      "emails", "region", "production", "products"]),
                     min_size=1, max_size=4),
       value=json_value)
def test_mutated_valid_config_gives_only_clean_errors(path, value):
    document = _valid_raw()
    target = document
    for part in path[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        target[path[-1]] = value
    except (TypeError, IndexError):
        return
    config = {k: json.dumps(v) for k, v in copy.deepcopy(document).items()}
    try:
        validate_stack_config(config)
    except ConfigError as exc:
        assert all(p.startswith("platform:") and ": " in p for p in exc.problems)


def test_committed_json_schema_is_current():
    from stacks.schema import stack_file_schema

    committed = json.loads((PROJECT_ROOT / "docs" / "stack-config.schema.json").read_text())
    assert committed == json.loads(json.dumps(stack_file_schema())), (
        "docs/stack-config.schema.json is stale: python -m stacks.schema > "
        "docs/stack-config.schema.json"
    )


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_committed_stack_files_match_the_json_schema(stack, stack_document):
    import jsonschema
    schema = json.loads((PROJECT_ROOT / "docs" / "stack-config.schema.json").read_text())
    jsonschema.validate(stack_document(stack), schema)


# --- one example per kind of bad config (each passed silently or failed late before) --------

def _problems(document: dict, stack: str = "staging", **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        validate_stack_config(_raw(document), stack=stack, check_secrets=False, **kwargs)
    return raised.value.problems


def _has(problems: list[str], path: str, text: str = "") -> bool:
    return any(p.startswith(path + ":") and text in p for p in problems)


@pytest.mark.parametrize("mutate,path,fix", [
    (lambda c: c["platform:environment"].__setitem__("admin_cidrs", "198.51.100.10/32"),
     "platform:environment.admin_cidrs", "write it as a YAML list"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("NEXT_TELEMETRY_DISABLED", True),
     "platform:kro.services[0] (backend).env.NEXT_TELEMETRY_DISABLED", "quote the value to keep it a string"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("PORT", 3000),
     "platform:kro.services[0] (backend).env.PORT", "quote it to keep it a string ('3000')"),
])
def test_a_wrong_type_names_the_yaml_edit_that_fixes_it(stack_document, mutate, path, fix):
    """`PORT: 3000` or `FLAG: yes` is read by YAML as a number or a boolean: the message said
    only "got 3000" (found by a new user's try-out)."""
    document = stack_document("staging")
    mutate(document["config"])
    assert _has(_problems(document), path, fix), _problems(document)


def test_duplicate_yaml_key_is_rejected_naming_both_lines(tmp_path):
    path = tmp_path / "Pulumi.staging.yaml"
    text = (PROJECT_ROOT / "Pulumi.staging.yaml").read_text().replace(
        "    name: staging\n", "    name: staging\n    name: prod\n", 1)
    path.write_text(text)
    result = _cli(path)
    assert result.returncode == 2
    assert "key 'name' repeats the key on line" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mutate,path,text", [
    (lambda c: c["platform:pencom"].__setitem__("internal_cidr", "10.40.0.0"),
     "platform:pencom.internal_cidr", "with its prefix"),
    (lambda c: c["platform:kro"].__setitem__("vpc_ip_range", "100.64.0.0/20"),
     "platform:kro.vpc_ip_range", "private range"),
    (lambda c: c["platform:pencom"]["nodes"]["edge"].__setitem__("public_address", "10.9.9.9"),
     "platform:pencom.nodes.edge.public_address", "public address"),
    (lambda c: c["platform:environment"]["admin_cidrs"].__setitem__(0, "198.51.0.0/16"),
     "platform:environment.admin_cidrs[0]", "broader than /24"),
    (lambda c: c["platform:environment"]["admin_cidrs"].__setitem__(0, "2001:db8::/32"),
     "platform:environment.admin_cidrs[0]", "broader than /48"),
    (lambda c: c["platform:pencom"]["egress"]["direct"][0].__setitem__("cidrs", ["0.0.0.0/0"]),
     "platform:pencom.egress.direct[0] (oracle-ecrs).cidrs", "bypasses the egress allow-list"),
    (lambda c: c["platform:pencom"]["egress"].__setitem__("resolvers", ["0.0.0.0/0"]),
     "platform:pencom.egress.resolvers[0]", "single host"),
])
def test_addresses(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    assert _has(_problems(document), path, text), _problems(document)


@pytest.mark.parametrize("mutate,path,text", [
    (lambda c: c["platform:pencom"]["app_services"][4].__setitem__("port", 4000),
     "platform:pencom.app_services[4] (external-integrations).port",
     "also claimed by platform:pencom.app_services[0] (core).port"),
    (lambda c: c["platform:pencom"]["nodes"]["app"].__setitem__("ssh_port", 18000),
     "platform:pencom.app_services[4] (external-integrations).port", "(port + 10000) is already published by sshd"),
    (lambda c: c["platform:kro"]["routes"][2].__setitem__("host", "api.stage.krotrust.com"),
     "platform:kro.routes[2] (api.stage.krotrust.com).host", "also claimed by platform:kro.routes[0]"),
    (lambda c: c["platform:vedfinance"]["routes"][0].update(host="api.stage.krotrust.com"),
     "platform:vedfinance.routes[0] (api.stage.krotrust.com).host", "also claimed by platform:kro.routes[0]"),
    (lambda c: c["platform:kro"]["backup"].update(bucket=c["platform:giv"]["backup"]["bucket"] + "-pg",
                                                  cloudflare_account_id=c["platform:giv"]["backup"]["cloudflare_account_id"]),
     "platform:giv.backup.bucket", "giv-staging-backups-pg is also claimed by platform:kro.backup.bucket"),
    (lambda c: c["platform:kro"]["services"][1].__setitem__("name", "grafana"),
     "platform:kro.services[1] (grafana).name", "monitoring stack"),
    (lambda c: c["platform:pencom"]["read_waivers"].append(dict(c["platform:pencom"]["read_waivers"][0])),
     "platform:pencom.read_waivers[1] (external-gateway-reads-compliance).service", "also claimed by"),
    (lambda c: c["platform:pencom"]["app_services"][0]["secret_env"].__setitem__("JWT_SECRET", "pencom_jwt"),
     "platform:pencom.app_services[0] (core).secret_env.JWT_SECRET", "set by the program"),
    (lambda c: c["platform:vedfinance"]["services"][0]["secret_env"].__setitem__("DATABASE_URL", "vedfinance_db"),
     "platform:vedfinance.services[0] (api-dev).secret_env.DATABASE_URL", "set by the program"),
])
def test_collisions_name_the_value_and_both_places(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    problems = _problems(document)
    assert _has(problems, path, text) or (path == "platform:" and any(text in p for p in problems)), problems


@pytest.mark.parametrize("mutate,path,text", [
    (lambda c: c["platform:kro"]["services"][0].__setitem__("image", "registry.digitalocean.com/kro/Kro-Backend:1"),
     "platform:kro.services[0] (backend).image", "lower-case"),
    (lambda c: c["platform:kro"]["services"][0].__setitem__("image", "nginx@sha256:abc123"),
     "platform:kro.services[0] (backend).image", "digest"),
    (lambda c: c["platform:kro"]["services"][0].__setitem__("image", "nginx :1.2"),
     "platform:kro.services[0] (backend).image", "no spaces"),
    (lambda c: c["platform:kro"].__setitem__("monitoring", {"grafana_image": "grafana/grafana"}),
     "platform:kro.monitoring.grafana_image", "pinned"),
    (lambda c: c["platform:environment"]["alerts"].__setitem__("emails", ["ops@@example.com"]),
     "platform:environment.alerts.emails[0]", "email"),
    (lambda c: c["platform:kro"]["droplet"].__setitem__("size", "s-2vcpu-5gb"),
     "platform:kro.droplet.size", "not a DigitalOcean droplet size"),
    (lambda c: c["platform:kro"]["routes"][0].__setitem__("host", "a" * 64 + ".stage.krotrust.com"),
     "platform:kro.routes[0]", "longer than 63"),
    (lambda c: c["platform:kro"]["backup"].__setitem__("schedule", "Sun *-*-* 25:00"),
     "platform:kro.backup.schedule", "hour 25"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("NODE_ENV", "prod\x00uction"),
     "platform:kro.services[0] (backend).env.NODE_ENV", "control characters"),
    (lambda c: c["platform:pencom"]["read_waivers"][0].__setitem__("reason", "reads it\nPLATFORM_EOF\nuntil then"),
     "platform:pencom.read_waivers[0] (external-gateway-reads-compliance).reason", "PLATFORM_EOF"),
])
def test_formats_are_checked_by_their_grammar(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    problems = _problems(document)
    assert any(p.startswith(path) and text in p for p in problems), problems


SECRET = "postgres://admin:S3cr3tPassw0rd@db.example.com/app"


@pytest.mark.parametrize("mutate,path,text", [
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("DB_PASS", "x"),
     "platform:kro.services[0] (backend).env.DB_PASS", "the name says it holds a secret"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("SENTRY_DSN", "x"),
     "platform:kro.services[0] (backend).env.SENTRY_DSN", "the name says it holds a secret"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("GOOGLE_CREDENTIALS", "x"),
     "platform:kro.services[0] (backend).env.GOOGLE_CREDENTIALS", "the name says it holds a secret"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("UPSTREAM", SECRET),
     "platform:kro.services[0] (backend).env.UPSTREAM", "a URL with a user and password"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("BLOB", "-----BEGIN OPENSSH PRIVATE KEY-----"),
     "platform:kro.services[0] (backend).env.BLOB", "a private key"),
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("X", "kJ8sd9Fh2kLm4Nq7Rt1Vx5Zb3Yc6Wp0Q"),
     "platform:kro.services[0] (backend).env.X", "high-entropy token"),
    (lambda c: c.__setitem__("platform:kro_jwt_secert", {"secure": "v1:abc"}),
     "platform:kro_jwt_secert", "did you mean kro_jwt_secret"),
    # The platform's own cloud: hex never counts as high-entropy, so the format is known.
    (lambda c: c["platform:kro"]["services"][0]["env"].__setitem__("PROJECT_ID", "dop_v1_" + "4f3e2d1c" * 8),
     "platform:kro.services[0] (backend).env.PROJECT_ID", "an API token"),
])
def test_secrets_in_plain_config_are_rejected_and_never_echoed(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    problems = _problems(document)
    assert any(p.startswith(path) and text in p for p in problems), problems
    assert not any("S3cr3t" in p or "kJ8sd9" in p for p in problems)


SLACK_WEBHOOK = "https://hooks.slack.com/services/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"


def test_a_slack_webhook_in_slack_channel_is_one_error_naming_the_secret_key(stack_document, write_stack):
    """The common slip: the webhook URL pasted where the channel name goes. One problem, at the
    exact key, naming the secret key that does exist; exit 2, no traceback, URL not echoed."""
    document = stack_document("staging")
    document["config"]["platform:environment"]["alerts"]["slack_channel"] = SLACK_WEBHOOK
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "T0AB12CD3" not in output and "hooks.slack.com" not in output
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert lines == [
        "  - platform:environment.alerts.slack_channel: holds a Slack webhook URL, which is a secret "
        "(value not shown); this key takes the channel name (such as #ops-alerts); set the URL with "
        "`pulumi config set --secret platform:alerts_slack_webhook_url` (it prompts for it) and remove "
        "it from here"], result.stderr
    assert "environment_<name>" not in output


def test_the_set_commands_never_put_a_secret_on_the_command_line(stack_document):
    """Every `pulumi config set --secret` a message gives takes the value at pulumi's prompt or,
    multi-line (a private key, a Docker config.json), from its file on standard input."""
    import re

    for stack in ("staging", "prod"):
        with pytest.raises(ConfigError) as raised:
            validate_stack_config(_raw(stack_document(stack)), stack=stack)
        commands = [c for p in raised.value.problems for c in re.findall(r"`(pulumi config set[^`]*)`", p)]
        assert commands, raised.value.problems
        for command in commands:
            key = command.split()[-1] if "<" not in command else command.split()[-3]
            assert re.fullmatch(r"platform:\w+", key), command
            if key.endswith("_ssh_private_key") or key == "platform:ssh_ca_private_key":
                assert command.endswith(" < KEY_FILE"), command
            elif key.endswith("_registry_auth"):
                assert command.endswith(" < config.json"), command
            else:
                assert command == f"pulumi config set --secret {key}", command


def test_a_secret_named_env_var_is_reported_at_its_own_key(stack_document):
    """Each offending variable at ``env.NAME``, not the whole ``env`` map, and never its value."""
    document = stack_document("staging")
    env = document["config"]["platform:kro"]["services"][0]["env"]
    env["API_TOKEN"] = "plain-value-1"
    env["DB_PASSWORD"] = "plain-value-2"
    component = document["config"]["platform:giv"]["components"][0]
    component.setdefault("env", {})["STRIPE_SECRET_KEY"] = "plain-value-3"
    problems = _problems(document)
    assert [p.split(": ", 1)[0] for p in problems] == [
        "platform:kro.services[0] (backend).env.API_TOKEN",
        "platform:kro.services[0] (backend).env.DB_PASSWORD",
        f"platform:giv.components[0] ({component['name']}).env.STRIPE_SECRET_KEY"], problems
    assert not any("plain-value" in p for p in problems)


@pytest.mark.parametrize("key,value,kind", [
    ("cloudflare:apiToken", "Xk3LmN9pQr2StUv5WxYz8AbCdEf1GhIj4KlMnOpQ", "a credential"),
    ("digitalocean:token", "dop_v1_" + "0123abcd" * 8, "a credential"),
    ("digitalocean:spacesSecretKey", "not-even-random", "a credential"),
    ("someprovider:endpoint", "https://admin:S3cr3tPassw0rd@example.com", "a URL with a user and password"),
])
def test_provider_credentials_in_plain_text_are_refused(key, value, kind, stack_document, write_stack):
    """Only ``platform:*`` keys were checked: a provider token written in the stack file without
    ``--secret`` synthesized with exit 0 (found by a new user trying the program)."""
    document = stack_document("staging")
    document["config"][key] = value
    result = _cli(write_stack(document))
    assert result.returncode == 2, result.stderr
    assert f"{key}: holds {kind} in plain text" in result.stderr
    assert f"pulumi config set --secret {key}" in result.stderr
    assert value not in result.stderr + result.stdout and "S3cr3t" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_provider_setting_that_is_not_a_credential_passes(stack_document, write_stack):
    document = stack_document("staging")
    document["config"]["digitalocean:apiEndpoint"] = "https://api.digitalocean.com"
    result = _cli(write_stack(document))
    assert result.returncode == 0, result.stderr


NAMESPACES = "(the stack's namespaces: platform, pulumi, digitalocean, cloudflare, docker, command, random, tls, minio)"


@pytest.mark.parametrize("mutate,problem", [
    (lambda c: c.__setitem__("platfrom:kro", c.pop("platform:kro")),
     f"platfrom:kro: unknown config namespace 'platfrom', so nothing reads this key {NAMESPACES}; "
     "did you mean platform:kro?"),
    (lambda c: c.__setitem__("digitalocaen:token", {"secure": "v1:abc"}),
     f"digitalocaen:token: unknown config namespace 'digitalocaen', so nothing reads this key {NAMESPACES}; "
     "did you mean digitalocean:token?"),
    (lambda c: c.__setitem__("acme:email", "ops@example.com"),
     f"acme:email: unknown config namespace 'acme', so nothing reads this key {NAMESPACES}; rename it, or "
     "remove it with `pulumi config rm acme:email`"),
    (lambda c: c.__setitem__("platform:kr0", c.pop("platform:kro")),
     "platform:kr0: unknown key (known keys: environment, giv, kro, pencom, products, vedfinance; secret keys start "
     "with kro_, giv_, pencom_, vedfinance_, alerts_, ssh_); did you mean platform:kro?"),
], ids=["platform", "provider, secret", "no close namespace", "platform key"])
def test_a_key_nothing_reads_is_one_line_with_the_key_it_meant(stack_document, write_stack, mutate, problem):
    """Pulumi hands the program a key of any namespace: ``platfrom:kro:`` in a stack file was
    read by nothing, and the product was absent (or, listed, "required key is missing"
    without the reason). The scripts' boundary (``load_stack_config``) and synth's refuse it."""
    from synth.stackfile import StackFileError, load_stack_config

    document = stack_document("staging")
    mutate(document["config"])
    with pytest.raises(StackFileError) as raised:
        load_stack_config("staging", write_stack(document), PROJECT_ROOT)
    assert str(raised.value) == problem


def test_the_providers_and_pulumis_own_keys_pass(stack_document, write_stack):
    """Keys the providers read (their SDKs' config, ``stacks.provider_keys``) and the engine's
    ``<provider>:version``; a made-up key of a provider is refused (tests/test_boundary_findings.py)."""
    from synth.stackfile import load_stack_config

    document = stack_document("staging")
    document["config"].update({"digitalocean:token": {"secure": "v1:abc"}, "cloudflare:apiToken": {"secure": "v1:def"},
                               "pulumi:template": "python", "pulumi:disable-default-providers": ["*"],
                               "docker:host": "ssh://deploy@203.0.113.5", "tls:proxy": {"fromEnv": True},
                               "random:version": "4.21.4", "command:version": "1.2.1",
                               "minio:minioServer": "s3.example.com"})
    assert load_stack_config("staging", write_stack(document), PROJECT_ROOT).products


def test_the_config_namespaces_are_the_required_providers():
    """A provider added to requirements.txt (``pulumi-<name>``) reads ``<name>:*`` keys."""
    from stacks.value_checks import PROVIDER_NAMESPACES

    required = {line.split("==")[0].removeprefix("pulumi-") for line in
                (PROJECT_ROOT / "requirements.txt").read_text().splitlines() if line.startswith("pulumi-")}
    assert set(PROVIDER_NAMESPACES) == required


def test_secret_key_names_stay_readable_while_values_are_masked(stack_document):
    """A key name is not a secret: the "did you mean" hint and the list of needed secrets name
    `pencom_alerts_smtp_password` even though a field whose name says password
    (`smtp_password_secret`) holds it; a secret value in such a field is still masked."""
    document = stack_document("staging")
    config = document["config"]
    config["platform:pencom"]["monitoring"]["smtp_password_secret"] = "pencom_alerts_smtp_password"
    config["platform:pencom_alerts_smtp_pasword"] = {"secure": "v1:abc"}
    problems = _problems(document)
    typo = [p for p in problems if p.startswith("platform:pencom_alerts_smtp_pasword")]
    assert typo and "did you mean pencom_alerts_smtp_password?" in typo[0], problems
    assert "[value not shown]" not in typo[0]
    assert "pencom_alerts_smtp_password, pencom_oracle_password" in typo[0]

    document = stack_document("staging")
    document["config"]["platform:kro"]["monitoring"]["smtp_password_secret"] = "Hunter2-Secret-Value"
    problems = _problems(document)
    assert problems and not any("Hunter2-Secret-Value" in p for p in problems), problems


def test_stack_identity_and_production_flag(stack_document):
    document = stack_document("prod")
    document["config"]["platform:environment"]["name"] = "staging"
    assert _has(_problems(document, stack="prod"), "platform:environment.name", "config of stack 'prod'")
    document = stack_document("prod")
    document["config"]["platform:environment"]["production"] = False
    assert _has(_problems(document, stack="prod"), "platform:environment.production", "production environment")


@pytest.mark.parametrize("mutate,path,text", [
    (lambda c: c["platform:vedfinance"]["host"].__setitem__("bootstrap_user", "root"),
     "platform:vedfinance.host.bootstrap_user", "other than root"),
    (lambda c: c["platform:pencom"]["nodes"]["app"].__setitem__("bootstrap_user", "deploy"),
     "platform:pencom.nodes.app.bootstrap_user", "deploy user"),
    (lambda c: c["platform:vedfinance"]["monitoring"].pop("smtp_password_secret"),
     "platform:vedfinance.monitoring.smtp_password_secret", "is required"),
    (lambda c: c["platform:pencom"]["egress"].__setitem__("edge_subnet", "172.31.250.0/28"),
     "platform:pencom.egress.edge_subnet", "too small"),
    # Each node's containers have addresses of their own (the default subnets are apart).
    (lambda c: c["platform:pencom"]["egress"].__setitem__("node_subnets", {"data": "172.31.251.128/25"}),
     "platform:pencom.egress.node_subnets.data", "overlaps platform:pencom.egress.node_subnets.app"),
    (lambda c: c["platform:pencom"]["egress"].__setitem__("node_subnets", {"app": "172.31.250.0/24"}),
     "platform:pencom.egress.node_subnets.app", "overlaps platform:pencom.egress.edge_subnet"),
    (lambda c: c["platform:pencom"]["egress"].__setitem__("node_subnets", {"storage": "10.41.0.0/16"}),
     "platform:pencom.egress.node_subnets.storage", "overlaps internal_cidr"),
    (lambda c: c["platform:pencom"]["egress"].__setitem__("node_subnets", {"app": "172.17.9.0/24"}),
     "platform:pencom.egress.node_subnets.app", "docker0"),
    (lambda c: c["platform:kro"]["services"][1].pop("port"),
     "platform:kro.routes[1] (app.stage.krotrust.com).service", "no port"),
    (lambda c: c["platform:pencom"]["monitoring"]["metrics_services"].append("nope"),
     "platform:pencom.monitoring.metrics_services[8]", "not a service"),
    (lambda c: c["platform:vedfinance"]["dns"].__setitem__("provider", "cloudflare")
     or c["platform:kro"].update(adopt={"domain": True}, dns={"provider": "cloudflare", "zone": "krotrust.com",
                                                              "cloudflare_zone_id": "a" * 32}),
     "platform:kro.adopt.domain", "only a DigitalOcean DNS zone"),
])
def test_checks_that_ran_mid_build_run_at_the_boundary(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    assert _has(_problems(document), path, text), _problems(document)


def test_every_list_item_is_checked_and_broken_sections_hide_nothing(stack_document):
    document = stack_document("staging")
    kro = document["config"]["platform:kro"]
    kro["services"][0]["tier"] = "data"                  # not the last item, no monitoring needed
    kro.pop("monitoring")
    kro["droplet"]["size"] = 42                          # another section broken
    document["config"]["platform:environment"]["admin_cidrs"] = "x"  # and the environment
    problems = _problems(document)
    assert _has(problems, "platform:kro.services[0] (backend).tier", "app tier")
    assert _has(problems, "platform:kro.droplet.size")
    assert _has(problems, "platform:environment.admin_cidrs")


def test_null_reads_as_empty_and_does_not_cascade(stack_document):
    document = stack_document("staging")
    document["config"]["platform:kro"]["dns"] = None
    problems = _problems(document)
    assert problems == ["platform:kro.dns: Input should be a valid dictionary or instance of DnsConfig, "
                        "got null (empty) (where the hostnames are published)"], problems


@pytest.mark.parametrize("mutate,path,text", [
    (lambda c: c["platform:giv"]["components"][0].update(autoscaling={"min_instances": 2, "max_instances": 3}),
     "platform:giv.components[0] (krogiving-backend).instance_size_slug", "dedicated-CPU"),
    (lambda c: c["platform:giv"]["backup"].__setitem__("bucket", "g" * 60),
     "platform:giv.backup.bucket", "R2 allows 3 to 63"),
    (lambda c: c["platform:giv"]["postgres"].__setitem__("version", "9"),
     "platform:giv.postgres.version", "pg 9"),
])
def test_provider_rules(stack_document, mutate, path, text):
    document = stack_document("staging")
    mutate(document["config"])
    assert _has(_problems(document), path, text), _problems(document)


def test_existing_clusters_attach_as_production_databases(synth):
    """App Platform's production: false is a dev database it provisions (PostgreSQL only)."""
    state = synth("staging")
    app = next(r for r in state.of_type("digitalocean:index/app:App"))
    assert {(d["engine"], d["production"]) for d in app["inputs"]["spec"]["databases"]} == {
        ("PG", True), ("MONGODB", True), ("VALKEY", True)}


# --- holes the mutation property test found (one example of each kind) ----------------------

def test_a_long_plain_env_value_is_accepted_through_the_policy_pack(stack_document, write_stack):
    """A 300-character env value is a legal value: the whole synth and policy run exit 0."""
    document = stack_document("staging")
    document["config"]["platform:kro"]["services"][0]["env"]["APP_BANNER"] = "x" * 300
    result = _cli(write_stack(document, "staging"), "--policy")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("key", ["healthcheck", "command"])
def test_an_empty_exec_form_item_is_rejected_at_its_command(stack_document, key):
    """Docker runs exec-form item 0 without a shell: an empty one never starts (exit 1 before)."""
    document = stack_document("prod")
    service = document["config"]["platform:pencom"]["app_services"][1]
    if key == "healthcheck":
        service["healthcheck"]["command"][0] = ""
        path = "platform:pencom.app_services[1] (payments).healthcheck.command"
    else:
        service["command"] = ["node", " "]
        path = "platform:pencom.app_services[1] (payments).command"
    problems = _problems(document, stack="prod")
    assert _has(problems, path, "is empty"), problems


@pytest.mark.parametrize("form", ["CMD-SHELL", "CMD", "NONE", "cmd-shell"])
def test_a_compose_style_healthcheck_is_rejected_at_its_command(stack_document, form):
    """The program adds Docker's CMD itself: ``[CMD-SHELL, ...]`` would run a program named
    CMD-SHELL and the container would never be healthy (every deploy of it timing out)."""
    document = stack_document("staging")
    service = document["config"]["platform:pencom"]["edge_services"][0]
    service["healthcheck"]["command"] = [form, "curl -f http://localhost/health"]
    problems = _problems(document)
    path = f"platform:pencom.edge_services[0] ({service['name']}).healthcheck.command"
    assert _has(problems, path, f"item 0 is '{form}', Docker's test form"), problems


def test_a_healthcheck_slower_than_the_deploy_wait_is_rejected_at_its_interval(stack_document):
    document = stack_document("staging")
    service = document["config"]["platform:pencom"]["edge_services"][0]
    service["healthcheck"].update(interval_s=600, timeout_s=5)
    problems = _problems(document)
    path = f"platform:pencom.edge_services[0] ({service['name']}).healthcheck.interval_s"
    assert _has(problems, path, "interval_s + timeout_s is 605 s"), problems


def test_a_null_list_item_skips_the_rules_that_read_it(stack_document):
    """A null publish entry is its own error; the published-port rules skip it, never crash."""
    document = stack_document("staging")
    services = document["config"]["platform:vedfinance"]["services"]
    index = next(i for i, s in enumerate(services) if s.get("publish"))
    services[index]["publish"].append(None)
    problems = _problems(document)
    last = len(services[index]["publish"]) - 1
    assert any(p.startswith(f"platform:vedfinance.services[{index}] (") and f".publish[{last}]:" in p
               for p in problems), problems


@pytest.mark.parametrize("product,entry,path,text", [
    ("vedfinance", {"name": "paystack", "cidrs": ["52.214.14.220/32"], "port": 443, "services": ["nope"]},
     "platform:vedfinance.egress.allow[0] (paystack).services[0]", "nope is not a container of this host"),
    ("kro", {"name": "paystack", "cidrs": ["0.0.0.0/0"], "port": 443, "services": ["backend"]},
     "platform:kro.egress.allow[0] (paystack).cidrs[0]", "broader than /24"),
    ("kro", {"name": "paystack", "cidrs": ["52.214.14.220/32"], "port": 443, "services": ["backend"], "domains": ["x"]},
     "platform:kro.egress.allow[0] (paystack).domains", "unknown key"),
    ("vedfinance", {"name": "paystack", "cidrs": ["52.214.14.220/32"], "port": 70000, "services": ["api-staging"]},
     "platform:vedfinance.egress.allow[0] (paystack).port", ""),
])
def test_a_single_hosts_egress_allow_list_is_checked(stack_document, product, entry, path, text):
    """The allow-list of app and data containers on a single host (KRO, GIV ops, V-EdFinance):
    each entry names deployed services and a destination no broader than one site."""
    document = stack_document("staging")
    document["config"][f"platform:{product}"]["egress"] = {"allow": [entry]}
    assert _has(_problems(document), path, text), _problems(document)


def test_a_valid_allow_list_entry_is_accepted(stack_document):
    document = stack_document("staging")
    service = document["config"]["platform:vedfinance"]["services"][0]["name"]
    document["config"]["platform:vedfinance"]["egress"] = {
        "allow": [{"name": "paystack", "cidrs": ["52.214.14.220/32"], "port": 443, "services": [service]}]}
    validate_stack_config(_raw(document), stack="staging", check_secrets=False)
