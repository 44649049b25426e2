"""How a message points at the input it judges: the path ``walk_strings`` gives, with the
variable's name when the input is an item of an environment list (README "Policy pack")."""

from __future__ import annotations

import re
from typing import Any

from policy.parsers.commands import ENV_INPUTS
from policy.rules.base import items, mapping
from pulumi_policy.proxy import UnknownValueError


def value_at(value: Any, path: str) -> Any:
    """The value at a walk_strings path (``spec.services[0].envs[1].key``), or None."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            value = items(value)[int(part[1:-1])] if int(part[1:-1]) < len(items(value)) else None
        else:
            value = mapping(value).get(part)
    return value


_ENV_ITEM = re.compile(rf"(?:^|\.)(?:{'|'.join(ENV_INPUTS)})\[\d+\]$")
_KEYED_ENV_VALUE = re.compile(r"(?:^|\.)envs\[\d+\]\.value$")
# Spelt in one case, as variables are: a mixed-case word before "=" is more likely a base64
# value before its padding (an entry with no name) than a name, and must not be shown.
_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*|[a-z_][a-z0-9_]*")


def where(props: Any, path: str) -> str:
    """``path`` as a message shows it. A reviewer reads ``envs[15]`` without the list beside
    it, so an item of an environment list ("NAME=value") and an App Platform env's ``value``
    carry the variable's name: ``envs[15] (DATABASE_URL)``; never the value, which may be a
    secret. Any other path (``environment.PGSSLMODE`` names its variable already) as it is."""
    name = None
    if _ENV_ITEM.search(path):
        entry = value_at(props, path)
        name = entry.partition("=")[0] if isinstance(entry, str) and "=" in entry else None
    elif _KEYED_ENV_VALUE.search(path):
        try:
            name = value_at(props, path[:-len(".value")] + ".key")
        except UnknownValueError:
            # Under preview an unknown name costs the label, not the finding.
            name = None
    return f"{path} ({name})" if isinstance(name, str) and _VARIABLE.fullmatch(name) else path
