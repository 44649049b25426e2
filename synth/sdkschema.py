"""The provider schemas of the pinned provider versions, derived from the installed SDKs.

Pulumi's codegen writes each package's schema into its Python SDK, so the SDK pinned in
requirements.txt is the schema the real engine will check against:

- a resource's inputs are the ``pulumi.getter(name=...)`` properties of its ``<Class>Args``
  ``@pulumi.input_type`` class (engine name, type annotation); its required inputs are the
  ``Args.__init__`` parameters without a default;
- nested objects are further ``input_type`` classes, enums are the SDK's ``Enum`` classes,
  ``Sequence``/``Mapping`` annotations are arrays and maps;
- a resource's outputs are the ``pulumi.getter`` properties of the resource class itself;
- an invoke's arguments are the parameters of the function that calls ``invoke('<token>')``,
  with engine names from its ``__args__['<name>'] = <param>`` lines.

``check_resource`` / ``check_invoke`` compare captured values (engine names, as the synth
capture holds them) with these schemas and return one finding per problem, each naming the
property path. Unknown (``[unknown]``) and masked (``[secret]``) values pass, since their
shape cannot be seen.
"""

from __future__ import annotations

import ast
import collections.abc
import enum
import functools
import importlib
import inspect
import json
import re
import sys
import textwrap
import threading
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi

from synth import wire

UNKNOWN_MASK = "[unknown]"
SECRET_MASK = "[secret]"

# Derivation evaluates the SDKs' string annotations (``compile``), and the mock monitor asks
# for output names from several threads; CPython 3.11's compiler keeps its recursion depth in
# process-wide state, so concurrent compiles corrupt it (gh-106905). One derivation at a time.
_DERIVING = threading.RLock()


def _serialized(function):
    cached = functools.lru_cache(maxsize=None)(function)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _DERIVING:
            return cached(*args, **kwargs)

    wrapper.cache_clear = cached.cache_clear
    return wrapper


@dataclass(frozen=True)
class Type:
    """One schema type. ``kind`` is string, integer, number, boolean, any, array, map, object,
    enum, union, asset or resource; ``item`` is an array's or map's element type, ``cls`` an
    object's input class, ``values`` an enum's allowed values, ``options`` a union's members."""

    kind: str
    item: Optional["Type"] = None
    cls: Optional[type] = None
    values: tuple = ()
    options: tuple = ()

    def describe(self) -> str:
        if self.kind in ("array", "map"):
            return f"{self.kind} of {self.item.describe()}"
        if self.kind == "object":
            return f"object {self.cls.__name__}"
        if self.kind == "enum":
            return "one of " + ", ".join(repr(v) for v in self.values)
        if self.kind == "union":
            return " or ".join(o.describe() for o in self.options)
        return self.kind


ANY = Type("any")


@dataclass(frozen=True)
class ObjectSchema:
    """Properties of one object (a resource's inputs or a nested input type), by engine name."""

    name: str
    properties: dict[str, Type]
    required: frozenset[str]
    # Provider configuration travels as strings: the SDK JSON-encodes every non-string value.
    json_encoded: bool = False


@dataclass(frozen=True)
class InvokeSchema:
    token: str
    arguments: ObjectSchema
    function: str


def _is_wrapper(member: Any) -> bool:
    """``Awaitable[T]`` and ``Output[T]`` members of an ``Input[T]`` union."""
    origin = typing.get_origin(member) or member
    if isinstance(member, typing.ForwardRef):
        return member.__forward_arg__.startswith(("Output", "pulumi.Output", "Awaitable"))
    return origin in (collections.abc.Awaitable, pulumi.Output) or (
        isinstance(origin, type) and issubclass(origin, pulumi.Output))


def to_type(annotation: Any) -> Type:
    """The schema type of an SDK annotation (already resolved by ``pulumi._types``)."""
    if annotation is Any or annotation is None or isinstance(annotation, (typing.ForwardRef, str)):
        return ANY
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        members = [a for a in args if a is not type(None) and not _is_wrapper(a)]
        options: list[Type] = []
        for member in members:
            converted = to_type(member)
            if converted not in options:
                options.append(converted)
        if not options:
            return ANY
        return options[0] if len(options) == 1 else Type("union", options=tuple(options))
    if origin in (list, collections.abc.Sequence, typing.Sequence, tuple):
        return Type("array", item=to_type(args[0]) if args else ANY)
    if origin in (dict, collections.abc.Mapping, typing.Mapping):
        return Type("map", item=to_type(args[1]) if len(args) == 2 else ANY)
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return Type("enum", values=tuple(m.value for m in annotation))
        if annotation is bool:
            return Type("boolean")
        if annotation is int:
            return Type("integer")
        if annotation is float:
            return Type("number")
        if annotation is str:
            return Type("string")
        if wire.is_input_type(annotation):
            return Type("object", cls=annotation)
        if issubclass(annotation, (pulumi.Asset, pulumi.Archive)):
            return Type("asset")
        if issubclass(annotation, pulumi.Resource):
            return Type("resource")
    return ANY


def _required_parameters(init: Any) -> frozenset[str]:
    required = set()
    for name, parameter in inspect.signature(init).parameters.items():
        if name in ("self", "__self__") or parameter.kind in (parameter.VAR_POSITIONAL,
                                                              parameter.VAR_KEYWORD):
            continue
        if parameter.default is inspect.Parameter.empty:
            required.add(name)
    return frozenset(required)


@_serialized
def object_schema(input_cls: type, json_encoded: bool = False) -> ObjectSchema:
    """The properties of an ``@pulumi.input_type`` class."""
    names = wire.input_type_py_to_pulumi_names(input_cls)
    types = wire.input_type_types(input_cls)
    required = _required_parameters(input_cls.__init__)
    return ObjectSchema(
        name=input_cls.__name__,
        properties={engine: to_type(types.get(engine)) for engine in names.values()},
        required=frozenset(names[py] for py in required if py in names),
        json_encoded=json_encoded,
    )


@_serialized
def resource_class(type_token: str) -> Optional[type]:
    return wire.resource_class(type_token)


def args_class(resource_cls: type) -> Optional[type]:
    """``<Class>Args`` next to a resource class (codegen puts them in one module)."""
    module = sys.modules[resource_cls.__module__]
    return getattr(module, f"{resource_cls.__name__}Args", None)


@_serialized
def resource_schema(type_token: str) -> Optional[ObjectSchema]:
    """The inputs of a custom resource or provider type, or None when no installed SDK has it."""
    cls = resource_class(type_token)
    if cls is None:
        return None
    args = args_class(cls)
    if args is None:
        return None
    return object_schema(args, json_encoded=type_token.startswith("pulumi:providers:"))


@_serialized
def output_names(type_token: str) -> Optional[frozenset[str]]:
    """Engine names of a resource type's outputs (its class's ``pulumi.getter`` properties),
    or None for a type no installed SDK has (components)."""
    cls = resource_class(type_token)
    if cls is None:
        return None
    return frozenset(wire.resource_py_to_pulumi_names(cls).values()) - {"id", "urn"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@_serialized
def invoke_schema(token: str) -> Optional[InvokeSchema]:
    """The arguments of provider function ``token`` (``pkg:module/fn:fn``), or None.

    Codegen names the module and function after the token's last part in snake case and
    builds the request as ``__args__['<engineName>'] = <param>``; both are read from the
    function's source, and the token it invokes is checked."""
    parts = token.split(":")
    if len(parts) != 3:
        return None
    pkg, mod, fn = parts
    python_name = _snake(fn)
    package = f"pulumi_{pkg}"
    submodule = mod.split("/")[0]
    candidates = [f"{package}.{python_name}"]
    if submodule != "index":
        candidates.insert(0, f"{package}.{_snake(submodule)}.{python_name}")
    for module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        function = getattr(module, python_name, None)
        if function is None:
            continue
        source = textwrap.dedent(inspect.getsource(function))
        if f"'{token}'" not in source and f'"{token}"' not in source:
            continue
        engine_names: dict[str, str] = {}
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Subscript)
                    and isinstance(node.targets[0].value, ast.Name)
                    and node.targets[0].value.id == "__args__"
                    and isinstance(node.targets[0].slice, ast.Constant)
                    and isinstance(node.value, ast.Name)):
                engine_names[node.value.id] = node.targets[0].slice.value
        hints = typing.get_type_hints(function, globalns=vars(module))
        properties = {engine: to_type(hints.get(py, Any)) for py, engine in engine_names.items()}
        required = frozenset(engine_names[p] for p in _required_parameters(function)
                             if p in engine_names)
        return InvokeSchema(token, ObjectSchema(fn, properties, required), f"{module_name}.{python_name}")
    return None


# --- checking values ------------------------------------------------------------------------

def _opaque(value: Any) -> bool:
    return value in (UNKNOWN_MASK, SECRET_MASK, wire.UNKNOWN)


def check_value(value: Any, type_: Type, path: str) -> list[str]:
    """Findings for one value against one schema type; ``path`` names it in each finding."""
    if value is None or _opaque(value) or type_.kind == "any":
        return []
    kind = type_.kind
    if kind == "string" or kind == "resource":
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {_show(value)}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {_show(value)}"]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {_show(value)}"]
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {_show(value)}"]
    if kind == "enum":
        return [] if value in type_.values else [
            f"{path}: {_show(value)} is not an allowed value ({type_.describe()})"]
    if kind == "asset":
        return [] if isinstance(value, dict) and ({"asset", "archive"} & set(value)) else [
            f"{path}: expected an asset or archive, got {_show(value)}"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {_show(value)}"]
        return [f for i, item in enumerate(value) for f in check_value(item, type_.item, f"{path}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map, got {_show(value)}"]
        return [f for k, item in value.items() for f in check_value(item, type_.item, f"{path}.{k}")]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({type_.cls.__name__}), got {_show(value)}"]
        return check_object(value, object_schema(type_.cls), path)
    if kind == "union":
        attempts = [check_value(value, option, path) for option in type_.options]
        if any(not a for a in attempts):
            return []
        # A string-or-enum union (open enums such as droplet sizes) accepts any string.
        return [f"{path}: {_show(value)} matches none of: {type_.describe()}"]
    return []


def check_object(value: dict, schema: ObjectSchema, path: str) -> list[str]:
    findings = []
    for key in sorted(value):
        item = value[key]
        prop = schema.properties.get(key)
        where = f"{path}.{key}" if path else key
        if prop is None:
            known = ", ".join(sorted(schema.properties)) or "none"
            findings.append(f"{where}: unknown property of {schema.name} (known: {known})")
            continue
        if schema.json_encoded and isinstance(item, str) and prop.kind not in ("string", "enum", "any"):
            try:
                item = json.loads(item)
            except ValueError:
                findings.append(f"{where}: provider configuration value is not JSON: {_show(item)}")
                continue
        findings.extend(check_value(item, prop, where))
    for key in sorted(schema.required - set(value)):
        where = f"{path}.{key}" if path else key
        findings.append(f"{where}: required input of {schema.name} is missing")
    return findings


def check_resource(type_token: str, inputs: dict) -> list[str]:
    """Findings for one custom resource's (or provider's) captured inputs."""
    schema = resource_schema(type_token)
    if schema is None:
        return [f"{type_token}: no installed provider SDK defines this resource type"]
    return check_object(inputs, schema, "")


def check_invoke(token: str, args: dict) -> list[str]:
    schema = invoke_schema(token)
    if schema is None:
        return [f"{token}: no installed provider SDK defines this function"]
    return check_object(args, schema.arguments, "")


def pulumi_urns(value: Any, path: str = "") -> list[str]:
    """Paths of every ``urn:pulumi:`` string in an input value: Pulumi's own URNs, which no
    provider accepts (a DigitalOcean project takes ``do:<kind>:<id>`` URNs, for example)."""
    if isinstance(value, str):
        return [path] if value.startswith(wire.PULUMI_URN_PREFIX) else []
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in pulumi_urns(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [p for k, item in value.items()
                for p in pulumi_urns(item, f"{path}.{k}" if path else k)]
    return []


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class Report:
    """Schema findings of one capture: ``findings`` are ``"<urn or token>: <path>: <problem>"``."""

    findings: list[str] = field(default_factory=list)
    pulumi_urn_inputs: list[str] = field(default_factory=list)
