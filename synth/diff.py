"""``python -m synth diff BASE.json HEAD.json``: what a change does to the desired state.

Markdown for a pull-request comment: resources added, removed and changed per product, with
the inputs that changed (secret values stay masked; a changed secret shows as changed through
its digest), and a warning at the top for any change that would replace a stateful or protected
resource or delete a protected one. Exit code 3 when such a warning is present, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from synth.summary import product_of

# Inputs whose change makes the provider replace the resource (delete and create anew).
REPLACING_INPUTS: dict[str, tuple[str, ...]] = {
    "digitalocean:index/droplet:Droplet": ("image", "region", "sshKeys", "userData", "vpcUuid", "monitoring"),
    "digitalocean:index/databaseCluster:DatabaseCluster": ("engine", "region", "name", "privateNetworkUuid"),
    "digitalocean:index/databaseDb:DatabaseDb": ("name", "clusterId"),
    "digitalocean:index/databaseUser:DatabaseUser": ("name", "clusterId"),
    "digitalocean:index/vpc:Vpc": ("region", "ipRange"),
    "digitalocean:index/volume:Volume": ("region", "name", "snapshotId"),
    "digitalocean:index/spacesBucket:SpacesBucket": ("name", "region"),
    "cloudflare:index/r2Bucket:R2Bucket": ("name", "location", "accountId", "jurisdiction"),
    "minio:index/s3Bucket:S3Bucket": ("bucket",),
}
STATEFUL_TYPES = frozenset(REPLACING_INPUTS)
EXIT_SAFE, EXIT_WARNING = 0, 3


@dataclass
class Change:
    kind: str  # added | removed | changed
    resource: dict[str, Any]
    product: str
    keys: list[str] = field(default_factory=list)


@dataclass
class Diff:
    changes: list[Change]
    warnings: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_WARNING if self.warnings else EXIT_SAFE


def _paths(base: Any, head: Any, path: str, depth: int) -> Iterable[str]:
    """Dotted paths where two input values differ, down to ``depth`` levels."""
    if base == head:
        return
    if depth == 0 or type(base) is not type(head) or not isinstance(base, (dict, list)):
        yield path
        return
    if isinstance(base, dict):
        for key in sorted(set(base) | set(head)):
            yield from _paths(base.get(key), head.get(key), f"{path}.{key}", depth - 1)
    elif len(base) != len(head):
        yield path
    else:
        for index, (a, b) in enumerate(zip(base, head)):
            yield from _paths(a, b, f"{path}[{index}]", depth - 1)


def changed_keys(base: dict[str, Any], head: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    base_inputs, head_inputs = base.get("inputs", {}), head.get("inputs", {})
    base_digests, head_digests = base.get("secret_digests", {}), head.get("secret_digests", {})
    for key in sorted(set(base_inputs) | set(head_inputs)):
        secret = key in base.get("secret_inputs", []) or key in head.get("secret_inputs", [])
        if secret:
            if base_inputs.get(key) != head_inputs.get(key) or base_digests.get(key) != head_digests.get(key):
                keys.append(f"{key} (secret)")
            continue
        keys.extend(p.lstrip(".") for p in _paths(base_inputs.get(key), head_inputs.get(key), key, 3))
    for option in ("protect", "retain_on_delete", "delete_before_replace", "import_id", "ignore_changes"):
        if base.get(option) != head.get(option):
            keys.append(f"[option] {option}")
    return keys


def diff_states(base: dict[str, Any], head: dict[str, Any]) -> Diff:
    base_by_urn = {r["urn"]: r for r in base.get("resources", [])}
    head_by_urn = {r["urn"]: r for r in head.get("resources", [])}
    changes: list[Change] = []
    warnings: list[str] = []
    for urn in sorted(set(base_by_urn) | set(head_by_urn)):
        old, new = base_by_urn.get(urn), head_by_urn.get(urn)
        if old is None:
            changes.append(Change("added", new, product_of(new, head_by_urn)))
        elif new is None:
            changes.append(Change("removed", old, product_of(old, base_by_urn)))
            if old.get("protect"):
                warnings.append(f"deletes protected `{old['name']}` ({_short(old['type'])}); "
                                "unprotect it in its own reviewed change first")
        else:
            keys = changed_keys(old, new)
            if keys:
                changes.append(Change("changed", new, product_of(new, head_by_urn), keys))
            replacing = [k for k in REPLACING_INPUTS.get(new["type"], ())
                         if old["inputs"].get(k) != new["inputs"].get(k)
                         or old.get("secret_digests", {}).get(k) != new.get("secret_digests", {}).get(k)]
            if replacing and (new["type"] in STATEFUL_TYPES or old.get("protect")):
                warnings.append(f"replaces `{new['name']}` ({_short(new['type'])}): "
                                f"{', '.join(replacing)} changed, which forces a new resource")
    return Diff(changes, warnings)


def _short(type_: str) -> str:
    return type_.rsplit(":", 1)[-1]


def markdown(diff: Diff, base: dict[str, Any], head: dict[str, Any],
             cost_lines: list[str] | None = None) -> str:
    out = [f"## Plan diff for stack `{head.get('stack', '?')}`", ""]
    if diff.warnings:
        out += ["> [!WARNING]", "> **This change replaces or deletes stateful resources:**"]
        out += [f"> - {w}" for w in diff.warnings]
        out.append("")
    counts = {k: sum(c.kind == k for c in diff.changes) for k in ("added", "removed", "changed")}
    out.append(f"{counts['added']} to add, {counts['changed']} to change, {counts['removed']} to remove.")
    out.append("")
    if cost_lines:
        out += cost_lines + [""]
    symbol = {"added": "+", "removed": "-", "changed": "~"}
    for product in sorted({c.product for c in diff.changes}):
        out += [f"### {product}", "", "| | resource | type | inputs changed |", "|---|---|---|---|"]
        for change in [c for c in diff.changes if c.product == product]:
            keys = ", ".join(f"`{k}`" for k in change.keys[:12])
            if len(change.keys) > 12:
                keys += f" and {len(change.keys) - 12} more"
            out.append(f"| {symbol[change.kind]} | `{change.resource['name']}` | {_short(change.resource['type'])} | {keys} |")
        out.append("")
    if not diff.changes:
        out.append("No resource changes.")
    return "\n".join(out) + "\n"
