"""Turning pydantic validation failures into one readable message per stack config.

The message names every problem with its full config key path
(``platform:kro.services[1].memory_mb``), the value received and what is expected, so a
platform engineer can fix the whole file in one pass instead of one error per run.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import pulumi
from pydantic import BaseModel, ValidationError

CONFIG_NAMESPACE = "platform"


class ConfigError(pulumi.RunError):
    """A stack config that cannot be deployed. Raised before any resource is registered.

    Subclasses ``pulumi.RunError`` so that real ``pulumi preview`` prints the message without a
    Python traceback; ``python -m synth`` prints it and exits 2.
    """

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(
            f"stack config has {len(self.problems)} {noun}; nothing was registered:\n{lines}"
        )


def key_path(top_key: str, loc: Iterable[Any]) -> str:
    """``("services", 1, "memory_mb")`` under ``kro`` -> ``platform:kro.services[1].memory_mb``."""
    path = f"{CONFIG_NAMESPACE}:{top_key}"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap"):
            continue
        else:
            path += f".{part}"
    return path


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, sort_keys=True)
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
    top_key: str, model: type[BaseModel], error: ValidationError
) -> list[str]:
    """One line per pydantic error: key path, what is wrong, value received, and the fix."""
    problems = []
    for err in error.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = key_path(top_key, loc)
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
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(f"{path}: {message}, got {_show(err.get('input'))}{about}")
    return problems
