"""Turning pydantic validation failures into one readable message per stack config.

The message names every problem with its full config key path
(``platform:kro.services[1].memory_mb``), the value received and what is expected, so a
platform engineer can fix the whole file in one pass instead of one error per run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pulumi
from pydantic import BaseModel, ValidationError

from components.container_env import ENV_STRING_MAX_BYTES

CONFIG_NAMESPACE = "platform"


class ConfigError(pulumi.RunError):
    """A stack config that cannot be deployed. Raised before any resource is registered.

    Subclasses ``pulumi.RunError`` so that real ``pulumi preview`` prints the message without a
    Python traceback; ``python -m synth`` prints it and exits 2.
    """

    def __init__(self, problems: Sequence[str]):
        from validation.formats import mask_userinfo

        # The last guard for a credential in a URI a message quotes (a bad value echoed back);
        # the key path's own `platform:` is no userinfo.
        prefix = f"{CONFIG_NAMESPACE}:"
        self.problems = [prefix + mask_userinfo(p[len(prefix):]) if p.startswith(prefix) else mask_userinfo(p)
                         for p in problems]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(
            f"stack config has {len(self.problems)} {noun}; nothing was registered:\n{lines}"
        )


ITEM_LABELS = ("name", "host", "service", "key")
"""Keys whose value names a list item in a key path: ``services[2] (admin-frontend)``."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack config: where (``loc`` below a top-level key) and what.

    ``loc`` is a tuple of keys and list indices, such as ``("services", 2, "tier")``; the
    message says what is wrong and the fix. A message never contains a secret value.
    """

    top_key: str
    loc: tuple[Any, ...]
    message: str


_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _label(item: Any) -> str:
    """`` (name)`` of a list item, when the name is a plain identifier or hostname (never
    anything that could be a secret)."""
    if isinstance(item, Mapping):
        for key in ITEM_LABELS:
            value = item.get(key)
            if isinstance(value, str) and _SAFE_LABEL.match(value):
                return f" ({value})"
    return ""


KEY_SHOWN_MAX = ENV_STRING_MAX_BYTES - 1
"""The longest key a message names as written, in characters: a longer one is no config key
(``stacks.value_checks.STRING_MAX_BYTES`` refuses it) and is named by its size instead."""


def shown_key(key: Any) -> str:
    """``key`` as a message names it: as written, or ``<a key of N characters>`` past
    ``KEY_SHOWN_MAX``, so a message about an absurd key stays one short line."""
    text = str(key)
    return text if len(text) <= KEY_SHOWN_MAX else f"<a key of {len(text):,} characters>"


def key_path(top_key: str, loc: Iterable[Any], document: Any = None) -> str:
    """``("services", 1, "memory_mb")`` under ``kro`` -> ``platform:kro.services[1].memory_mb``.

    With the raw ``document`` of the top-level key, list items carry their name:
    ``platform:kro.services[1] (frontend).memory_mb``. Keys are named by ``shown_key``.
    """
    path = f"{CONFIG_NAMESPACE}:{shown_key(top_key)}"
    current = document
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(part, int):
            path += f"[{part}]"
            item = current[part] if isinstance(current, list) and -len(current) <= part < len(current) else None
            path += _label(item)
            current = item
        else:
            path += f".{shown_key(part)}"
            current = current.get(part) if isinstance(current, Mapping) else None
    return path


def _secret_at(loc: Sequence[Any]) -> bool:
    from validation.formats import looks_secret_name

    return any(isinstance(p, str) and looks_secret_name(p) for p in loc[-1:])


def show(value: Any, loc: Sequence[Any] = ()) -> str:
    """A received value as an error message quotes it: short, and never a secret.

    Objects and lists are summarised, not dumped (they can hold secrets); a string under a
    secret-looking key, or one that looks like a secret by itself, is not shown.
    """
    from validation.formats import secret_value_kind

    if value is None:
        return "null (empty)"
    if isinstance(value, Mapping):
        keys = [str(k) for k in list(value)[:6]]
        return "an object" + (f" with keys {', '.join(keys)}" + (", ..." if len(value) > 6 else "")
                              if keys else " with no keys")
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, str) and (_secret_at(loc) or secret_value_kind(value)):
        return "a value that looks like a secret (not shown)"
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _field_at(model: type[BaseModel] | None, loc: Sequence[Any]):
    """The pydantic FieldInfo addressed by a loc, so messages can quote its description."""
    field = None
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return field
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _model_inside(field.annotation)
    return field


def _model_inside(annotation: Any) -> Any:
    """The first BaseModel found inside an annotation such as ``list[Service] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_inside(arg)
        if found is not None:
            return found
    return None


def _known_keys(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            break
        current = _model_inside(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def describe_validation_error(
    top_key: str, model: type[BaseModel], error: ValidationError, document: Any = None
) -> list[str]:
    """One line per pydantic error: key path, what is wrong, value received, and the fix.

    ``document`` is the raw value of the top-level key, used to name list items in paths.
    """
    problems = []
    for err in error.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = key_path(top_key, loc, document)
        kind = err["type"]
        if kind == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            hint = f"; known keys here: {', '.join(known)}" if known else ""
            problems.append(f"{path}: unknown key (remove it or fix its spelling){hint}")
            continue
        field = _field_at(model, loc)
        about = f" ({field.description})" if field is not None and field.description else ""
        if kind == "missing":
            problems.append(f"{path}: required key is missing{about}")
            continue
        message = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        received = err.get("input")
        if kind == "rule":
            problems.append(f"{path}: {message}")
            continue
        shown = show(received, loc)
        if kind in ("model_type", "dict_type") and loc and isinstance(loc[-1], int):
            problems.append(f"{path}: {_not_an_item(received, shown)}{about}")
            continue
        if shown.startswith("a value that looks like a secret"):
            # The library's message may quote the value (or a part of it): say only what is expected.
            problems.append(f"{path}: not a valid value here, and it looks like a secret (not shown){about}")
            continue
        problems.append(f"{path}: {message}, got {shown}{about}{_type_fix(kind, received)}")
    return problems


def _not_an_item(received: Any, shown: str) -> str:
    """What is wrong with an item of a list of mappings that is no mapping: YAML reads a ``-``
    with nothing after it as null, and ``- name`` as a string."""
    if received is None:
        return ("is an empty list item (a `-` with nothing after it); remove the `-` line or give "
                "the item its keys")
    return (f"is {shown}, not a mapping; write the item as `key: value` lines indented under its "
            "`-`")


def _type_fix(kind: str, received: Any) -> str:
    """The edit that turns what YAML delivered into the type the key takes: YAML 1.1 reads
    ``yes``/``no``/``on``/``off`` as booleans and digits as numbers, a list needs its own
    syntax, and the models are strict (no ``"512"`` or ``true`` for a number, no ``512.0`` for
    an integer: :class:`validation.fields.StrictModel`)."""
    if kind == "list_type":
        return "; write it as a YAML list (`- item` on its own line per item, or `[a, b]`)"
    if kind == "dict_type":
        return "; write it as a mapping (`key: value` lines indented under the key)"
    if kind == "string_type" and isinstance(received, bool):
        return ("; YAML reads an unquoted yes, no, on, off, true or false as a boolean: quote the "
                "value to keep it a string")
    if kind == "string_type" and received is None:
        return ("; YAML reads a key with nothing after it (or ~, null) as null: write the value, quoted "
                "('' for an empty string), or remove the key")
    if kind == "string_type" and isinstance(received, (int, float)):
        return f"; YAML reads it as a number: quote it to keep it a string ('{received}')"
    if kind in ("int_type", "float_type", "bool_type") and isinstance(received, str):
        # `pulumi config set --path` stores everything but integers and true/false as strings
        # (https://www.pulumi.com/docs/iac/cli/commands/pulumi_config_set/).
        wanted = {"int_type": "int", "float_type": "float", "bool_type": "bool"}[kind]
        return (f"; a quoted value is a string: write it without quotes (with `pulumi config set "
                f"--path`, add `--type {wanted}`)")
    if kind in ("int_type", "float_type") and isinstance(received, bool):
        return "; write a number here, not true or false"
    if kind == "int_from_float" or (kind == "int_type" and isinstance(received, float)):
        return "; write a whole number without a decimal point"
    if kind == "bool_type" and isinstance(received, (int, float)):
        return "; write true or false"
    return ""
