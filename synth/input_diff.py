"""The input-by-input comparison of one resource in two states, for ``synth diff``.

``input_changes`` walks a resource's inputs (and resource options) base -> head and names every
changed leaf: a value, a secret (compared through its digest, never shown), a long text (a
unified diff of the changed lines), the items added to and removed from a plain list, or a value
a preview does not know yet (``unknown``: shown, never counted as a change). Lists of objects
compare item by item under a key that names each item once (``name``, ``key``...); a label list
(``{label, value}`` items) compares as a mapping, so only the labels added, removed or changed
show, each with its value (``labels[NAME]``).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from synth.values import UNKNOWN_MASK, leaf_path

LONG_TEXT = 100  # characters; longer strings, and any multi-line one, get a unified diff
OPTIONS = ("protect", "retain_on_delete", "delete_before_replace", "import_id", "ignore_changes")
_IDENTITY_KEYS = ("name", "key", "label", "host", "containerPath", "internal", "type")


@dataclass(frozen=True)
class Secret:
    """A masked leaf: equal to another exactly when their digests are."""

    digest: str | None
    env: str | None = None
    unknown: bool = False
    # A multi-line secret's lines (``synth.secret_lines``): plain text, or a digest for a line
    # made from a secret; None when the state does not split it (a preview). Not compared: the
    # digest is the whole value, so a split and an unsplit copy of one secret are equal.
    lines: tuple | None = field(default=None, compare=False)


MISSING = object()
"""An input or item that one side lacks (shown as ``(none)``)."""
KNOWN_AFTER_APPLY = "(known after apply)"


def is_unknown(value: Any) -> bool:
    """Whether ``value`` is one a preview does not know yet: ``"[unknown]"`` or an unknown secret leaf."""
    return value == UNKNOWN_MASK or (isinstance(value, Secret) and value.unknown)


@dataclass
class InputChange:
    """One changed input at ``path``: ``kind`` is value | secret | text | items | unknown
    (only a value that is not known yet differs: shown, never counted as a change)."""

    path: str
    kind: str
    old: Any = None
    new: Any = None
    lines: list[str] = field(default_factory=list)



def _with_secrets(resource: dict[str, Any]) -> dict[str, Any]:
    """The inputs with each secret leaf replaced by a ``Secret`` carrying its digest.

    States written before ``secret_leaves`` existed only have one digest per input: every masked
    leaf of that input then carries the input's digest."""
    inputs = json.loads(json.dumps(resource.get("inputs") or {}))
    leaves = resource.get("secret_leaves")

    def put(value: Any, path: tuple) -> Any:
        if leaves is not None:
            key = leaf_path(path)
            if key in leaves:
                split = leaves[key].get("lines")
                return Secret(leaves[key].get("digest"), leaves[key].get("env"),
                              bool(leaves[key].get("unknown")),
                              tuple(_line_key(line) for line in split) if isinstance(split, list) else None)
        elif value == "[secret]" and path[0] in (resource.get("secret_inputs") or ()):
            return Secret((resource.get("secret_digests") or {}).get(path[0]))
        if isinstance(value, dict):
            return {k: put(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [put(v, path + (i,)) for i, v in enumerate(value)]
        return value

    return {key: put(value, (key,)) for key, value in inputs.items()}


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def show(value: Any) -> str:
    """``value`` as one line of the comment: JSON, secrets as ``(secret)``, unknowns as ``(known after apply)``."""
    if value is MISSING:
        return "(none)"
    if is_unknown(value):
        return KNOWN_AFTER_APPLY
    if isinstance(value, Secret):
        return f"{value.env}=(secret)" if value.env else "(secret)"
    return json.dumps(_plain(value), sort_keys=True)


def _plain(value: Any) -> Any:
    if is_unknown(value):
        return KNOWN_AFTER_APPLY
    if isinstance(value, Secret):
        return f"{value.env}=(secret)" if value.env else "(secret)"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def text_lines(value: Any) -> list[str]:
    """``value`` as the lines a unified diff compares: a string's own lines, else indented JSON."""
    if value is MISSING or value is None:
        return []
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(_plain(value), indent=2, sort_keys=True).splitlines()


def _unified(old: Any, new: Any) -> list[str]:
    """Only the changed lines, with hunk headers (no context lines)."""
    return [line for line in difflib.unified_diff(text_lines(old), text_lines(new), lineterm="", n=0)
            if not line.startswith(("---", "+++"))]


def _line_key(line: Any) -> tuple[str, str]:
    """One line of a split secret as ``("plain", text)`` or ``("secret", digest)``."""
    return ("plain", line) if isinstance(line, str) else ("secret", str((line or {}).get("digest")))


def _secret_unified(old: tuple, new: tuple) -> list[str]:
    """The changed lines of a split multi-line secret, as ``_unified`` gives them: plain lines as
    ``-``/``+`` text, a line made from a secret never shown: ``~ (secret changed)`` where a
    secret line takes the place of another, else ``-(secret)``/``+(secret)``."""
    out = []
    matcher = difflib.SequenceMatcher(a=list(old), b=list(new), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@")
        before, after = list(old[i1:i2]), list(new[j1:j2])
        for index in range(max(len(before), len(after))):
            a = before[index] if index < len(before) else None
            b = after[index] if index < len(after) else None
            if a and b and a[0] == b[0] == "secret":
                out.append("~ (secret changed)")
                continue
            if a:
                out.append("-" + (a[1] if a[0] == "plain" else "(secret)"))
            if b:
                out.append("+" + (b[1] if b[0] == "plain" else "(secret)"))
    return out


def _range(start: int, stop: int) -> str:
    """A hunk range as unified diff writes it (``5``, ``5,3``, ``4,0`` for none after line 4)."""
    length = stop - start
    return str(start + 1) if length == 1 else f"{start if length == 0 else start + 1},{length}"


def _identity(*lists: list[Any]) -> str | None:
    """A key that names each item of every list once (``name``, ``key``...), so lists of objects
    compare item by item even when one is inserted."""
    if not all(items and all(isinstance(i, dict) for i in items) for items in lists):
        return None
    for key in _IDENTITY_KEYS:
        if all(all(isinstance(i.get(key), (str, int)) for i in items)
               and len({i[key] for i in items}) == len(items) for items in lists):
            return key
    return None


def _labels(old: Any, new: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Two label lists (Docker's ``labels``: items of exactly ``label`` and ``value``, each
    label once) as ``{label: value}`` each, so a change names the label and shows its value
    alone, not the item; a side without labels (missing, None, ``[]``) is ``{}``. None when
    either side is something else, or when both are empty."""
    sides = []
    for value in (old, new):
        if value is MISSING or value is None or value == []:
            sides.append({})
        elif (isinstance(value, list) and all(isinstance(i, dict) and set(i) == {"label", "value"}
                                              and isinstance(i["label"], str) for i in value)
              and len({i["label"] for i in value}) == len(value)):
            sides.append({i["label"]: i["value"] for i in value})
        else:
            return None
    return (sides[0], sides[1]) if sides[0] or sides[1] else None


def _compare(old: Any, new: Any, path: str, out: list[InputChange]) -> None:
    if old == new:
        return
    if is_unknown(old) or is_unknown(new):
        out.append(InputChange(path, "unknown", old, new))
        return
    if isinstance(old, Secret) and isinstance(new, Secret) and old.lines and new.lines:
        out.append(InputChange(path, "text", old, new, _secret_unified(old.lines, new.lines)))
        return
    if isinstance(old, Secret) or isinstance(new, Secret):
        if isinstance(old, Secret) and isinstance(new, Secret):
            note = "secret changed"
        elif isinstance(new, Secret):
            note = "secret added" if old is MISSING else "now secret"
        else:
            note = "secret removed" if new is MISSING else "no longer secret"
        out.append(InputChange(path, "secret", old, new, [note]))
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _compare(old.get(key, MISSING), new.get(key, MISSING), f"{path}.{key}", out)
        return
    labels = _labels(old, new)
    if labels is not None:
        before, after = labels
        for name in list(before) + [k for k in after if k not in before]:
            _compare(before.get(name, MISSING), after.get(name, MISSING), f"{path}[{name}]", out)
        return
    if isinstance(old, list) and isinstance(new, list):
        if all(_scalar(v) for v in old + new):
            out.append(_item_change(path, old, new))
            return
        key = _identity(old, new)
        if key is not None:
            before, after = {i[key]: i for i in old}, {i[key]: i for i in new}
            for ident in list(before) + [k for k in after if k not in before]:
                _compare(before.get(ident, MISSING), after.get(ident, MISSING), f"{path}[{ident}]", out)
            return
        if len(old) == len(new):
            for index, (a, b) in enumerate(zip(old, new)):
                _compare(a, b, f"{path}[{index}]", out)
            return
    long = any(isinstance(v, str) and ("\n" in v or len(v) > LONG_TEXT) for v in (old, new))
    if long or len(show(old)) + len(show(new)) > 2 * LONG_TEXT:
        out.append(InputChange(path, "text", old, new, _unified(old, new)))
    else:
        out.append(InputChange(path, "value", old, new))


def _item_change(path: str, old: list, new: list) -> InputChange:
    """Plain lists (env vars, tags, commands) as items removed and added; a secret env var whose
    digest changed shows once, as changed. An item a preview does not know yet stands in for one
    removed item (``~ old → (known after apply)``); when that explains every difference, the
    change is of kind ``unknown`` and does not count."""
    removed = [v for v in old if v not in new and not is_unknown(v)]
    added = [v for v in new if v not in old and not is_unknown(v)]
    # Unknown items on either side (a preview state as base or head).
    pending_new = [v for v in new if is_unknown(v) and v not in old]
    pending_old = [v for v in old if is_unknown(v) and v not in new]
    lines, real = [], False
    # A secret that left and one that came under the same name (or both unnamed, one each) are
    # one secret whose value changed.
    left = [v.env for v in removed if isinstance(v, Secret)]
    came = [v.env for v in added if isinstance(v, Secret)]
    changed = {e for e in left if e and e in came}
    if None in left and None in came and left.count(None) == came.count(None) == 1:
        changed.add(None)
    for value in removed:
        if isinstance(value, Secret) and value.env in changed:
            continue
        standin = _standin(value, pending_new)
        if standin is not None:
            lines.append(f"~ {_item(value)} → {_item(standin)}")
        else:
            lines.append(f"- {_item(value)}")
            real = True
    for value in added:
        if isinstance(value, Secret) and value.env in changed:
            lines.append(f"~ {value.env}=(secret changed)" if value.env else "~ (secret changed)")
            real = True
            continue
        standin = _standin(value, pending_old)
        if standin is not None:
            lines.append(f"~ {_item(standin)} → {_item(value)}")
        else:
            lines.append(f"+ {_item(value)}")
            real = True
    lines += [f"- {_item(value)}" for value in pending_old]
    lines += [f"+ {_item(value)}" for value in pending_new]
    if not lines:
        lines, real = ["(order changed)"], True
    return InputChange(path, "items" if real else "unknown", old, new, lines)


def _standin(value: Any, pending: list) -> Any:
    """Take from ``pending`` the unknown item that may become ``value`` (one of the same secret
    env name first), or None."""
    named = [p for p in pending if isinstance(p, Secret) and p.env and isinstance(value, Secret)
             and p.env == value.env]
    standin = (named or pending or [None])[0]
    if standin is not None:
        pending.remove(standin)
    return standin


def _item(value: Any) -> str:
    if isinstance(value, Secret) and value.unknown:
        return f"{value.env}={KNOWN_AFTER_APPLY}" if value.env else KNOWN_AFTER_APPLY
    return _plain(value) if isinstance(value, str) else show(value)


def input_changes(base: dict[str, Any], head: dict[str, Any]) -> list[InputChange]:
    """Every changed input (and resource option) of one resource, base -> head."""
    out: list[InputChange] = []
    old, new = _with_secrets(base), _with_secrets(head)
    for key in sorted(set(old) | set(new)):
        _compare(old.get(key, MISSING), new.get(key, MISSING), key, out)
    for option in OPTIONS:
        if base.get(option) != head.get(option):
            out.append(InputChange(f"[option] {option}", "value", base.get(option), head.get(option)))
    return out
