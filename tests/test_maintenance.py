"""A production datastore's image patch (Pencom's PostgreSQL 17.2 -> 17.3): blocked unless a
maintenance acknowledgement in the stack config states it, then accepted end to end through the
config boundary, the synth, ``synth diff`` and the policy pack (README "Patching a datastore's
image in production")."""

from __future__ import annotations

import pytest

from policy.offline import evaluate, load_policy_config
from stacks.config import validate_stack_config
from stacks.errors import ConfigError
from synth.diff import EXIT_SAFE, EXIT_WARNING, diff_states, markdown
from synth.replacements import MAINTENANCE_LABEL, maintenance_of
from synth.run import synth_stack
from tests.conftest import synth_once
from tests.test_config_boundary import _raw

OLD, NEW = "postgres:17.2-bookworm", "postgres:17.3-bookworm"
ACK = {"image": NEW, "replaces": OLD, "backup": "restic snapshot 4f1a2b3c (pencom-prod-postgres)",
       "restore_test": "2026-12-05", "window_start": "2026-12-06T02:00:00Z", "window_minutes": 60}
pytestmark = pytest.mark.fast

POLICY = "docker-container-configure-complete-maintenance-acknowledgement"


@pytest.fixture(autouse=True)
def _today(monkeypatch):
    """ACK's window is near 2026-12-02; the boundary refuses a window far from today."""
    import datetime

    from validation import clock

    monkeypatch.setattr(clock, "today", lambda: datetime.date(2026, 12, 2))


def _patched(document: dict, ack: dict | None = None) -> dict:
    """Prod with Pencom's PostgreSQL moved to NEW; with ``ack`` (changes to ACK), acknowledged."""
    postgres = document["config"]["platform:pencom"]["postgres"]
    assert postgres["image"] == OLD, "the committed prod stack runs 17.2: update OLD and NEW"
    postgres["image"] = NEW
    if ack is not None:
        postgres["maintenance"] = {k: v for k, v in {**ACK, **ack}.items() if v is not None}
    return document


def _problems(document: dict) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        validate_stack_config(_raw(document), stack="prod", check_secrets=False)
    return raised.value.problems


def test_the_labels_module_constants_agree():
    from components.containers import MAINTENANCE_LABEL as components_label

    assert components_label == MAINTENANCE_LABEL


@pytest.mark.parametrize("ack,path,text", [
    ({"image": "postgres:17.4-bookworm"}, "maintenance.image",
     "acknowledges postgres:17.4-bookworm but platform:pencom.postgres.image is postgres:17.3-bookworm"),
    ({"replaces": "postgres:16.6-bookworm"}, "maintenance.replaces", "changes the PostgreSQL major version (16 to 17)"),
    ({"replaces": "pgvector/pgvector:0.8.0-pg17"}, "maintenance.replaces", "is another repository"),
    ({"replaces": NEW}, "maintenance.replaces", "nothing to acknowledge"),
    ({"restore_test": "2026-12-07"}, "maintenance.restore_test", "is after the window (2026-12-06)"),
    ({"window_start": "2026-12-06T02:00:00+01:00"}, "maintenance.window_start", "give the window in UTC"),
    ({"backup": None}, "maintenance.backup", "required key is missing"),
    ({"window_minutes": 5}, "maintenance.window_minutes", "greater than or equal to 15"),
])
def test_the_boundary_refuses_an_acknowledgement_that_does_not_fit(stack_document, ack, path, text):
    problems = _problems(_patched(stack_document("prod"), ack))
    assert any(p.startswith(f"platform:pencom.postgres.{path}:") and text in p for p in problems), problems


def test_only_a_container_that_writes_data_takes_an_acknowledgement(stack_document):
    document = stack_document("prod")
    core = document["config"]["platform:pencom"]["app_services"][0]
    core["maintenance"] = {**ACK, "image": core["image"], "replaces": core["image"].rsplit(":", 1)[0] + ":2026.11.0"}
    problems = _problems(document)
    assert any(p.startswith(f"platform:pencom.app_services[0] ({core['name']}).maintenance:")
               and "only a container that writes data" in p for p in problems), problems


@pytest.fixture(scope="module")
def prod_base():
    return synth_once("prod")


def _synth(document: dict, write_stack) -> dict:
    return synth_stack("prod", stack_file=write_stack(document, "prod"))


def _postgres(state: dict) -> dict:
    return next(r for r in state["resources"] if r["type"] == "docker:index/container:Container"
                and r["name"].endswith("-postgres"))


def test_a_prod_datastore_patch_is_blocked_without_an_acknowledgement(prod_base, stack_document, write_stack):
    head = _synth(_patched(stack_document("prod")), write_stack)
    result = diff_states(prod_base, head)
    assert result.production and result.exit_code == EXIT_WARNING and not result.maintenance
    assert result.warnings == ["replaces `pencom-prod-data-postgres` (Container): image changed, which "
                               "forces a new resource"]
    assert "Blocked" in markdown(result, prod_base, head)


def test_an_acknowledged_prod_datastore_patch_passes_diff_and_policy(prod_base, stack_document, write_stack):
    head = _synth(_patched(stack_document("prod"), {}), write_stack)
    postgres = _postgres(head)
    assert maintenance_of(postgres) == {
        "image": NEW, "replaces": OLD, "backup": ACK["backup"], "restore_test": "2026-12-05",
        "window": "2026-12-06T02:00:00Z/PT60M"}
    assert postgres["delete_before_replace"] is True
    result = diff_states(prod_base, head)
    assert result.exit_code == EXIT_SAFE and result.warnings == [], result.warnings
    assert result.maintenance == [
        f"acknowledged maintenance: replaces `{postgres['name']}` (Container), image `{OLD}` → `{NEW}`; "
        f"backup `{ACK['backup']}`, restore test green on 2026-12-05, window 2026-12-06T02:00:00Z/PT60M"]
    text = markdown(result, prod_base, head)
    assert "Planned maintenance, acknowledged in the stack config" in text and "Blocked" not in text
    violations = evaluate(head, load_policy_config("prod"))
    assert [v for v in violations if v["policy"] == POLICY] == []
    assert [v for v in violations if v["level"] == "mandatory"] == \
        [v for v in evaluate(prod_base, load_policy_config("prod")) if v["level"] == "mandatory"]


def test_an_acknowledgement_covers_only_its_own_image_change(prod_base, stack_document, write_stack):
    # Acknowledged for another starting image: the deployed one is 17.2, so the diff refuses.
    head = _synth(_patched(stack_document("prod"), {"replaces": "postgres:17.1-bookworm"}), write_stack)
    result = diff_states(prod_base, head)
    assert result.exit_code == EXIT_WARNING and not result.maintenance
    assert any("does not cover it: it acknowledges postgres:17.1-bookworm → postgres:17.3-bookworm, "
               "and the change is postgres:17.2-bookworm → postgres:17.3-bookworm" in w
               for w in result.warnings), result.warnings
    # The image and an env var in one change: the acknowledgement covers the image alone.
    document = _patched(stack_document("prod"), {})
    document["config"]["platform:pencom"]["postgres"].setdefault("env", {})["TZ"] = "UTC"
    result = diff_states(prod_base, _synth(document, write_stack))
    assert result.exit_code == EXIT_WARNING
    assert any("envs changed too; an acknowledgement covers the image alone, so split the change" in w
               for w in result.warnings), result.warnings


def test_the_policy_pack_refuses_an_incomplete_acknowledgement_in_a_state():
    """A state made by hand (or left stale) is checked where the engine sees it: the labels."""
    from policy.rules import CASES

    compliant = CASES[POLICY].compliant
    assert [v for v in evaluate(compliant) if v["policy"] == POLICY] == []
    for document, messages in CASES[POLICY].mutations:
        assert [v["message"] for v in evaluate(document) if v["policy"] == POLICY] == messages
