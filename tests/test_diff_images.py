"""``synth diff`` on a container's image and labels: an acknowledgement covers exactly the image
the head runs (repository, tag and digest, ``synth.maintenance.image_difference``), a container's
line says ``image: OLD → NEW`` read through its RemoteImage, and a label change shows the label
alone (README "The diff", "Patching a datastore's image in production")."""

from __future__ import annotations

import copy

import pytest
from docker.utils import parse_repository_tag

from synth.diff import EXIT_SAFE, EXIT_WARNING, diff_states, markdown
from synth.input_diff import input_changes
from synth.maintenance import image_difference
from validation.formats import parse_image_reference

pytestmark = pytest.mark.fast

DIGEST = "sha256:" + "b" * 64
OTHER_DIGEST = "sha256:" + "c" * 64
CONTAINER, REMOTE_IMAGE = "docker:index/container:Container", "docker:index/remoteImage:RemoteImage"
URN = "urn:pulumi:prod::platform::{type}::{name}"
DATA = {"mounts": [{"target": "/var/lib/postgresql/data", "type": "volume", "source": "pg"}]}


@pytest.mark.parametrize("acknowledged,runs,why", [
    ("postgres:17.2", "postgres:17.2", None),
    ("postgres", "postgres:latest", None),
    ("postgres:17.2", "docker.io/library/postgres:17.2", None),
    ("index.docker.io/library/postgres:17.2", "docker.io/postgres:17.2", None),
    (f"postgres@{DIGEST}", f"postgres@{DIGEST}", None),
    (f"postgres:17.2@{DIGEST}", f"postgres@{DIGEST}", None),
    (f"postgres@{DIGEST}", f"postgres:17.2@{DIGEST}", None),
    (f"postgres:17.2@{DIGEST}", f"docker.io/library/postgres:17.2@{DIGEST}", None),
    ("postgres:17.2", f"postgres:17.2@{DIGEST}",
     "it runs digest sha256:bbbbbbbbbbbb…, which the acknowledgement does not name"),
    ("postgres:17.2", f"postgres@{DIGEST}",
     "it runs digest sha256:bbbbbbbbbbbb…, which the acknowledgement does not name"),
    (f"postgres:17.2@{DIGEST}", "postgres:17.2",
     "the acknowledgement pins sha256:bbbbbbbbbbbb… and the image is not pinned to a digest"),
    (f"postgres@{DIGEST}", f"postgres@{OTHER_DIGEST}", "digest sha256:bbbbbbbbbbbb… is not sha256:cccccccccccc…"),
    (f"postgres:17.2@{DIGEST}", f"postgres:17.3@{DIGEST}", "tag 17.2 is not 17.3, on one digest"),
    ("postgres:17.2", "postgres:17.3", "tag 17.2 is not 17.3"),
    ("postgres", "postgres:17.2", "tag latest is not 17.2"),
    ("postgres:17.2", "ghcr.io/acme/postgres:17.2",
     "repository docker.io/library/postgres is not ghcr.io/acme/postgres"),
    ("localhost:5000/pg:17.2", "localhost:5001/pg:17.2", "repository localhost:5000/pg is not localhost:5001/pg"),
    ("postgres:17.2", "[unknown]", "`[unknown]` is not an image reference"),
    ("postgres:17.2", "sha256:" + "d" * 64, f"`sha256:{'d' * 64}` is not an image reference"),
    (None, "postgres:17.2", "`None` is not an image reference"),
])
def test_an_acknowledged_image_is_the_image_by_repository_tag_and_digest(acknowledged, runs, why):
    assert image_difference(acknowledged, runs) == why


@pytest.mark.parametrize("reference", [
    "postgres:17.2", f"postgres:17.2@{DIGEST}", f"postgres@{DIGEST}", "localhost:5000/pg:17.2",
    f"registry.example.com:443/team/pg@{DIGEST}", "pgvector/pgvector:0.8.1-pg17",
])
def test_the_parser_splits_a_reference_as_the_docker_sdk_does(reference):
    """The docker SDK's ``parse_repository_tag`` as an oracle for the split: a port is not a tag,
    and with a digest it keeps the tag in the name it returns (so it is not used to compare)."""
    parsed = parse_image_reference(reference)
    name = f"{parsed.domain}/{parsed.path}" if parsed.domain else parsed.path
    if parsed.digest:
        assert parse_repository_tag(reference) == (name + (f":{parsed.tag}" if parsed.tag else ""), parsed.digest)
    else:
        assert parse_repository_tag(reference) == (name, parsed.tag)


def _res(type_, name, inputs, **extra):
    return {"urn": URN.format(type=type_, name=name), "type": type_, "name": name, "inputs": inputs,
            "dependencies": [], "protect": False, **extra}


def _pulled(image: str, image_id: str = "sha256:" + "1" * 64, *, env: str = "A=1", labels=None) -> dict:
    """A prod state of one data-writing container that runs ``image`` through a RemoteImage, as
    after apply: its ``image`` input is the pulled image's id."""
    remote = _res(REMOTE_IMAGE, "pg-image", {"name": image})
    container = _res(CONTAINER, "pg", {"image": image_id, "envs": [env], "labels": labels or [], **DATA},
                     dependencies=[remote["urn"]], delete_before_replace=True)
    return {"stack": "prod", "resources": [container, remote]}


def _acknowledging(state: dict, replaces: str, image: str) -> dict:
    labels = [{"label": "platform.maintenance." + key, "value": value} for key, value in (
        ("image", image), ("replaces", replaces), ("backup", "restic snapshot 4f1a2b3c"),
        ("restore_test", "2026-12-05"), ("window", "2026-12-06T02:00:00Z/PT60M"))]
    state["resources"][0]["inputs"]["labels"] = labels
    return state


@pytest.mark.parametrize("runs,acknowledged,covered", [
    ("postgres:17.2", "postgres:17.2", True),
    (f"postgres:17.2@{DIGEST}", "postgres:17.2", False),
    (f"postgres:17.2@{DIGEST}", f"postgres:17.2@{DIGEST}", True),
    (f"postgres@{DIGEST}", f"postgres@{DIGEST}", True),
    (f"postgres@{DIGEST}", f"postgres:17.2@{DIGEST}", True),
    ("docker.io/library/postgres:17.2", "postgres:17.2", True),
    (f"postgres@{DIGEST}", "postgres:17.2", False),
    (f"postgres:17.3@{DIGEST}", f"postgres:17.2@{DIGEST}", False),
    (f"postgres@{DIGEST}", f"postgres@{OTHER_DIGEST}", False),
])
def test_a_production_acknowledgement_covers_exactly_the_digest_the_head_runs(runs, acknowledged, covered):
    base = _pulled("postgres:17.1")
    head = _acknowledging(_pulled(runs, "sha256:" + "2" * 64), "postgres:17.1", acknowledged)
    result = diff_states(base, head, allow_stateful_changes=True)
    if covered:
        assert result.exit_code == EXIT_SAFE and result.warnings == []
        assert result.maintenance == [
            f"acknowledged maintenance: replaces `pg` (Container), image `postgres:17.1` → `{runs}`; backup "
            "`restic snapshot 4f1a2b3c`, restore test green on 2026-12-05, window 2026-12-06T02:00:00Z/PT60M"]
    else:
        assert result.exit_code == EXIT_WARNING and result.maintenance == []
        [warning] = result.warnings
        assert warning.startswith("replaces `pg` (Container): image, labels changed, which forces a new "
                                  "resource; its maintenance acknowledgement does not cover it: it acknowledges "
                                  f"postgres:17.1 → {acknowledged}, and the change is postgres:17.1 → {runs} "
                                  "(the new image: ")
        assert image_difference(acknowledged, runs) in warning


def test_the_acknowledged_old_image_is_compared_the_same_way():
    base = _pulled(f"postgres:17.1@{DIGEST}")
    head = _acknowledging(_pulled("postgres:17.2", "sha256:" + "2" * 64), "postgres:17.1", "postgres:17.2")
    [warning] = diff_states(base, head).warnings
    assert warning.endswith("(the old image: it runs digest sha256:bbbbbbbbbbbb…, which the acknowledgement "
                            "does not name)")


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("- ") and f"`{name}`" in line)


def test_a_replaced_container_line_shows_its_image_through_the_remote_image():
    """The container's own ``image`` is the pulled image's id (or unknown in a preview), so the
    reference is read from the RemoteImage's ``name``."""
    base, head = _pulled("postgres:17.1"), _pulled("postgres:17.2", "sha256:" + "2" * 64)
    result = diff_states(base, head)
    line = _line(markdown(result, base, head), "pg")
    assert line.startswith("- +- `pg` (Container): **replaced**, forced by `image` (delete-first")
    assert line.endswith("; image: `postgres:17.1` → `postgres:17.2`")

    preview = copy.deepcopy(head)
    preview["resources"][0]["inputs"]["image"] = "[unknown]"
    assert _line(markdown(diff_states(base, preview), base, preview), "pg").endswith(
        "; image: `postgres:17.1` → `postgres:17.2`")


def test_an_updated_container_line_shows_its_image_and_an_unchanged_image_is_not_shown():
    base = _pulled("postgres:17.2")
    # The same pulled image by its canonical name: the id, so the container, stays; its memory changes.
    renamed = _pulled("docker.io/library/postgres:17.2")
    renamed["resources"][0]["inputs"]["memory"] = 512
    result = diff_states(base, renamed)
    assert [c.kind for c in result.changes if c.resource["name"] == "pg"] == ["changed"]
    assert _line(markdown(result, base, renamed), "pg") == (
        "- ~ `pg` (Container): image: `postgres:17.2` → `docker.io/library/postgres:17.2`")

    env = _pulled("postgres:17.2", env="A=2")
    text = markdown(diff_states(base, env), base, env)
    assert "image:" not in _line(text, "pg") and "**replaced**, forced by `envs`" in _line(text, "pg")


def test_a_label_change_shows_only_the_labels_added_removed_and_changed():
    old = [{"label": "platform.stack", "value": "prod"}, {"label": "app", "value": "pg"},
           {"label": "tier", "value": "db"}, {"label": "token", "value": "[secret]"}]
    new = [{"label": "platform.stack", "value": "prod"}, {"label": "token", "value": "[secret]"},
           {"label": "app", "value": "pg2"}, {"label": "platform.maintenance.image", "value": "postgres:17.2"}]
    base = _pulled("postgres:17.2", labels=old)
    head = _pulled("postgres:17.2", labels=new)
    base["resources"][0]["secret_leaves"] = {"labels[3].value": {"digest": "aaaa"}}
    head["resources"][0]["secret_leaves"] = {"labels[1].value": {"digest": "bbbb"}}
    text = markdown(diff_states(base, head), base, head)
    assert [line for line in text.splitlines() if line.startswith("  - ")] == [
        "  - `labels[app]`: `\"pg\"` → `\"pg2\"`",
        "  - `labels[tier]`: `\"db\"` → `(none)`",
        "  - `labels[token]`: (secret changed)",
        "  - `labels[platform.maintenance.image]`: `(none)` → `\"postgres:17.2\"`"]


def test_labels_added_to_a_container_without_any_and_reordered_labels():
    labels = [{"label": "a", "value": "1"}, {"label": "b", "value": "2"}]
    bare = _res(CONTAINER, "web", {"memory": 1})
    labelled = _res(CONTAINER, "web", {"memory": 1, "labels": labels})
    assert [(c.path, c.kind, c.new) for c in input_changes(bare, labelled)] == [
        ("labels[a]", "value", "1"), ("labels[b]", "value", "2")]
    reordered = _res(CONTAINER, "web", {"memory": 1, "labels": labels[::-1]})
    assert input_changes(labelled, reordered) == [], "Docker's labels are a set"
