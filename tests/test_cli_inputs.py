"""Inputs of ``python -m synth`` a new user got wrong (December 2026): a directory given as the
stack file, a state with a duplicate or non-string URN, a policy config naming a policy or a
level the pack does not have. Each is one line, exit 2, no traceback."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_errors import _one_line_exit_2, run

pytestmark = pytest.mark.fast

URN = "urn:pulumi:prod::platform::docker:index/container:Container::api"


def _state(tmp_path, *urns) -> str:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"stack": "prod", "resources": [
        {"urn": urn, "type": "docker:index/container:Container", "name": "api", "inputs": {}} for urn in urns]}))
    return str(path)


def test_a_directory_as_the_stack_file_is_one_line(tmp_path):
    _one_line_exit_2(run("staging", "--stack-file", str(tmp_path)),
                     f"--stack-file {tmp_path} is a directory; give the stack file itself "
                     f"(e.g. {tmp_path}/Pulumi.staging.yaml)")


@pytest.mark.parametrize("command", ["check", "diff"])
def test_a_state_with_a_duplicate_urn_is_refused(tmp_path, command):
    state = _state(tmp_path, URN, "urn:other", URN)
    args = ("check", state) if command == "check" else ("diff", state, state)
    _one_line_exit_2(run(*args), f"resources[0] and resources[2] have the same urn {URN}")


@pytest.mark.parametrize("urn,shown", [(42, "42"), (None, "null"), ("", '""'), (["a"], '["a"]')])
def test_a_state_with_a_urn_that_is_no_string_is_refused(tmp_path, urn, shown):
    _one_line_exit_2(run("check", _state(tmp_path, URN, urn)), f"resources[1].urn is {shown}, not a URN")


@pytest.mark.parametrize("config,fragment", [
    ({"docker-container-disallow-privilegd": "mandatory"},
     "docker-container-disallow-privilegd: no policy of the pack has this name; did you mean "
     "docker-container-disallow-privileged?"),
    ({"docker-container-configure-memory-limit": "warn"},
     'docker-container-configure-memory-limit: enforcement level "warn" is not one of advisory, mandatory, '
     "remediate, disabled"),
    ({"docker-container-configure-memory-limit": {"enforcementLevel": "MANDATORY"}},
     'docker-container-configure-memory-limit: enforcement level "MANDATORY" is not one of advisory, '
     "mandatory, remediate, disabled"),
    ({"docker-container-configure-memory-limit": 3},
     "docker-container-configure-memory-limit: enforcement level 3 is not one of"),
    ({"all": "mandatory"}, "all: must be an object of settings every policy gets"),
])
def test_a_policy_config_the_pack_cannot_apply_is_refused(tmp_path, config, fragment):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(config))
    _one_line_exit_2(run("check", _state(tmp_path, URN), "--config", str(path)),
                     f"the policy config {path}: {fragment}")


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_committed_policy_configs_name_only_the_packs_policies(stack):
    from policy.offline import POLICY_DIR, policy_config_problems

    assert policy_config_problems(json.loads((POLICY_DIR / f"config.{stack}.json").read_text())) == []


def _resource(**changes) -> dict:
    resource = {"urn": URN, "type": "docker:index/container:Container", "name": "api", "inputs": {}}
    return {k: v for k, v in {**resource, **changes}.items() if v is not ...}


@pytest.mark.parametrize("command", ["check", "diff"])
@pytest.mark.parametrize("document,fragment", [
    ({"resources": [_resource(inputs=[1])]}, "resources[0].inputs is [1]; it must be an object of the resource's inputs"),
    ({"resources": [_resource(inputs="x")]}, 'resources[0].inputs is "x"; it must be an object'),
    ({"resources": [_resource(), _resource(urn="u2", name=5)]}, "resources[1].name is 5; it must be a non-empty string"),
    ({"resources": [_resource(outputs="x")]}, 'resources[0].outputs is "x"; it must be an object'),
    ({"resources": [_resource(type=5)]}, "resources[0].type is 5; it must be a non-empty string"),
    ({"resources": [_resource(urn=5)]}, "resources[0].urn is 5, not a URN"),
    ({"resources": [_resource(parent=5)]}, "resources[0].parent is 5; it must be the parent's urn or null"),
    ({"resources": [_resource(dependencies=[5])]}, "resources[0].dependencies holds a non-string"),
    ({"resources": ["x"]}, 'resources[0] is "x"; every resource is an object'),
    ({"resources": [], "outputs": "x"}, 'outputs is "x"; the stack\'s outputs are an object'),
])
def test_a_state_of_the_wrong_shape_is_one_error_at_its_key(tmp_path, command, document, fragment):
    """A list or a string where an object belongs was an AttributeError or TypeError deep in
    the policy pack or the diff, or passed silently; the shape is checked once, on reading."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"stack": "prod", **document}))
    args = ("check", str(path)) if command == "check" else ("diff", str(path), str(path))
    _one_line_exit_2(run(*args), f"{path}: {fragment}")


@pytest.mark.parametrize("data,fragment", [(b'{"resources": ["\xff"]}', "is not UTF-8 text (byte offset 16)"),
                                           (b"[" * 100000 + b"]" * 100000, "JSON nested too deeply to be a state")])
def test_a_state_that_is_not_utf8_or_nested_too_deeply_is_one_error(tmp_path, data, fragment):
    path = tmp_path / "state.json"
    path.write_bytes(data)
    _one_line_exit_2(run("check", str(path)), fragment)


@pytest.mark.parametrize("stack", ["../etc", "/etc/x", "-x", "a/b", ".hidden"])
def test_a_stack_name_that_would_reach_outside_the_project_is_refused(stack):
    """``python -m synth ../etc`` read ../Pulumi.etc.yaml, a file outside the project."""
    _one_line_exit_2(run("--", stack) if stack.startswith("-") else run(stack),
                     f"{stack!r} is not a stack name: use letters, digits")
