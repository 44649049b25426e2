"""What a reviewer relies on in `synth diff` and `--preview` (new user's review): the
production block cannot be lifted from the head document, a preview shows that an unknown
value's known ingredients changed, and a secret script's plain lines show in the diff."""

from __future__ import annotations

import json

import pytest

from synth.__main__ import diff as diff_cli
from synth.diff import EXIT_SAFE, EXIT_WARNING, diff_states, markdown
from synth.input_diff import Secret, _secret_unified, input_changes
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

CLUSTER = "kro-staging-db-cluster"
CA_PATH = "/usr/src/app/kro-stage-db-cluster-ca-certificate.crt"
NEW_CA_PATH = "/usr/src/app/db-ca.crt"  # same directory: only the file name changes


def _without(document: dict, name: str) -> dict:
    return {**document, "resources": [r for r in document["resources"] if r["name"] != name]}


def _write(tmp_path, label: str, document: dict):
    path = tmp_path / f"{label}.json"
    path.write_text(json.dumps(document))
    return str(path)


# --- 1. production ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def staging():
    return synth_once("staging")


def test_a_head_that_says_not_production_cannot_lift_the_block(staging, tmp_path, capsys):
    base = json.loads(json.dumps(staging))
    base["outputs"]["production"] = True
    head = _without(base, CLUSTER)
    head["outputs"] = {**head["outputs"], "production": False}
    code = diff_cli([_write(tmp_path, "base", base), _write(tmp_path, "head", head), "--allow-stateful-changes"])
    out = capsys.readouterr().out
    assert code == EXIT_WARNING and "`--allow-stateful-changes` does not apply to production" in out and "`maintenance:`" in out and f"`{CLUSTER}`" in out
    # Either side is enough, in both directions.
    assert diff_states(head, base, allow_stateful_changes=True).production
    # The committed staging stack, which is not production, is still allowed.
    assert diff_states(staging, _without(staging, CLUSTER), allow_stateful_changes=True).exit_code == EXIT_SAFE


@pytest.mark.parametrize("stack", ["prod", "production", "kro-prod", "prod-eu", "pencom-production"])
def test_a_stack_named_production_is_production_whatever_its_outputs_say(staging, stack):
    base = {**staging, "stack": stack, "outputs": {**staging["outputs"], "production": False}}
    result = diff_states(base, {**_without(base, CLUSTER)}, allow_stateful_changes=True)
    assert result.production and result.exit_code == EXIT_WARNING


# --- 3a. previews -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def previews():
    import yaml

    from synth.engine import PROJECT_ROOT

    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    assert document["config"]["platform:kro"]["database_ca_path"] == CA_PATH
    document["config"]["platform:kro"]["database_ca_path"] = NEW_CA_PATH
    return synth_once("staging", preview=True, review=True), synth_once("staging", document=document, preview=True, review=True)


def test_two_previews_differ_when_an_unknown_values_known_inputs_change(previews):
    base, head = previews
    assert json.dumps(base, sort_keys=True) != json.dumps(head, sort_keys=True)
    result = diff_states(base, head)
    text = markdown(result, base, head)
    assert "May change, unknown until apply" in text
    for resource, field in [("kro-staging-files-backend", "stdin"), ("kro-staging-db-backup-credentials", "stdin")]:
        assert any(f"`{resource}`" in line and f"`{field}` may change" in line for line in result.may_change), resource
    # An input that forces a replacement and will change is the replacement the engine makes
    # (a provider replaces on an unknown forcing input), not a "may change".
    backend = next(c for c in result.changes if c.resource["name"] == "kro-staging-backend")
    assert (backend.kind, backend.forced_by) == ("replaced", ["envs"])
    assert "the known values it is made from changed" in backend.unknown_forcing["envs"]
    assert not [line for line in result.may_change if "`kro-staging-backend`" in line]
    # Two previews of one config have nothing that may change.
    assert diff_states(base, base).may_change == []
    # Digests only: no value of the known run reaches the preview document.
    assert "mock-kro-staging-db-user" not in json.dumps(head)


# --- 3b. secret scripts -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ca_change():
    import yaml

    from synth.engine import PROJECT_ROOT

    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.staging.yaml").read_text())
    document["config"]["platform:kro"]["database_ca_path"] = NEW_CA_PATH
    return synth_once("staging", review=True), synth_once("staging", document=document, review=True)


def test_a_secret_scripts_changed_plain_lines_show_and_its_secrets_never_do(ca_change):
    base, head = ca_change
    text = markdown(diff_states(base, head), base, head)
    section = text[text.index("`kro-staging-db-backup-credentials`"):]
    section = section[:section.index("\n- ")] if "\n- " in section else section
    assert f'-PGSSLROOTCERT="/srv/kro-staging/files/backend{CA_PATH}"' in section
    assert f'+PGSSLROOTCERT="/srv/kro-staging/files/backend{NEW_CA_PATH}"' in section
    assert "`stdin`: (secret changed)" not in section
    revealed = synth_once("staging", reveal_secrets=True, review=True)
    script = next(r for r in revealed["resources"] if r["name"] == "kro-staging-db-backup-credentials")["inputs"]["stdin"]
    secrets = [line.split("=", 1)[1] for line in script.splitlines()
               if line.startswith(("PGPASSWORD=", "AWS_SECRET_ACCESS_KEY="))]
    assert len(secrets) == 2
    for state in (base, head):
        written = json.dumps(state)
        assert not [s for s in secrets if s in written]
    assert not [s for s in secrets if s in text]


def test_a_secret_line_that_changed_shows_as_secret_changed():
    def leaf(*lines):
        return Secret("d", lines=tuple(("plain", l) if not l.startswith("#") else ("secret", l) for l in lines))

    old = leaf("a", "#1", "b", "c")
    new = leaf("a", "#2", "B", "c", "d")
    assert _secret_unified(old.lines, new.lines) == ["@@ -2,2 +2,2 @@", "~ (secret changed)", "-b", "+B",
                                                     "@@ -4,0 +5 @@", "+d"]
    assert _secret_unified(leaf("#1").lines, leaf().lines) == ["@@ -1 +0,0 @@", "-(secret)"]


def test_a_state_without_split_lines_still_says_secret_changed():
    def res(leaves):
        return {"urn": "u", "type": "t", "name": "n", "inputs": {"stdin": "[secret]"},
                "secret_inputs": ["stdin"], "secret_leaves": leaves}

    changes = input_changes(res({"stdin": {"digest": "a"}}), res({"stdin": {"digest": "b"}}))
    assert [(c.kind, c.lines) for c in changes] == [("secret", ["secret changed"])]
