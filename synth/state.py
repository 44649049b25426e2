"""Queries over a desired-state document (the synth JSON), shared by tests, policy and diff."""

from __future__ import annotations

import json
from typing import Any, Iterator

PRODUCT_TYPE_PREFIX = "platform:products:"
"""Type prefix of the component each product's resources hang under (stacks/product.py)."""


def product_of(resource: dict[str, Any], by_urn: dict[str, dict[str, Any]]) -> str:
    """The product a resource belongs to: the product component at the top of its parent chain."""
    current = resource
    while current is not None:
        if current["type"].startswith(PRODUCT_TYPE_PREFIX):
            return current["name"]
        current = by_urn.get(current.get("parent") or "")
    return "(stack)"


# (key, JSON types it may hold, what it is) of a resource; urn, type and name are required.
_RESOURCE_SHAPE = (("urn", (str,), "a non-empty string (urn:pulumi:STACK::PROJECT::TYPE::NAME)"),
                   ("type", (str,), "a non-empty string (e.g. docker:index/container:Container)"),
                   ("name", (str,), "a non-empty string"),
                   ("inputs", (dict,), "an object of the resource's inputs"),
                   ("outputs", (dict,), "an object of the resource's outputs"),
                   ("parent", (str, type(None)), "the parent's urn or null"),
                   ("dependencies", (list,), "a list of urns"))


def _shown(value: Any) -> str:
    return json.dumps(value)[:60]


def shape_problem(document: Any) -> str | None:
    """What makes ``document`` no desired-state document, or None: an object with a
    ``resources`` list (and ``outputs`` an object if present), each resource an object with
    string ``urn``, ``type`` and ``name`` (required), object ``inputs`` and ``outputs``, a string
    or null ``parent`` and a list of string ``dependencies`` (each optional), and no urn twice.
    The message names ``resources[i].<key>`` and what it must be."""
    if not isinstance(document, dict) or not isinstance(document.get("resources"), list):
        return "is not a desired-state document (no resources list)"
    if not isinstance(document.get("outputs", {}), dict):
        return f"outputs is {_shown(document['outputs'])}; the stack's outputs are an object"
    seen: dict[str, int] = {}
    for index, resource in enumerate(document["resources"]):
        if not isinstance(resource, dict):
            return f"resources[{index}] is {_shown(resource)}; every resource is an object with urn, type and name"
        missing = [k for k in ("urn", "type", "name") if k not in resource]
        if missing:
            return f"resources[{index}] has no {', '.join(missing)} (every resource needs urn, type and name)"
        for key, types, what in _RESOURCE_SHAPE:
            if key in resource and (not isinstance(resource[key], types) or resource[key] == ""):
                shown = _shown(resource[key])
                return (f"resources[{index}].{key} is {shown}, not a URN; every resource's urn is {what}"
                        if key == "urn" else f"resources[{index}].{key} is {shown}; it must be {what}")
        if not all(isinstance(d, str) for d in resource.get("dependencies", [])):
            return f"resources[{index}].dependencies holds a non-string; it must be a list of urns"
        urn = resource["urn"]
        if urn in seen:
            return (f"resources[{seen[urn]}] and resources[{index}] have the same urn {urn}; a state holds each "
                    "resource once (remove the copy)")
        seen[urn] = index
    return None


def _long_strings(value: Any, path: str, limit: int) -> Iterator[tuple[str, int]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if (size := len(str(key).encode("utf-8", "surrogatepass"))) > limit:
                yield f"{path} (a key)", size
            else:
                yield from _long_strings(item, f"{path}.{key}", limit)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _long_strings(item, f"{path}[{index}]", limit)
    elif isinstance(value, str) and (size := len(value.encode("utf-8", "surrogatepass"))) > limit:
        yield path, size


def oversized_string(document: dict[str, Any], limit: int) -> str | None:
    """Where the first string of a resource's inputs or outputs, a value or a key, is over
    ``limit`` UTF-8 bytes, and its size (``resources[2] (api).inputs.envs[0] is 200,000 bytes``),
    or None. Lengths only: ``python -m synth check`` asks before the policy pack parses a string
    (as shell words, URLs, connection strings), as the config boundary does
    (``stacks.value_checks.size_problems``). ``document`` has passed ``shape_problem``."""
    for index, resource in enumerate(document["resources"]):
        for key in ("inputs", "outputs"):
            name = f" ({resource['name']})" if len(resource["name"]) <= 63 else ""
            for path, size in _long_strings(resource.get(key, {}), f"resources[{index}]{name}.{key}", limit):
                return f"{path} is {size:,} bytes"
    return None


class State:
    """A read-only view of ``{"resources": [...], "outputs": {...}}`` with lookups by type and name."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.resources: list[dict[str, Any]] = document.get("resources", [])
        self.by_urn = {r["urn"]: r for r in self.resources}

    @property
    def outputs(self) -> dict[str, Any]:
        return self.document.get("outputs", {})

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == type_]

    def named(self, name: str, type_: str | None = None) -> dict[str, Any]:
        found = [r for r in self.resources if r["name"] == name and (type_ is None or r["type"] == type_)]
        if len(found) != 1:
            raise KeyError(f"expected one resource named {name!r} (type {type_}), found {len(found)}")
        return found[0]

    def children(self, resource: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in self.resources if r.get("parent") == resource["urn"]]

    def ancestors(self, resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
        parent = self.by_urn.get(resource.get("parent") or "")
        while parent is not None:
            yield parent
            parent = self.by_urn.get(parent.get("parent") or "")

    def all_dependencies(self, resource: dict[str, Any]) -> set[str]:
        """URNs this resource waits for, directly or through other dependencies."""
        seen: set[str] = set()
        stack = list(resource.get("dependencies", []))
        while stack:
            urn = stack.pop()
            if urn in seen:
                continue
            seen.add(urn)
            stack.extend(self.by_urn.get(urn, {}).get("dependencies", []))
        return seen

