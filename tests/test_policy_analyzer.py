"""The pack under pulumi-policy's own analyzer (the gRPC servicer ``pulumi preview`` talks to),
driven in-process with the engine's protobuf requests: the same messages as the offline
runner, and unknown values reported as "can't run policy ... during preview"."""

from __future__ import annotations

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policy.offline import evaluate
from policy.rules import CASES, POLICIES
from policy.rules.base import PACK_NAME, PACK_VERSION
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

BY_NAME = {p.name: p for p in POLICIES}


def _struct(value: dict) -> struct_pb2.Struct:
    return json_format.ParseDict(value, struct_pb2.Struct())


def _options(resource: dict) -> proto.AnalyzerResourceOptions:
    """The options the engine sends with a resource (the ones the policies read)."""
    return proto.AnalyzerResourceOptions(
        protect=bool(resource.get("protect")),
        deleteBeforeReplace=bool(resource.get("delete_before_replace")), deleteBeforeReplaceDefined=True)


def analyze(name: str, document: dict, config: dict | None = None) -> list[tuple[str, str]]:
    """(level, message) of every diagnostic the real analyzer returns for one policy."""
    policy = BY_NAME[name]
    servicer = _PolicyAnalyzerServicer(PACK_NAME, PACK_VERSION, [policy], EnforcementLevel.ADVISORY)
    level = proto.MANDATORY if policy.enforcement_level is EnforcementLevel.MANDATORY else proto.ADVISORY
    servicer.Configure(proto.ConfigureAnalyzerRequest(policyConfig={
        name: proto.PolicyConfig(enforcementLevel=level, properties=_struct(config or {}))}), None)
    diagnostics = []
    resources = document["resources"]
    if isinstance(policy, ResourceValidationPolicy):
        for r in resources:
            if not r.get("custom", True):
                continue
            response = servicer.Analyze(proto.AnalyzeRequest(
                type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"],
                options=_options(r)), None)
            diagnostics += response.diagnostics
    else:
        response = servicer.AnalyzeStack(proto.AnalyzeStackRequest(resources=[
            proto.AnalyzerResource(type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"],
                                   parent=r.get("parent") or "", dependencies=r.get("dependencies") or [],
                                   options=_options(r))
            for r in resources]), None)
        diagnostics += response.diagnostics
    levels = {proto.MANDATORY: "mandatory", proto.ADVISORY: "advisory"}
    return [(levels[d.enforcementLevel], d.message.removeprefix(policy.description + "\n")) for d in diagnostics]


# The analyzer has no notion of which inputs were secret; that policy stands aside there.
ANALYZED = sorted(n for n in CASES if n != "platform-resource-disallow-plaintext-secrets")


@pytest.mark.parametrize("name", ANALYZED)
def test_the_real_analyzer_reports_what_the_offline_runner_reports(name):
    case = CASES[name]
    assert analyze(name, case.compliant, case.config) == []
    for document, messages in case.mutations:
        level = BY_NAME[name].enforcement_level.value
        assert analyze(name, document, case.config) == [(level, m) for m in messages]
        offline = evaluate(document, {name: case.config} if case.config else None, policies=[BY_NAME[name]])
        assert [v["message"] for v in offline] == messages


@pytest.mark.parametrize("name", ANALYZED)
def test_an_unknown_input_under_the_real_analyzer_is_cannot_check_or_irrelevant(name):
    case = CASES[name]
    for document, messages in case.mutations:
        for index, resource in enumerate(document["resources"]):
            for key in resource["inputs"]:
                changed = {**document, "resources": [dict(r) for r in document["resources"]]}
                changed["resources"][index] = {**resource, "inputs": {**resource["inputs"], key: UNKNOWN_STRING_VALUE}}
                got = analyze(name, changed, case.config)
                cannot = [m for level, m in got if m.startswith(f"can't run policy '{name}' from policy pack "
                                                                 f"'{PACK_NAME}@v{PACK_VERSION}' during preview: ")]
                assert [m for _, m in got] == messages or cannot, (key, got)
                assert all(level == "advisory" for level, m in got if m in cannot)


def analyze_all(document: dict, config: dict) -> list[tuple[str, str, str]]:
    """(policy, level, message) from the real analyzer running the whole pack over a state."""
    servicer = _PolicyAnalyzerServicer(PACK_NAME, PACK_VERSION, POLICIES, EnforcementLevel.ADVISORY)
    policy_config = {}
    for policy in POLICIES:
        entry = config.get(policy.name, {})
        level = policy.enforcement_level
        if isinstance(entry, str):
            level, entry = EnforcementLevel(entry), {}
        policy_config[policy.name] = proto.PolicyConfig(
            enforcementLevel=proto.MANDATORY if level is EnforcementLevel.MANDATORY else proto.ADVISORY,
            properties=_struct({k: v for k, v in entry.items() if k != "enforcementLevel"}))
    servicer.Configure(proto.ConfigureAnalyzerRequest(policyConfig=policy_config), None)
    found = []
    custom = [r for r in document["resources"] if r.get("custom", True)]
    for r in custom:
        found += servicer.Analyze(proto.AnalyzeRequest(
            type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"],
            options=_options(r)), None).diagnostics
    found += servicer.AnalyzeStack(proto.AnalyzeStackRequest(resources=[
        proto.AnalyzerResource(type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"],
                               parent=r.get("parent") or "", dependencies=r.get("dependencies") or [],
                               options=_options(r))
        for r in document["resources"]]), None).diagnostics
    levels = {proto.MANDATORY: "mandatory", proto.ADVISORY: "advisory"}
    return [(d.policyName, levels[d.enforcementLevel], d.message.split("\n", 1)[-1]) for d in found]


@pytest.fixture(scope="module")
def prod_state():
    return synth_once("prod", reveal_secrets=True)


def test_prod_is_clean_and_the_unsafe_state_is_flagged_under_the_real_analyzer(prod_state):
    from policy.offline import load_policy_config
    from tests.test_policy import EXPECTED_UNSAFE, _unsafe

    config = load_policy_config("prod")
    assert analyze_all(prod_state, config) == []
    found = analyze_all(_unsafe(prod_state), config)
    for policy, fragment in EXPECTED_UNSAFE:
        assert any(p == policy and fragment in m for p, _, m in found), (policy, fragment)
