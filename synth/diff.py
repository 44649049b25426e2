"""``python -m synth diff BASE.json HEAD.json``: what a change does to the desired state.

Markdown for a pull-request comment (the workflow posts exactly this text): resources added,
replaced, changed and removed per product; a container whose image changed says so on its own
line (``image: OLD → NEW``, read through its RemoteImage: ``image_changed``). Each changed input
shows old -> new (a label by its name, with its value alone); long texts
(scripts, specs) show a unified diff of the changed lines only, collapsed in ``<details>``;
lists of plain values show the items added and removed. Secret values stay masked leaf by leaf
(``secret_leaves`` in the synth JSON): a secret shows as ``(secret changed)`` through its digest
while everything around it stays plain. A replacement names the inputs that force it
(``synth.replacements``).

A value that a preview does not know yet (``"[unknown]"`` in a ``--preview`` state, or a secret
leaf marked ``unknown``) shows as ``(known after apply)``, as ``pulumi preview`` prints it, and
never by itself makes a change or a replacement: a resource whose only differences are unknown
values is not listed, only counted.

Deleting or replacing a stateful resource (``synth.replacements.stateful_reason``: a type that
holds data, or a container with a writable data mount) or deleting a protected one is a warning
that says what goes with it (its data, or for a protected VPC, database user or reserved IP what
it serves: ``synth.replacements.DEPENDENCY_LOSS``),
at the top and exit code 3. In a production stack (base OR head says so, or the stack's name
is production: ``change_is_production``) that is final; elsewhere ``allow_stateful_changes`` (``--allow-stateful-changes``) accepts it, exit 0, and the
warning stays in the comment. The one exception, in every stack: the image patch of a container
that writes data, acknowledged in the stack config (a service's ``maintenance``, carried in the
container's labels) for exactly that image change, is listed as planned maintenance and does not
block. A base and head of different projects or stacks raise ``DiffInputError`` (the CLI
exits 2).

The comparison of one resource's inputs is ``synth/input_diff.py``, what two previews hide is
``synth/preview_diff.py``, whether an acknowledgement covers a replacement (images compared by
repository, tag and digest) is ``synth/maintenance.py``; this module judges the whole state and
writes the comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stacks.production import is_production_name
from synth.input_diff import KNOWN_AFTER_APPLY, MISSING, InputChange, input_changes, is_unknown, show, text_lines
from synth.maintenance import acknowledged, image_reference
from synth.preview_diff import hidden_replacements, may_change
from synth.replacements import (CONTAINER, DEPENDENCY_LOSS, loss, maintenance_of, replacing_inputs, stateful_reason,
                                top_level)
from synth.state import product_of

EXIT_SAFE, EXIT_INPUT, EXIT_WARNING = 0, 2, 3


class DiffInputError(ValueError):
    """Two states that cannot be compared (different project or stack, wrong shape)."""


@dataclass
class Change:
    kind: str  # added | removed | changed | replaced
    resource: dict[str, Any]
    product: str
    inputs: list[InputChange] = field(default_factory=list)
    forced_by: list[str] = field(default_factory=list)
    # Inputs that force the replacement while a preview does not know them: {name: why}
    # (``hidden_replacements``).
    unknown_forcing: dict[str, str] = field(default_factory=dict)
    # A container's image reference, base and head, when it changed (``image_changed``).
    image: tuple[Any, Any] | None = None

    @property
    def keys(self) -> list[str]:
        return [c.path for c in self.inputs]


@dataclass
class Diff:
    changes: list[Change]
    warnings: list[str]
    production: bool = False
    allow_stateful_changes: bool = False
    # Resources whose only differences are values a preview does not know yet.
    known_after_apply: int = 0
    # Replacements of data-writing containers that a maintenance acknowledgement covers: shown,
    # never blocking (README "Patching a datastore's image in production").
    maintenance: list[str] = field(default_factory=list)
    # Inputs unknown in a preview whose known ingredients changed (``may_change``).
    may_change: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return bool(self.warnings) and (self.production or not self.allow_stateful_changes)

    @property
    def exit_code(self) -> int:
        return EXIT_WARNING if self.blocked else EXIT_SAFE


# --- the whole state --------------------------------------------------------------------------

def is_production(state: dict[str, Any]) -> bool:
    """Whether one document is of a production stack: its ``production`` output is true
    (stacks/program.py exports it), or its stack name is production by
    ``stacks.production.is_production_name`` (``prod``, ``prod-*``, ``*-prod``,
    ``*-production``), whatever the output says: a document cannot talk a prod stack out of it."""
    outputs = state.get("outputs") or {}
    return outputs.get("production") is True or is_production_name(str(state.get("stack") or ""))


def change_is_production(base: dict[str, Any], head: dict[str, Any]) -> bool:
    """A change is production when EITHER document is (``is_production``): the head is what the
    pull request writes, so a head that flips ``production`` to false never lifts the block."""
    return is_production(base) or is_production(head)


def check_comparable(base: dict[str, Any], head: dict[str, Any]) -> None:
    """Raise DiffInputError unless both are synth states of one project and stack."""
    for label, state in (("base", base), ("head", head)):
        if not isinstance(state, dict) or not isinstance(state.get("resources"), list):
            raise DiffInputError(f"the {label} file is not a desired-state document (no resources list)")
        for index, resource in enumerate(state["resources"]):
            if not isinstance(resource, dict) or not {"urn", "type", "name"} <= set(resource):
                raise DiffInputError(f"the {label} file's resources[{index}] lacks urn, type or name")
        if not isinstance(state.get("preview_unknowns"), (dict, type(None))):
            raise DiffInputError(f"the {label} file's preview_unknowns is not an object")
    for key in ("project", "stack"):
        a, b = base.get(key), head.get(key)
        if a and b and a != b:
            raise DiffInputError(f"base and head are different {key}s ({a!r} and {b!r}); "
                                 f"diff two states of one {key}")


def diff_states(base: dict[str, Any], head: dict[str, Any], *,
                allow_stateful_changes: bool = False) -> Diff:
    check_comparable(base, head)
    base_by_urn = {r["urn"]: r for r in base.get("resources", [])}
    head_by_urn = {r["urn"]: r for r in head.get("resources", [])}
    both = sorted(set(base_by_urn) & set(head_by_urn))
    counted_of = {urn: [c for c in input_changes(base_by_urn[urn], head_by_urn[urn]) if c.kind != "unknown"]
                  for urn in both}
    known_forced = {urn: sorted({top_level(c.path) for c in counted_of[urn]} & replacing_inputs(head_by_urn[urn]))
                    for urn in both}
    unknown_forced = hidden_replacements(base, head, {u for u in both if known_forced[u]})
    changes: list[Change] = []
    warnings: list[str] = []
    notes: list[str] = []
    uncertain: list[str] = []
    pending = 0
    for urn in sorted(set(base_by_urn) | set(head_by_urn)):
        old, new = base_by_urn.get(urn), head_by_urn.get(urn)
        if old is None:
            changes.append(Change("added", new, product_of(new, head_by_urn)))
        elif new is None:
            changes.append(Change("removed", old, product_of(old, base_by_urn)))
            reason = stateful_reason(old)
            if reason or old.get("protect"):
                what = "protected " if old.get("protect") else ""
                warnings.append(f"deletes {what}`{old['name']}` ({_short(old['type'])}) and "
                                f"{reason or loss(old) or 'what depends on it'}")
        else:
            inputs = input_changes(old, new)
            counted = counted_of[urn]
            hidden = unknown_forced.get(urn, {})
            uncertain += may_change(base, head, new, {top_level(c.path) for c in counted} | set(hidden))
            if not counted and not hidden:
                pending += bool(inputs)
                continue
            forced_by = sorted(set(known_forced[urn]) | set(hidden))
            kind = "replaced" if forced_by else "changed"
            changes.append(Change(kind, new, product_of(new, head_by_urn), inputs if counted else [],
                                  forced_by, hidden, image_changed(old, new, base_by_urn, head_by_urn)))
            if forced_by and stateful_reason(old) and maintenance_of(new):
                verdict = acknowledged(old, new, forced_by, base_by_urn, head_by_urn)
                if verdict.startswith("acknowledged"):
                    notes.append(verdict)
                    continue
                warnings.append(verdict)
            elif forced_by and (stateful_reason(old) or stateful_reason(new) or old.get("protect")):
                served = "" if stateful_reason(old) or stateful_reason(new) else DEPENDENCY_LOSS.get(new["type"])
                warnings.append(f"replaces `{new['name']}` ({_short(new['type'])}): "
                                f"{', '.join(_forcing(name, hidden) for name in forced_by)} changed, "
                                "which forces a new resource"
                                + (f"; it takes with it {served}" if served else ""))
    return Diff(changes, warnings, production=change_is_production(base, head),
                allow_stateful_changes=allow_stateful_changes, known_after_apply=pending,
                maintenance=notes, may_change=uncertain)


def _forcing(name: str, hidden: dict[str, str]) -> str:
    return f"{name} ({hidden[name]})" if name in hidden else name


def image_changed(old: dict[str, Any], new: dict[str, Any], base_by_urn: dict[str, dict[str, Any]],
                  head_by_urn: dict[str, dict[str, Any]]) -> tuple[Any, Any] | None:
    """``(base image, head image)`` of a container whose image reference (``image_reference``:
    through its RemoteImage's ``name``, since its own ``image`` is an unknown or ``sha256:``
    ``imageId``) changed, else None; None for any other type."""
    if new.get("type") != CONTAINER:
        return None
    before, after = image_reference(old, base_by_urn), image_reference(new, head_by_urn)
    return None if before == after else (before, after)


def replacement_order(resource: dict[str, Any]) -> str:
    """How a container's replacement runs, as a suffix of its diff line ("" for other types):
    create-before-delete, health-gated by the provider's ``wait`` (a switchover without
    downtime), or delete-first (``delete_before_replace``: the service is down until the new
    container is healthy, a maintenance step)."""
    if resource.get("type") != "docker:index/container:Container":
        return ""
    if resource.get("delete_before_replace"):
        return " (delete-first: down until the new container is healthy; a maintenance step)"
    inputs = resource.get("inputs") or {}
    if inputs.get("wait") is True:
        return (" (create-before-delete: the new container starts next to the old one, the update "
                f"waits up to {inputs.get('waitTimeout', 60)} s for it to be healthy, then removes the old one)")
    return " (create-before-delete, not health-gated: the old container goes once the new one runs)"


def _short(type_: str) -> str:
    return type_.rsplit(":", 1)[-1]


# --- Markdown ---------------------------------------------------------------------------------

SYMBOL = {"added": "+", "removed": "-", "changed": "~", "replaced": "+-"}


def _cell(value: Any) -> str:
    return KNOWN_AFTER_APPLY if is_unknown(value) else f"`{show(value)}`"


def _image_cell(reference: Any) -> str:
    if reference is None:
        return "(none)"
    return KNOWN_AFTER_APPLY if is_unknown(reference) else f"`{reference}`"


def _input_lines(change: InputChange) -> list[str]:
    if change.kind in ("value", "unknown") and not change.lines:
        return [f"  - `{change.path}`: {_cell(change.old)} → {_cell(change.new)}"]
    if change.kind == "secret":
        return [f"  - `{change.path}`: ({change.lines[0]})"]
    if change.kind in ("items", "unknown"):
        if len(change.lines) <= 4:
            return [f"  - `{change.path}`: " + ", ".join(f"`{line}`" for line in change.lines)]
    body = change.lines
    if change.kind == "text" and change.old is MISSING:
        body = [f"+ {line}" for line in text_lines(change.new)]
    count = sum(line.startswith(("+", "-", "~")) for line in body)
    summary = f"`{change.path}`: {count} line{'s' if count != 1 else ''} changed"
    fence = "```diff"
    return ["  - <details><summary>" + summary + "</summary>", "", f"    {fence}",
            *[f"    {line}" for line in body], "    ```", "    </details>", ""]


def markdown(diff: Diff, base: dict[str, Any], head: dict[str, Any],
             cost_lines: list[str] | None = None) -> str:
    """The pull-request comment for one stack."""
    out = [f"## Plan diff for stack `{head.get('stack', '?')}`", ""]
    if diff.warnings:
        if diff.production:
            verdict = "**Blocked: this production stack's change deletes or replaces stateful resources.** " \
                      "Split it so data is moved first; `--allow-stateful-changes` does not apply to " \
                      "production. A datastore's image patch is acknowledged instead, by the service's " \
                      "`maintenance:` in the stack config (README \"Patching a datastore's image in production\")."
        elif diff.allow_stateful_changes:
            verdict = "**Allowed with `--allow-stateful-changes`: this change deletes or replaces stateful resources.**"
        else:
            verdict = "**This change deletes or replaces stateful resources;** rerun the diff with " \
                      "`--allow-stateful-changes` once the data is safe."
        out += ["> [!CAUTION]", f"> {verdict}"] + [f"> - {w}" for w in diff.warnings] + [""]
    if diff.maintenance:
        out += ["> [!IMPORTANT]", "> **Planned maintenance, acknowledged in the stack config:** apply it "
                "inside its window, after the backup it names (README \"Patching a datastore's image in "
                "production\")."] + [f"> - {n}" for n in diff.maintenance] + [""]
    counts = {k: sum(c.kind == k for c in diff.changes) for k in SYMBOL}
    out.append(f"{counts['added']} to add, {counts['changed']} to change, {counts['replaced']} to "
               f"replace, {counts['removed']} to remove.")
    if diff.may_change:
        out += ["", "> [!WARNING]", "> **May change, unknown until apply** (a preview: the values below "
                "depend on outputs not known yet, and the known inputs they are made from changed):"]
        out += [f"> - {line}" for line in diff.may_change]
    if diff.known_after_apply:
        count = diff.known_after_apply
        out.append(f"{count} resource{'s' if count != 1 else ''} differ{'' if count != 1 else 's'} only "
                   "in values known after apply (a preview state); not counted as changes.")
    out.append("")
    if cost_lines:
        out += cost_lines + [""]
    for product in sorted({c.product for c in diff.changes}):
        out += [f"### {product}", ""]
        for change in [c for c in diff.changes if c.product == product]:
            name, type_ = change.resource["name"], _short(change.resource["type"])
            line = f"- {SYMBOL[change.kind]} `{name}` ({type_})"
            if change.kind == "replaced":
                line += ": **replaced**, forced by " + ", ".join(
                    f"`{k}`" + (f" ({change.unknown_forcing[k]})" if k in change.unknown_forcing else "")
                    for k in change.forced_by)
                line += replacement_order(change.resource)
            if change.image:
                line += ("; " if change.kind == "replaced" else ": ") + "image: " + " → ".join(
                    _image_cell(value) for value in change.image)
            out.append(line)
            for item in change.inputs:
                out += _input_lines(item)
        if out[-1] != "":
            out.append("")
    if not diff.changes:
        out.append("No resource changes known before apply." if diff.may_change else "No resource changes.")
    return "\n".join(out).rstrip("\n") + "\n"

