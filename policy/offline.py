"""Run the policy pack over a desired-state document, without the Pulumi CLI.

It builds the SDK's own ``ResourceValidationArgs`` and ``StackValidationArgs`` from the synth
JSON and calls the very policy objects ``pulumi preview --policy-pack policy/`` loads, with
enforcement levels and policy config in the format ``--policy-pack-config`` takes:
``{"<policy>": "advisory" | "mandatory" | "disabled" | {"enforcementLevel": ..., <config>}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from pulumi_policy import (EnforcementLevel, PolicyResource, ResourceValidationArgs,
                           ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy)
from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResourceOptions, _NotApplicableError

from policy.rules import POLICIES

POLICY_DIR = Path(__file__).resolve().parent
LEVELS = {level.value: level for level in EnforcementLevel}


def load_policy_config(stack: str) -> dict[str, Any]:
    """``policy/config.<stack>.json`` when it exists (the file real previews pass too)."""
    path = POLICY_DIR / f"config.{stack}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _level_and_config(policy, config: Mapping[str, Any]) -> tuple[EnforcementLevel, dict]:
    entry = config.get(policy.name)
    level = policy.enforcement_level or EnforcementLevel.ADVISORY
    settings: dict = {}
    if isinstance(entry, str):
        level = LEVELS[entry]
    elif isinstance(entry, Mapping):
        settings = {k: v for k, v in entry.items() if k != "enforcementLevel"}
        if "enforcementLevel" in entry:
            level = LEVELS[entry["enforcementLevel"]]
    shared = config.get("all") if isinstance(config.get("all"), Mapping) else {}
    return level, {**shared, **settings}


def _options(resource: Mapping[str, Any]) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=bool(resource.get("protect")),
        ignore_changes=list(resource.get("ignore_changes") or []),
        delete_before_replace=bool(resource.get("delete_before_replace")),
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=list(resource.get("additional_secret_outputs") or []),
        parent=resource.get("parent"),
    )


def _policy_resources(resources: list[Mapping[str, Any]]) -> list[PolicyResource]:
    built: dict[str, PolicyResource] = {}
    for r in resources:
        built[r["urn"]] = PolicyResource(
            resource_type=r["type"], props=r.get("inputs") or {}, urn=r["urn"], name=r["name"],
            opts=_options(r), provider=None, parent=None, dependencies=[], property_dependencies={})
    for r in resources:
        resource = built[r["urn"]]
        resource.parent = built.get(r.get("parent") or "")
        resource.dependencies = [built[u] for u in r.get("dependencies") or [] if u in built]
    return list(built.values())


def evaluate(document: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None,
             policies=None) -> list[dict[str, str]]:
    """Violations as ``{"policy", "level", "urn", "message"}``, in policy order."""
    config = config or {}
    resources = list(document.get("resources") or [])
    violations: list[dict[str, str]] = []
    for policy in policies if policies is not None else POLICIES:
        level, settings = _level_and_config(policy, config)
        if level is EnforcementLevel.DISABLED:
            continue

        def report(message: str, urn: Optional[str] = None, _p=policy, _l=level) -> None:
            violations.append({"policy": _p.name, "level": _l.value, "urn": urn or "",
                               "message": message})

        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                if not r.get("custom", True):
                    continue
                args = ResourceValidationArgs(
                    resource_type=r["type"], props=r.get("inputs") or {}, urn=r["urn"],
                    name=r["name"], opts=_options(r), provider=None, config=settings)
                # Only the synth capture knows which inputs are secret (the engine unwraps them
                # for policies); rules that need it read this attribute.
                args.secret_inputs = list(r.get("secret_inputs") or [])
                try:
                    policy.validate(args, report)
                except _NotApplicableError:
                    continue
        elif isinstance(policy, StackValidationPolicy):
            args = StackValidationArgs(resources=_policy_resources(resources), config=settings)
            try:
                policy.validate(args, report)
            except _NotApplicableError:
                continue
    return violations


def has_mandatory(violations: list[Mapping[str, str]]) -> bool:
    return any(v["level"] == EnforcementLevel.MANDATORY.value for v in violations)


def report_text(violations: list[Mapping[str, str]]) -> str:
    if not violations:
        return "policy: no violations"
    lines = [f"policy: {len(violations)} violation(s)"]
    for v in violations:
        lines.append(f"  [{v['level']}] {v['policy']}: {v['message']}\n      {v['urn']}")
    return "\n".join(lines)
