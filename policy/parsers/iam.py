"""S3/MinIO/Spaces policy documents normalised before they are checked (IAM JSON grammar:
Principal ``"*"``, ``{"AWS": "*"}`` or ``{"AWS": ["*"]}``; Action and Resource a string or a
list; ``NotPrincipal``/``NotAction``; wildcards)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Statement:
    effect: str
    principals: frozenset[str]
    not_principal: bool
    actions: frozenset[str]
    not_action: bool
    resources: frozenset[str]
    conditions: Mapping[str, Any]
    sid: str

    @property
    def any_principal(self) -> bool:
        return "*" in self.principals or self.not_principal

    def allows(self, action: str) -> bool:
        """True when the statement covers ``action`` (case-insensitive wildcards)."""
        matched = any(fnmatch.fnmatchcase(action.lower(), a) for a in self.actions)
        return matched != self.not_action

    def covers_all_buckets(self) -> bool:
        return any(r in ("*", "arn:aws:s3:::*", "arn:aws:s3:::*/*") for r in self.resources)

    def denies_plain_http(self) -> bool:
        for operator, values in self.conditions.items():
            if str(operator).lower() == "bool" and isinstance(values, Mapping):
                for key, value in values.items():
                    flat = _strings(value)
                    if str(key).lower() == "aws:securetransport" and flat == ["false"]:
                        return True
        return False


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [str(v) for v in value]
    if isinstance(value, bool):
        return [str(value).lower()]
    return [str(value)]


def _principals(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, Mapping):
        return frozenset(p for v in value.values() for p in _strings(v))
    return frozenset(_strings(value))


def statements(document: Any) -> list[Statement]:
    """Statements of a policy given as JSON text or a mapping. Raises ValueError when it is not
    a policy document."""
    if isinstance(document, str):
        document = json.loads(document)
    if not isinstance(document, Mapping):
        raise ValueError("a policy document is a JSON object")
    raw = document.get("Statement", [])
    raw = [raw] if isinstance(raw, Mapping) else list(raw)
    out = []
    for item in raw:
        not_principal = "NotPrincipal" in item
        not_action = "NotAction" in item
        out.append(Statement(
            effect=str(item.get("Effect", "")).capitalize(),
            principals=_principals(item.get("NotPrincipal") if not_principal else item.get("Principal")),
            not_principal=not_principal,
            actions=frozenset(a.lower() for a in _strings(item.get("NotAction" if not_action else "Action", []))),
            not_action=not_action,
            resources=frozenset(_strings(item.get("Resource", item.get("NotResource", [])))),
            conditions=item.get("Condition") or {},
            sid=str(item.get("Sid", ""))))
    return out
