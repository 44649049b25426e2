"""Run the policy pack over a desired-state document, without the Pulumi CLI.

It builds the SDK's own ``ResourceValidationArgs`` and ``StackValidationArgs`` from the synth
JSON and calls the very policy objects ``pulumi preview --policy-pack policy/`` loads, with
enforcement levels and policy config in the format ``--policy-pack-config`` takes:
``{"<policy>": "advisory" | "mandatory" | "disabled" | {"enforcementLevel": ..., <config>}}``.

With ``proxies=True`` (and always when the document holds synth's ``"[unknown]"`` values) each
policy gets its properties through pulumi-policy's own unknown-checking proxies, as under
``pulumi preview``; reading an unknown value then gives the analyzer's outcome, an advisory
"can't run policy ... during preview" entry, never a crash and never a silent pass.
"""

from __future__ import annotations

import datetime
import difflib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from pulumi_policy import (EnforcementLevel, PolicyResource, ResourceValidationArgs,
                           ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy)
from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResourceOptions, _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from policy.rules import POLICIES
from policy.rules.base import PACK_NAME, PACK_VERSION, WAIVER_MAX_DAYS, today
from policy.rules.globs import matches_everything, too_broad

POLICY_DIR = Path(__file__).resolve().parent
LEVELS = {level.value: level for level in EnforcementLevel}


class PolicyConfigError(ValueError):
    """A policy config the pack cannot apply: one line naming each bad key and the allowed values."""


MANDATORY_NAMES = frozenset(p.name for p in POLICIES if p.enforcement_level is EnforcementLevel.MANDATORY)
"""Policies a stack's config may not disable or demote: their findings are excused one
resource kind at a time by waivers, each with a reason and an expiry, never switched off."""

# Waivers of this policy are the register its check reads, not excuses: they name no resources.
REGISTER = "platform-waiver-configure-reason-and-expiry"


def waiver_problems(key: str, waivers: Any) -> list[str]:
    """What is wrong with ``<key>.waivers``: each waiver needs a ``name``, ``expires`` as
    YYYY-MM-DD at most WAIVER_MAX_DAYS (180) from today, a ``reason`` that is not blank when
    given, and ``resources``, a list of globs each naming a kind of resource (``too_broad``
    refuses ``*``, ``kro*``, ``kro-staging-*``); a waiver of the register policy
    (REGISTER) names no resources. A missing reason or a past date stay violations at run time
    (README "Policy pack"), so an expired waiver shows in the report instead of failing the load."""
    if not isinstance(waivers, list):
        return [f"{key}.waivers: must be a list of {{name, reason, expires, resources}} objects"]
    problems = []
    for index, waiver in enumerate(waivers):
        at = f"{key}.waivers[{index}]"
        if not isinstance(waiver, Mapping):
            problems.append(f"{at}: must be an object {{name, reason, expires, resources}}")
            continue
        if not isinstance(waiver.get("name"), str) or not waiver.get("name"):
            problems.append(f"{at}.name: give the waiver a name")
        if "reason" in waiver and not (isinstance(waiver["reason"], str) and waiver["reason"].strip()):
            problems.append(f"{at}.reason: {json.dumps(waiver['reason'])[:40]} says nothing; write why the "
                            "exception is safe and who accepted it")
        try:
            until = datetime.date.fromisoformat(str(waiver.get("expires")))
        except ValueError:
            problems.append(f"{at}.expires: must be a date YYYY-MM-DD at most {WAIVER_MAX_DAYS} days from today")
        else:
            if (until - today()).days > WAIVER_MAX_DAYS:
                problems.append(f"{at}.expires: {until} is more than {WAIVER_MAX_DAYS} days from today; set a date "
                                f"by {today() + datetime.timedelta(days=WAIVER_MAX_DAYS)} and renew it then")
        globs = waiver.get("resources")
        if key == REGISTER:
            continue
        if not isinstance(globs, list) or not globs or not all(isinstance(g, str) for g in globs):
            problems.append(f"{at}.resources: list the resource names or flows (globs) the waiver excuses; "
                            "a waiver's name alone excuses nothing")
            continue
        for position, glob in enumerate(globs):
            if matches_everything(glob):
                problems.append(f"{at}.resources[{position}]: {json.dumps(glob)[:40]} matches every resource; "
                                "name the resources, such as \"*-cadvisor\"")
            elif too_broad(glob):
                problems.append(f"{at}.resources[{position}]: {json.dumps(glob)[:40]} matches a whole product "
                                "or stack; name the kind of resource after the wildcard (\"kro-*-firewall\") "
                                "or give product, stack and resource before it (\"kro-staging-db-*\")")
    return problems


def policy_config_problems(config: Mapping[str, Any]) -> list[str]:
    """What is wrong with a policy config (the ``--policy-pack-config`` shape): a key that names
    no policy of the pack (``all`` holds settings every policy gets, never ``waivers``), an
    enforcement level other than ``LEVELS``, a mandatory policy (``MANDATORY_NAMES``) set to
    ``advisory`` or ``disabled``, or a waiver ``waiver_problems`` refuses. The engine
    refuses the first two at ``pulumi preview``; the offline run refuses all, instead of a
    KeyError, a silently ignored waiver or one that switches the pack off."""
    names = sorted(p.name for p in POLICIES)
    problems = []
    for key, entry in config.items():
        if key == "all":
            if not isinstance(entry, Mapping):
                problems.append("all: must be an object of settings every policy gets")
            elif "waivers" in entry:
                problems.append("all.waivers: a waiver under all would excuse every policy; declare it under "
                                "the policy it excuses, with the resources it covers")
            continue
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            problems.append(f"{key}: no policy of the pack has this name"
                            + (f"; did you mean {close[0]}?" if close else "")
                            + " (the names: `python -m policy.catalog`)")
            continue
        level = entry.get("enforcementLevel", "advisory") if isinstance(entry, Mapping) else entry
        if not isinstance(entry, (str, Mapping)) or level not in LEVELS:
            shown = json.dumps(level)[:40] if isinstance(entry, (str, Mapping)) else json.dumps(entry)[:40]
            problems.append(f"{key}: enforcement level {shown} is not one of {', '.join(LEVELS)} (give "
                            "the level, or an object of settings with an optional enforcementLevel)")
        elif key in MANDATORY_NAMES and (isinstance(entry, str) or "enforcementLevel" in entry) \
                and level != EnforcementLevel.MANDATORY.value:
            at = key if isinstance(entry, str) else f"{key}.enforcementLevel"
            problems.append(f"{at}: {key} is mandatory and a stack's config cannot make it {level}; "
                            "excuse the resources it flags with a waiver (name, reason, expiry, resources)")
        elif isinstance(entry, Mapping) and "waivers" in entry:
            problems.extend(waiver_problems(str(key), entry["waivers"]))
    return problems


def check_policy_config(config: Any, source: str) -> dict[str, Any]:
    """``config`` when the pack can apply it; PolicyConfigError naming ``source`` otherwise."""
    if not isinstance(config, dict):
        raise PolicyConfigError(f"the policy config {source} must be a JSON object of policy -> level")
    problems = policy_config_problems(config)
    if problems:
        raise PolicyConfigError(f"the policy config {source}: {'; '.join(problems)}")
    return config


def load_policy_config(stack: str) -> dict[str, Any]:
    """``policy/config.<stack>.json`` when it exists (the file real previews pass too), checked
    (``check_policy_config``). Raises PolicyConfigError for a file that is no JSON or is wrong."""
    path = POLICY_DIR / f"config.{stack}.json"
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PolicyConfigError(f"the policy config {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    return check_policy_config(config, str(path))


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


UNKNOWN_MASK = "[unknown]"


def _with_sentinels(value: Any) -> Any:
    """synth's "[unknown]" mask as the engine's unknown sentinel (what the analyzer receives)."""
    if value == UNKNOWN_MASK:
        return UNKNOWN_STRING_VALUE
    if isinstance(value, dict):
        return {k: _with_sentinels(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_sentinels(v) for v in value]
    return value


def _has_unknowns(value: Any) -> bool:
    if isinstance(value, str):
        return value in (UNKNOWN_MASK, UNKNOWN_STRING_VALUE)
    if isinstance(value, dict):
        return any(_has_unknowns(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknowns(v) for v in value)
    return False


def _props(resource: Mapping[str, Any], proxies: bool) -> Any:
    inputs = resource.get("inputs") or {}
    return unknown_checking_proxy(_with_sentinels(inputs)) if proxies else inputs


def cannot_check_message(policy_name: str, error: UnknownValueError) -> str:
    """The analyzer's wording for a policy that read an unknown value (pulumi_policy.policy)."""
    return (f"can't run policy '{policy_name}' from policy pack '{PACK_NAME}@v{PACK_VERSION}' "
            f"during preview: {error.message}")


def _policy_resources(resources: list[Mapping[str, Any]], proxies: bool = False) -> list[PolicyResource]:
    built: dict[str, PolicyResource] = {}
    for r in resources:
        built[r["urn"]] = PolicyResource(
            resource_type=r["type"], props=_props(r, proxies), urn=r["urn"], name=r["name"],
            opts=_options(r), provider=None, parent=None, dependencies=[], property_dependencies={})
    for r in resources:
        resource = built[r["urn"]]
        resource.parent = built.get(r.get("parent") or "")
        resource.dependencies = [built[u] for u in r.get("dependencies") or [] if u in built]
    return list(built.values())


def evaluate(document: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None,
             policies=None, proxies: bool = False) -> list[dict[str, str]]:
    """Violations as ``{"policy", "level", "urn", "message"}``, in policy order; a policy that
    read an unknown value adds one advisory entry with the analyzer's "can't run" message."""
    config = config or {}
    resources = list(document.get("resources") or [])
    proxies = proxies or any(_has_unknowns(r.get("inputs")) for r in resources)
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
                    resource_type=r["type"], props=_props(r, proxies), urn=r["urn"],
                    name=r["name"], opts=_options(r), provider=None, config=settings)
                # Only the synth capture knows which inputs are secret (the engine unwraps them
                # for policies); rules that need it read this attribute.
                args.secret_inputs = list(r.get("secret_inputs") or [])
                args.secret_leaves = list(r.get("secret_leaves") or {})
                try:
                    policy.validate(args, report)
                except _NotApplicableError:
                    continue
                except UnknownValueError as error:
                    violations.append({"policy": policy.name, "level": EnforcementLevel.ADVISORY.value,
                                       "urn": "", "message": cannot_check_message(policy.name, error)})
        elif isinstance(policy, StackValidationPolicy):
            args = StackValidationArgs(resources=_policy_resources(resources, proxies), config=settings)
            try:
                policy.validate(args, report)
            except _NotApplicableError:
                continue
            except UnknownValueError as error:
                violations.append({"policy": policy.name, "level": EnforcementLevel.ADVISORY.value,
                                   "urn": "", "message": cannot_check_message(policy.name, error)})
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
