"""Stacks of one project name nothing global alike: a stack copied from another (README, "Adding
a stack") that keeps a hostname, a bucket, an app name, a machine's address or the management
network would fight the other stack over the same DNS record, bucket, app or host.

The config boundary of stack S reads every other ``Pulumi.<other>.yaml`` beside the project's
``Pulumi.yaml``, committed or not (Pulumi takes each as a stack of the project), and compares
what each names globally (``collisions.global_names``, the one definition). An other file that cannot be read or parsed is skipped with a note on
stderr; its own problems are its own stack's to report.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from stacks.collisions import MANAGEMENT_NETWORK, Loc, global_names
from stacks.environment import Environment
from stacks.errors import CONFIG_NAMESPACE, key_path
from validation import rules

PROJECT_DIR = Path(__file__).resolve().parent.parent
"""The directory of the project's ``Pulumi.yaml``, where its stack files live."""
FIX = ("a globally named thing belongs to one stack: give this stack its own (README, \"Adding a stack\")")


def stack_files(project_dir: Path = PROJECT_DIR) -> dict[str, Path]:
    """Stack name -> its ``Pulumi.<stack>.yaml`` beside ``project_dir/Pulumi.yaml`` (none when
    that is no project)."""
    if not (project_dir / "Pulumi.yaml").is_file():
        return {}
    return {path.name[len("Pulumi."):-len(".yaml")]: path for path in sorted(project_dir.glob("Pulumi.*.yaml"))}


def stack_views(path: Path, products: Mapping[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
    """(environment, product views, raw values by top key) of a stack file; None, with a note,
    when it cannot be read."""
    try:
        config = yaml.safe_load(path.read_text()).get("config") or {}
        values = {key.split(":", 1)[1]: value for key, value in config.items()
                  if isinstance(key, str) and key.startswith(f"{CONFIG_NAMESPACE}:")}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        print(f"note: {path.name} is skipped in the check for names shared between stacks "
              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})", file=sys.stderr)
        return None
    environment = rules.partial(Environment, values["environment"]) if isinstance(values.get("environment"), Mapping) else None
    listed = values.get("products") if isinstance(values.get("products"), list) else []
    views = {name: rules.partial(products[name].config_model, values[name]) for name in listed
             if isinstance(name, str) and name in products and isinstance(values.get(name), Mapping)}
    return environment, views, values


def _same(what: str, mine: Any, theirs: Any) -> bool:
    if what == MANAGEMENT_NETWORK:
        try:
            return ipaddress.ip_network(mine, strict=False).overlaps(ipaddress.ip_network(theirs, strict=False))
        except (TypeError, ValueError):
            return False
    return str(mine) == str(theirs) if not isinstance(mine, tuple) else mine == theirs


def _shown(value: Any) -> str:
    return str(value[1]) if isinstance(value, tuple) else str(value)


def shared_with_other_stacks(stack: str, environment: Any, views: Mapping[str, Any],
                             path_for: Callable[[str], Callable[[Loc], str]], products: Mapping[str, Any],
                             project_dir: Path = PROJECT_DIR) -> Iterator[str]:
    """One problem per global name of ``stack`` (its ``environment`` and product ``views``) that
    another stack file of the project names too (a network: overlaps), naming both key paths and
    the fix. ``path_for(top)(loc)`` is the key path in this stack's config."""
    mine = global_names(environment, views, products)
    if not mine:
        return
    for other, path in stack_files(project_dir).items():
        if other == stack:
            continue
        read = stack_views(path, products)
        if read is None:
            continue
        other_env, other_views, values = read
        theirs = global_names(other_env, other_views, products)
        for what, top, loc, value in mine:
            for other_what, other_top, other_loc, other_value in theirs:
                if other_what == what and _same(what, value, other_value):
                    shown = value if what == MANAGEMENT_NETWORK else _shown(value)
                    yield (f"{path_for(top)(loc)}: {what} {shown} is also in stack {other} ({path.name}: "
                           f"{key_path(other_top, other_loc, values.get(other_top))}"
                           + (f", {other_value}" if what == MANAGEMENT_NETWORK else "") + f"); {FIX}")
                    break
