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
from synth.engine import PROJECT_ROOT, Capture, program_from_main, run_program
from synth.stackfile import _as_config_string


def _raw(document: dict) -> dict:
    """A stack file's config as the engine hands it over: un-namespaced keys, JSON strings."""
    return {k.split(":", 1)[1]: _as_config_string(v) for k, v in document["config"].items()}


def _cli(stack_file, *extra):
    return subprocess.run(
        [sys.executable, "-m", "synth", "broken", "--stack-file", str(stack_file), *extra],
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
        "platform:environment.admin_cidrs[0]: an admin CIDR this broad opens SSH",
    ),
    "unknown top-level key": (
        lambda c: c.__setitem__("platform:kr0", {}),
        "platform:kr0: unknown key",
    ),
    "unknown product": (
        lambda c: c.__setitem__("platform:products", ["kro", "nope"]),
        'platform:products[1]: unknown product "nope"',
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
    capture = Capture(project="platform", stack="broken")
    with pytest.raises(ConfigError) as raised:
        run_program(program_from_main(), stack="broken", config=config, secret_keys=[],
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


def test_unreadable_stack_file_is_a_config_error(tmp_path):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text("config: [unclosed")
    result = _cli(path)
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


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
