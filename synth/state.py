"""Queries over a desired-state document (the synth JSON), shared by tests, policy and diff."""

from __future__ import annotations

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

