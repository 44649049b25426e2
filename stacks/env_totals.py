"""Each container's whole environment against ``ENV_TOTAL_MAX_BYTES``, once the config is valid:
its own ``env`` and ``secret_env`` (``stacks.value_checks.size_problems`` counted those before
any parser ran) and the variables the program adds, read from the product's plan
(``ProductPlan.env``, plain values, built from the config alone): a fixed value by its length,
a generated password or a URL around one by the length the program gives it, a secret config
value when it is known. A bucket's keys, a managed cluster's URI and a resource's attribute
exist only once the resource does and are left to the half of ARG_MAX kept free."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from components.container_env import env_bytes, env_total_problem, utf8_bytes
from stacks.errors import key_path
from stacks.registry import PRODUCTS
from stacks.wiring import ConfigSecret, Generated, SecretUrl


def _secret_bytes(value: Any, secrets: Mapping[str, Any]) -> int | None:
    """The length of a secret env value the plan refers to, when it is known before deploying."""
    if isinstance(value, ConfigSecret):
        known = secrets.get(value.key)
        return utf8_bytes(known) if isinstance(known, str) else None
    if isinstance(value, Generated):
        return value.length
    if isinstance(value, SecretUrl):
        return utf8_bytes(value.template.replace("{pw}", "")) + value.password.length
    return None


def _entries(value: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Mapping]]:
    """(loc, mapping) of every mapping with a ``name`` in a product's config document."""
    if isinstance(value, Mapping):
        if isinstance(value.get("name"), str):
            yield loc, value
        for key, item in value.items():
            yield from _entries(item, loc + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _entries(item, loc + (index,))


def env_total_problems(product: str, config: Any, environment: Any, document: Any,
                       secrets: Mapping[str, Any]) -> list[str]:
    """A message for each of ``product``'s services whose environment, the program's variables
    included, totals more than ``ENV_TOTAL_MAX_BYTES``, at its ``env`` key path (or at the
    product's key for a container the config does not list). ``config`` is the validated
    product config, ``document`` its raw value, ``secrets`` the stack's secret keys without the
    namespace (a value a string when known)."""
    plan = PRODUCTS[product].plan(config, environment)
    entries = {}
    for loc, entry in _entries(document):
        entries.setdefault(entry["name"], (loc, entry))
    problems = []
    for service, env in plan.env.items():
        loc, entry = entries.get(service, (None, {}))
        own = entry.get("env") if isinstance(entry.get("env"), Mapping) else {}
        sizes = {name: env_bytes(name, utf8_bytes(value)) for name, value in own.items()
                 if isinstance(name, str) and isinstance(value, str)}
        sizes.update((name, env_bytes(name, utf8_bytes(value))) for name, value in env.plain
                     if isinstance(value, str))
        sizes.update((name, env_bytes(name, size)) for name, value in env.secret
                     if (size := _secret_bytes(value, secrets)) is not None)
        if (message := env_total_problem(sizes, service)) is not None:
            where = key_path(product, (*loc, "env"), document) if loc is not None else key_path(product, ())
            problems.append(f"{where}: {message}")
    return problems
