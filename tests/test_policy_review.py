"""The policy config cannot quietly switch off what a reviewer relies on: a mandatory policy
is never disabled or demoted by a stack's config, a waiver's reason says something, and a
waiver glob names a kind of resource, never a whole product or stack (new user's review)."""

from __future__ import annotations

import copy
import datetime
import json
from types import SimpleNamespace

import pytest

from policy.offline import MANDATORY_NAMES, POLICY_DIR, evaluate, policy_config_problems
from policy.rules import POLICIES
from policy.rules.base import waived
from policy.rules.globs import too_broad
from synth.__main__ import check

pytestmark = pytest.mark.fast

PRIVILEGED = "docker-container-disallow-privileged"
BY_NAME = {p.name: p for p in POLICIES}
SOON = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()


def _staging_config() -> dict:
    return json.loads((POLICY_DIR / "config.staging.json").read_text())


@pytest.fixture(scope="module")
def privileged_state(tmp_path_factory):
    """A staging state of one privileged container, written to a file."""
    container = "docker:index/container:Container"
    document = {"project": "platform", "stack": "staging", "resources": [{
        "urn": f"urn:pulumi:staging::platform::{container}::kro-staging-backend", "type": container,
        "name": "kro-staging-backend", "custom": True, "parent": None, "dependencies": [],
        "inputs": {"name": "kro-staging-backend", "image": "registry.example/kro-backend:1", "privileged": True}}]}
    path = tmp_path_factory.mktemp("review") / "state.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def check_cli(tmp_path, capsys):
    """``python -m synth check STATE --config CONFIG`` in this process: (result, config path)."""

    def run(state, config: dict):
        path = tmp_path / "config.staging.json"
        path.write_text(json.dumps(config))
        code = check([str(state), "--config", str(path)])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err), path

    return run


def _waiver(**changes) -> dict:
    return {"name": "temp", "reason": "the vendor image needs it until 2026.12", "expires": SOON,
            "resources": ["kro-*-backend"], **changes}


@pytest.mark.parametrize("entry", ["disabled", "advisory", {"enforcementLevel": "disabled"},
                                   {"enforcementLevel": "advisory", "waivers": []}])
def test_a_mandatory_policy_cannot_be_switched_off_by_the_config(privileged_state, check_cli, entry):
    assert PRIVILEGED in MANDATORY_NAMES
    config = {**_staging_config(), PRIVILEGED: entry}
    result, path = check_cli(privileged_state, config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stderr and PRIVILEGED in result.stderr and "is mandatory" in result.stderr
    assert "no violations" not in result.stdout


def test_the_same_state_with_the_committed_config_fails_on_the_privileged_container(privileged_state, check_cli):
    result, _ = check_cli(privileged_state, _staging_config())
    assert result.returncode == 1 and f"[mandatory] {PRIVILEGED}" in result.stdout


@pytest.mark.parametrize("globs,fragment", [
    (["kro*"], "matches a whole product or stack"), (["kro-*"], "matches a whole product or stack"),
    (["kro-staging-*"], "matches a whole product or stack"), (["*"], "matches every resource")])
def test_a_waiver_glob_that_covers_a_whole_product_is_refused(privileged_state, check_cli, globs, fragment):
    config = {**_staging_config(), PRIVILEGED: {"waivers": [_waiver(resources=globs)]}}
    result, path = check_cli(privileged_state, config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{PRIVILEGED}.waivers[0].resources[0]" in result.stderr and fragment in result.stderr


@pytest.mark.parametrize("reason", ["   ", "\n\t", ""])
def test_a_blank_waiver_reason_is_refused(privileged_state, check_cli, reason):
    config = {**_staging_config(), PRIVILEGED: {"waivers": [_waiver(reason=reason)]}}
    result, path = check_cli(privileged_state, config)
    assert result.returncode == 2 and f"{PRIVILEGED}.waivers[0].reason" in result.stderr


def test_at_run_time_a_broad_glob_or_blank_reason_excuses_nothing(privileged_state):
    """Under `pulumi preview` the config is not loaded by synth: the pack itself ignores them."""
    document = json.loads(privileged_state.read_text())
    for waiver in (_waiver(resources=["kro*"]), _waiver(resources=["kro-staging-*"]), _waiver(reason="  ")):
        found = evaluate(document, {PRIVILEGED: {"waivers": [waiver]}}, policies=[BY_NAME[PRIVILEGED]])
        assert [v["level"] for v in found] == ["mandatory"], waiver
    assert waived("m", {"waivers": [_waiver(reason=" ")]}, ["kro-staging-backend"]) == \
        "m (waiver temp names no reason or expiry date, so it excuses nothing)"
    # A glob naming the kind still excuses it.
    assert evaluate(document, {PRIVILEGED: {"waivers": [_waiver()]}}, policies=[BY_NAME[PRIVILEGED]]) == []


def test_the_committed_waivers_name_kinds_of_resources():
    for stack in ("staging", "prod"):
        config = json.loads((POLICY_DIR / f"config.{stack}.json").read_text())
        assert policy_config_problems(config) == []
        globs = [g for entry in config.values() if isinstance(entry, dict)
                 for w in entry.get("waivers", []) for g in w.get("resources", [])]
        assert globs and not [g for g in globs if too_broad(g)]


@pytest.mark.parametrize("glob,broad", [
    ("*-postgres", False), ("kro-*-firewall", False), ("*->pencom-*-edge:6514", False),
    ("vedfinance-*-api-*", False), ("kro-staging-db-*", False), ("kro-staging-db-cluster", False),
    ("kro*", True), ("kro-*", True), ("kro-prod*", True), ("kro-staging-*", True),
    ("kro-staging-db*", True), ("*-*", True), ("?*", True), ("kro-*-?", True)])
def test_too_broad(glob, broad):
    assert too_broad(glob) is broad


def test_an_advisory_policy_may_still_be_disabled():
    advisory = "docker-container-enable-no-new-privileges"
    assert advisory not in MANDATORY_NAMES
    assert policy_config_problems({advisory: "disabled"}) == []
    assert policy_config_problems({PRIVILEGED: "mandatory"}) == []
    assert policy_config_problems(copy.deepcopy({PRIVILEGED: {"enforcementLevel": "mandatory"}})) == []
