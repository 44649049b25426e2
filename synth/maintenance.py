"""Whether a maintenance acknowledgement covers a data-writing container's replacement, for
``synth diff`` (README "Patching a datastore's image in production").

An acknowledgement (``synth.replacements.maintenance_of``: a service's ``maintenance`` carried in
the container's labels) covers exactly one image change, ``replaces`` -> ``image``. Which image a
container runs is read through the RemoteImage it pulls (``image_reference``), and two references
are compared as images, not as strings (``image_difference``).
"""

from __future__ import annotations

from typing import Any

from synth.replacements import maintenance_of
from validation.formats import ImageReference, parse_image_reference

MAINTENANCE_INPUTS = frozenset({"image", "labels"})
"""What an acknowledged image patch may change among the inputs that force the replacement:
the image, and the labels that carry the acknowledgement."""

REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"


def image_reference(container: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> Any:
    """The image reference a container runs (``pgvector/pgvector:0.8.1-pg17``): the ``name`` of
    the one RemoteImage it depends on (its ``image`` input is that image's ``imageId``, unknown
    in a preview and a ``sha256:`` id after apply), else its ``image`` input."""
    pulled = [by_urn[d] for d in container.get("dependencies") or ()
              if d in by_urn and by_urn[d].get("type") == REMOTE_IMAGE]
    if len(pulled) == 1 and isinstance((pulled[0].get("inputs") or {}).get("name"), str):
        return pulled[0]["inputs"]["name"]
    return (container.get("inputs") or {}).get("image")


# distribution/reference normalize.go (splitDockerDomain): a familiar name is on Docker Hub, and
# an official image's path there is under library/.
_HUB, _LEGACY_HUB, _OFFICIAL = "docker.io", "index.docker.io", "library/"


def repository(reference: ImageReference) -> str:
    """The repository as Docker resolves a familiar name: ``postgres`` and
    ``index.docker.io/postgres`` are ``docker.io/library/postgres``; another registry's
    repository is ``domain/path`` unchanged."""
    domain = reference.domain or _HUB
    if domain == _LEGACY_HUB:
        domain = _HUB
    path = reference.path
    if domain == _HUB and "/" not in path:
        path = _OFFICIAL + path
    return f"{domain}/{path}"


def _short_digest(digest: str) -> str:
    return digest[:19] + "…"


def _parsed(value: Any) -> ImageReference | None:
    # An image id (a container's ``image`` after apply) would parse as repository ``sha256``;
    # distribution/reference's ParseAnyReference reads it as a digest first, so here it names
    # no repository.
    if not isinstance(value, str) or _is_image_id(value):
        return None
    try:
        return parse_image_reference(value)
    except ValueError:
        return None


def _is_image_id(value: str) -> bool:
    algorithm, _, hex_digits = value.partition(":")
    return algorithm == "sha256" and len(hex_digits) == 64 and all(c in "0123456789abcdef" for c in hex_digits)


def image_difference(acknowledged: Any, runs: Any) -> str | None:
    """None when the reference ``acknowledged`` names exactly the image the reference ``runs``
    names, else why not, in words.

    Both are parsed by the OCI reference grammar (``validation.formats.parse_image_reference``);
    a value that is not a reference (unknown in a preview, a ``sha256:`` image id, None) matches
    nothing. Then, as Docker pulls them (distribution/reference ``ParseDockerRef``: with a
    digest the tag is dropped, without one a missing tag is ``latest``):

    - the repositories are the same once normalised (``repository``);
    - the digests are the same, or neither names one: an acknowledgement of ``postgres:17.2``
      does not cover ``postgres:17.2@sha256:...`` (the digest it runs is not the one reviewed),
      and one that pins a digest does not cover a tag that can move;
    - the tags are the same where both name one. With equal digests a tag on one side alone
      does not matter (``postgres@sha256:X`` is matched by its digest); two different tags on
      one digest are refused rather than guessed.
    """
    ack, run = _parsed(acknowledged), _parsed(runs)
    if ack is None or run is None:
        bad = acknowledged if ack is None else runs
        return f"`{bad}` is not an image reference"
    if repository(ack) != repository(run):
        return f"repository {repository(ack)} is not {repository(run)}"
    if run.digest != ack.digest:
        if ack.digest is None:
            return f"it runs digest {_short_digest(run.digest)}, which the acknowledgement does not name"
        if run.digest is None:
            return f"the acknowledgement pins {_short_digest(ack.digest)} and the image is not pinned to a digest"
        return f"digest {_short_digest(ack.digest)} is not {_short_digest(run.digest)}"
    if run.digest is None and (ack.tag or "latest") != (run.tag or "latest"):
        return f"tag {ack.tag or 'latest'} is not {run.tag or 'latest'}"
    if ack.tag and run.tag and ack.tag != run.tag:
        return f"tag {ack.tag} is not {run.tag}, on one digest"
    return None


def acknowledged(old: dict[str, Any], new: dict[str, Any], forced_by: list[str],
                 base_by_urn: dict[str, dict[str, Any]], head_by_urn: dict[str, dict[str, Any]]) -> str:
    """``acknowledged maintenance: ...`` when ``new`` carries a maintenance acknowledgement
    (``maintenance_of``) for exactly this replacement: only the image (and the
    acknowledgement's labels) force it, the image the base runs is ``replaces`` and the image
    the head runs is ``image`` (``image_reference``, compared by ``image_difference``).
    Otherwise the warning, saying why the acknowledgement does not cover it."""
    plan = maintenance_of(new) or {}
    name, kind = new["name"], new["type"].rsplit(":", 1)[-1]
    before, after = image_reference(old, base_by_urn), image_reference(new, head_by_urn)
    extra = sorted(set(forced_by) - MAINTENANCE_INPUTS)
    incomplete = [key for key in ("backup", "restore_test", "window") if not plan.get(key)]
    mismatch = [f"{side}: {why}" for side, why in (
        ("the old image", image_difference(plan.get("replaces"), before)),
        ("the new image", image_difference(plan.get("image"), after))) if why]
    if incomplete:
        why = (f"it does not name its {', '.join(incomplete)} (the stack config's `maintenance:` "
               "states all three)")
    elif extra:
        why = f"{', '.join(extra)} changed too; an acknowledgement covers the image alone, so split the change"
    elif mismatch:
        why = (f"it acknowledges {plan.get('replaces')} → {plan.get('image')}, and the change is "
               f"{before} → {after} ({'; '.join(mismatch)})")
    else:
        return (f"acknowledged maintenance: replaces `{name}` ({kind}), image `{before}` → `{after}`; "
                f"backup `{plan.get('backup')}`, restore test green on {plan.get('restore_test')}, "
                f"window {plan.get('window')}")
    return (f"replaces `{name}` ({kind}): {', '.join(forced_by)} changed, which forces a new resource; "
            f"its maintenance acknowledgement does not cover it: {why}")
