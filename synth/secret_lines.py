"""Which lines of a secret multi-line input (a script that carries one password) hold a secret,
so ``synth diff`` can show the plain lines that changed and mask only the others.

Found by difference, not by matching: ``synth.run.synth_capture`` runs the program a second
time with every secret changed (``rotate``: each secret config value, and each output the
engine marks secret, e.g. a database user's password, an R2 token's value), and a line is plain
only when it is the same, at the same place, in both runs. A line made from a secret in any
way (URL-quoted, hashed: an R2 secret key is the SHA-256 of the token) differs, so it is masked;
a line that only looks like a secret but is not made from one stays plain. When the second run
fails or the line counts differ, the input stays one secret, as before.
"""

from __future__ import annotations

from typing import Any, Optional

from stacks.placeholders import PLACEHOLDER_SECRET
from synth.values import digest

_CLASSES = ("0123456789", "abcdef", "ghijklmnopqrstuvwxyz", "ABCDEF", "GHIJKLMNOPQRSTUVWXYZ")
_ROTATE = {c: cls[(i + 1) % len(cls)] for cls in _CLASSES for i, c in enumerate(cls)}


def rotate(value: Any) -> Any:
    """``value`` with every letter and digit moved one place within its class (digits, a-f,
    g-z and the same upper case), so hex stays hex and a length or charset check still holds,
    but every character differs. Lists and dicts are rotated leaf by leaf; other values stay."""
    if isinstance(value, str):
        return "".join(_ROTATE.get(c, c) for c in value)
    if isinstance(value, list):
        return [rotate(v) for v in value]
    if isinstance(value, dict):
        return {k: rotate(v) for k, v in value.items()}
    return value


def rotate_config(value: Any) -> Any:
    """A secret config value for the second run: an offline placeholder
    (``stacks.placeholders.PLACEHOLDER_SECRET:<key>``) keeps its prefix, so the program still
    knows it for one, and rotates the rest; any other value is ``rotate``d."""
    prefix = f"{PLACEHOLDER_SECRET}:"
    if isinstance(value, str) and value.startswith(prefix):
        return prefix + rotate(value[len(prefix):])
    return rotate(value)


def _at(value: Any, path: str) -> Any:
    """The leaf at a top-level ``secret_leaves`` path (``stdin``); None for a nested one."""
    return value.get(path) if isinstance(value, dict) and path.isidentifier() else None


def secret_lines(text: Any, other: Any) -> Optional[list]:
    """Per line of ``text``: the line when ``other`` (the rotated run's value) has it at the same
    place, else ``{"digest": 16 hex}``. None when ``text`` is not multi-line, the runs differ in
    line count, or no line is plain (then the whole value is one secret)."""
    if not (isinstance(text, str) and isinstance(other, str) and "\n" in text):
        return None
    mine, theirs = text.splitlines(), other.splitlines()
    if len(mine) != len(theirs):
        return None
    lines = [line if line == alt else {"digest": digest(line)} for line, alt in zip(mine, theirs)]
    return lines if any(isinstance(line, str) for line in lines) else None


def mark_secret_lines(capture, rotated) -> None:
    """Add ``"lines"`` to each multi-line secret leaf of ``capture``'s resources that
    ``secret_lines`` can split, comparing with the same resource of the ``rotated`` capture."""
    others = {r["urn"]: rotated.revealed_inputs.get(r["urn"], {}) for r in rotated.resources}
    for resource in capture.resources:
        revealed = capture.revealed_inputs.get(resource["urn"])
        for path, leaf in (resource.get("secret_leaves") or {}).items():
            if revealed is None or resource["urn"] not in others:
                continue
            lines = secret_lines(_at(revealed, path), _at(others[resource["urn"]], path))
            if lines is not None:
                leaf["lines"] = lines
