"""Cross-field rules of the stack config, run section by section so one broken section never
hides the problems of another.

A product model checks the shape of every field (pydantic). Rules that relate fields to each
other are small named functions registered for a model class with :func:`rule`; each yields
:class:`Finding` objects located at the field that must change. :func:`run_rules` runs them on
a validated model or, when the model did not validate, on a :class:`Partial` of the fields that
did: a rule that reads a broken field is skipped (that field already has its own error), every
other rule still runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class Finding:
    """A rule's verdict at ``loc`` (relative to the object the rule ran on)."""

    loc: Loc
    message: str


class Skip(Exception):
    """A rule read a field that did not validate; its own error is already reported."""


class Partial:
    """The fields of ``model`` that validated on their own; reading another raises Skip.

    List fields keep their length: an item that did not validate is ``None`` (skipped by
    :func:`each`), so indices in findings still point at the right item."""

    def __init__(self, model: type[BaseModel], values: dict[str, Any]):
        self.__dict__["_model"] = model
        self.__dict__["_values"] = values

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__["_values"]
        if name in values:
            return values[name]
        raise Skip(name)

    @property
    def model_class(self) -> type[BaseModel]:
        return self.__dict__["_model"]


def model_class(obj: Any) -> type | None:
    if isinstance(obj, Partial):
        return obj.model_class
    if isinstance(obj, BaseModel):
        return type(obj)
    return None


def each(items: Sequence[Any] | None) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` for the items that validated."""
    for index, item in enumerate(items or ()):
        if item is not None:
            yield index, item


def whole(*sequences: Sequence[Any] | None) -> None:
    """Raises Skip when an item of one of ``sequences`` did not validate (``None`` in a
    Partial's list): for a rule that needs every item, such as one that plans the whole
    network; the broken item has its own error at ``list[index]``."""
    if any(item is None for sequence in sequences for item in sequence or ()):
        raise Skip("an item that did not validate")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def _validate_value(annotation: Any, field, value: Any) -> Any:
    """A field's value validated alone, or Partials where its models did not validate."""
    from typing import Annotated

    try:
        return TypeAdapter(Annotated[annotation, field]).validate_python(value)
    except ValidationError:
        pass
    origin = get_origin(annotation)
    if origin is Union or (origin is not None and str(origin) == "types.UnionType"):
        models = _models_in(annotation)
        if len(models) == 1 and isinstance(value, Mapping):
            return partial(models[0], value)
        raise Skip()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if isinstance(value, Mapping):
            return partial(annotation, value)
        raise Skip()
    if origin is list and isinstance(value, list):
        (item_type,) = get_args(annotation) or (Any,)
        models = _models_in(item_type)
        if not models:
            raise Skip()  # a list of plain values is usable only whole
        items = []
        for item in value:
            try:
                items.append(TypeAdapter(item_type).validate_python(item))
            except ValidationError:
                items.append(partial(models[0], item) if isinstance(item, Mapping) else None)
        return items
    raise Skip()


def partial(model: type[BaseModel], data: Mapping[str, Any]) -> BaseModel | Partial:
    """``model`` validated from ``data``, or a Partial of the fields that validate alone."""
    try:
        return model.model_validate(data)
    except ValidationError:
        pass
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name not in data:
            if not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
            continue
        try:
            values[name] = _validate_value(field.annotation, field, data[name])
        except Skip:
            continue
    return Partial(model, values)


Rule = Callable[[Any, "RuleContext"], Iterator[Finding]]
_RULES: dict[type, list[Rule]] = {}


def rule(model: type[BaseModel]) -> Callable[[Rule], Rule]:
    """Register a cross-field rule for every object of ``model`` found in a stack config."""
    def register(function: Rule) -> Rule:
        _RULES.setdefault(model, []).append(function)
        return function
    return register


@dataclass
class RuleContext:
    """What rules may read besides the object they check."""

    stack: str | None
    environment: Any
    """The Environment, a Partial of it, or None when it is missing entirely."""
    path: Callable[[Loc], str]
    """Renders a loc (absolute, from the top-level key) as a key path with item names."""
    loc: Loc = ()
    """Where the object being checked sits, from the top-level key."""

    def where(self, *relative: Any) -> str:
        return self.path(self.loc + tuple(relative))

    def env(self, name: str) -> Any:
        if self.environment is None:
            raise Skip("environment")
        return getattr(self.environment, name)


def _children(obj: Any) -> Iterator[tuple[Loc, Any]]:
    if isinstance(obj, Partial):
        fields = obj.__dict__["_values"].items()
    elif isinstance(obj, BaseModel):
        fields = ((name, getattr(obj, name)) for name in type(obj).model_fields)
    else:
        return
    for name, value in fields:
        if model_class(value) is not None:
            yield (name,), value
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if model_class(item) is not None:
                    yield (name, index), item


def run_rules(obj: Any, context: RuleContext) -> list[Finding]:
    """Every registered rule on ``obj`` and on each model object inside it, depth first;
    findings are absolute (from the top-level key)."""
    findings: list[Finding] = []
    cls = model_class(obj)
    for klass in (cls.__mro__ if cls else ()):
        for function in _RULES.get(klass, ()):
            try:
                for finding in function(obj, context):
                    findings.append(Finding(context.loc + finding.loc, finding.message))
            except Skip:
                continue
    for loc, child in _children(obj):
        findings += run_rules(child, RuleContext(context.stack, context.environment, context.path,
                                                 context.loc + loc))
    return findings
