"""The stack config: which products a stack holds, the environment they share, their settings.

Read once from Pulumi config and validated before any resource is registered. Every problem
in the file is reported together, each with its key path, so one run shows everything to fix.
Sections are validated independently: a broken ``environment`` does not hide the problems of
a product, and a broken field does not hide the rules that do not read it (validation/rules.py).
Sizes come first: a section holding a string too big for a host (``value_checks.size_problems``)
gets those problems alone, as no other check reads a string that size in bounded time.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, Mapping

import pulumi
from pydantic import BaseModel, ValidationError

from stacks.collisions import stack_collisions
from stacks.definition import SecretKey
from stacks.engine_config import other_config_keys, plain_other_config, platform_config
from stacks.env_totals import env_total_problems
from stacks.environment import Environment
from stacks.errors import CONFIG_NAMESPACE, ConfigError, describe_validation_error, key_path, show
from stacks.other_stacks import shared_with_other_stacks
from stacks.registry import PRODUCTS
from stacks.secret_checks import STACK_SECRET_PREFIXES, required_secret_keys, secret_problems, unknown_secret_keys
from stacks.secret_keys import ssh_ca_secret
from stacks.value_checks import (KEY_NAME, meant_key, namespace_problems, one_message_per_secret,
                                 provider_config_problems, scrub_secrets, size_problems, string_problems)
from validation import rules
from validation.formats import secret_value_kind
from validation.rules import RuleContext


class StackConfig(BaseModel):
    """The validated config of one stack."""

    environment: Environment
    products: list[str]
    product_configs: dict[str, Any]

    def product(self, name: str):
        return self.product_configs[name]

    def required_secrets(self) -> list[SecretKey]:
        needed: list[SecretKey] = [ssh_ca_secret()]
        if self.environment.alerts.slack_channel:
            needed.append(
                SecretKey(
                    key="alerts_slack_webhook_url",
                    description="Slack incoming-webhook URL for alerts",
                )
            )
        registry = PRODUCTS
        for name in self.products:
            needed.extend(registry[name].required_secrets(self.product_configs[name]))
        # One entry per key: a secret several services use (Pencom's Oracle password) or that
        # monitoring reuses (the SendGrid key) is still one key to set.
        merged: dict[str, SecretKey] = {}
        for secret in needed:
            if secret.key in merged:
                if secret.description not in merged[secret.key].description:
                    merged[secret.key].description += f"; {secret.description}"
            else:
                merged[secret.key] = secret.model_copy()
        return list(merged.values())


def _parse_json_value(key: str, raw: Any, problems: list[str]) -> Any:
    """Pulumi hands structured config to the program as JSON text."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text == "null":
        return None
    if not text or text[0] not in "[{":
        return raw
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{key_path(key, [])}: not valid JSON ({exc.msg} at char {exc.pos})")
        return None


def _dedupe(problems: list[str]) -> list[str]:
    seen: set[str] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]


def validate_stack_config(
    raw: Mapping[str, Any], secret_keys: set[str] | None = None, *, check_secrets: bool = True,
    stack: str | None = None, other: Mapping[str, Any] | None = None,
) -> StackConfig:
    """Validate every ``platform:*`` key of a stack. Raises ConfigError listing all problems.

    ``raw`` maps keys without the namespace (``kro``, ``environment``) to their values as Pulumi
    delivers them: strings, with objects and lists as JSON text. ``stack`` is the stack the
    config is for (``environment.name`` must equal it); None skips that check. With
    ``check_secrets`` every secret a product asks for must be set, as a secret. ``other`` maps
    the stack's keys of other namespaces (``digitalocean:token``) to their values, None for a
    secret one: a credential among the plain ones (``value_checks.provider_config_problems``)
    and a key of a namespace nothing reads (``value_checks.namespace_problems``: ``platfrom:kro``)
    are listed first and hide no other problem.
    """
    registry = PRODUCTS
    problems: list[str] = []
    secret_keys = set(secret_keys or ())
    if stack is not None:
        stack = stack.rsplit("/", 1)[-1]

    other = other or {}
    # The key a misspelled one stands for: its own "required key is missing" says nothing more.
    meant = {m for key in other if (m := meant_key(str(key)))}
    secret_prefixes = tuple(p.secret_prefix for p in registry.values()) + STACK_SECRET_PREFIXES
    known_top = {"environment", "products", *registry}
    for key in sorted(raw, key=str):
        if key not in known_top and not str(key).startswith(secret_prefixes):
            close = difflib.get_close_matches(str(key), sorted(known_top), n=1)
            meant.update(f"{CONFIG_NAMESPACE}:{c}" for c in close)
            hint = f"; did you mean {CONFIG_NAMESPACE}:{close[0]}?" if close else ""
            problems.append(
                f"{key_path(key, [])}: unknown key (known keys: {', '.join(sorted(known_top))}; "
                f"secret keys start with {', '.join(secret_prefixes)}){hint}"
            )
    values = {k: _parse_json_value(k, v, problems) for k, v in raw.items() if k in known_top}
    secrets = {k: v for k, v in raw.items() if k not in known_top}
    sized = {key: size_problems(key, value, value, secrets) for key, value in values.items()}
    # Sizes first, and a section with a string too big is checked no further: every later check
    # parses its strings, some in quadratic time (value_checks.size_problems).
    refused = {key for key, found in sized.items() if found}
    for key, value in values.items():
        problems += sized[key] or string_problems(key, value, value)

    def path_for(top: str):
        return lambda loc: key_path(top, loc, values.get(top))

    environment = None
    environment_view: Any = None
    raw_env = values.get("environment")
    if "environment" not in values:
        problems.append(f"{key_path('environment', [])}: required key is missing "
                        "(an object with name, admin_cidrs, and optionally region and alerts)")
    elif "environment" in refused:
        pass
    elif not isinstance(raw_env, Mapping):
        problems.append(f"{key_path('environment', [])}: must be an object with name, admin_cidrs "
                        f"and alerts, got {describe_value(raw_env)}")
    else:
        try:
            environment = environment_view = Environment.model_validate(raw_env)
        except ValidationError as exc:
            problems.extend(describe_validation_error("environment", Environment, exc, raw_env))
            environment_view = rules.partial(Environment, raw_env)
        problems += [f"{path_for('environment')(f.loc)}: {f.message}" for f in rules.run_rules(
            environment_view, RuleContext(stack, environment_view, path_for("environment")))]

    products: list[str] = []
    raw_products = values.get("products") if "products" not in refused else None
    if "products" not in values:
        problems.append(f"{key_path('products', [])}: required key is missing (a list drawn "
                        f"from {', '.join(sorted(registry))}; it may be empty)")
    elif "products" in refused:
        pass
    elif not isinstance(raw_products, list):
        problems.append(f"{key_path('products', [])}: must be a list of product names, "
                        f"got {describe_value(raw_products)}")
    else:
        for index, name in enumerate(raw_products):
            if not isinstance(name, str) or name not in registry:
                close = difflib.get_close_matches(str(name), sorted(registry), n=1)
                problems.append(f"{key_path('products', [index])}: unknown product "
                                f"{describe_value(name)}; known products: "
                                f"{', '.join(sorted(registry))}"
                                + (f"; did you mean {close[0]}?" if close else ""))
            elif name in products:
                first = raw_products.index(name)
                problems.append(f"{key_path('products', [index])}: {name} is listed twice (also at "
                                f"{key_path('products', [first])}); list each product once")
            else:
                products.append(name)

    product_configs: dict[str, Any] = {}
    views: dict[str, Any] = {}
    for name, product in registry.items():
        listed = name in products
        present = name in values
        if listed and not present:
            problems.append(f"{key_path(name, [])}: required key is missing ({name} is listed "
                            f"in platform:products, so its settings object must be set)")
        elif present and not listed and isinstance(raw_products, list):
            problems.append(f"{key_path(name, [])}: settings for a product this stack does not "
                            f"hold; add {name} to platform:products or remove this key")
        elif listed and name not in refused:
            document = values[name]
            if not isinstance(document, Mapping):
                problems.append(f"{key_path(name, [])}: must be an object of {name}'s settings, "
                                f"got {describe_value(document)}")
                continue
            try:
                product_configs[name] = views[name] = product.config_model.model_validate(document)
            except ValidationError as exc:
                problems.extend(describe_validation_error(name, product.config_model, exc, document))
                views[name] = rules.partial(product.config_model, document)
            problems += [f"{path_for(name)(f.loc)}: {f.message}" for f in rules.run_rules(
                views[name], RuleContext(stack, environment_view, path_for(name)))]

    problems += stack_collisions(views, path_for, PRODUCTS, getattr(environment_view, "management", None))
    if stack is not None and not problems:
        problems += shared_with_other_stacks(stack, environment_view, views, path_for, PRODUCTS)
    if not problems:
        # The program's own variables count too, read from each product's plan (stacks.env_totals).
        for name in products:
            problems += env_total_problems(name, product_configs[name], environment, values[name], secrets)

    needed = required_secret_keys(environment_view, views, products)
    problems += unknown_secret_keys(raw, needed, registry, products)
    if check_secrets and not problems and needed is not None:
        problems += secret_problems(raw, needed, secret_keys)
    missing = tuple(f"{key}: required key is missing" for key in meant)
    problems = (provider_config_problems({k: v for k, v in other.items() if v is not None})
                + namespace_problems(other) + [p for p in problems if not p.startswith(missing)])
    if problems:
        problems = one_message_per_secret(problems)
        # Only what has the shape of a config key name counts as one: a secret value typed where
        # a key name belongs (secret_env: {JWT_SECRET: "postgres://user:pw@..."}) stays masked.
        names = {n for n in {str(k) for k in raw} | set(needed or ())
                 if KEY_NAME.fullmatch(n) and not secret_value_kind(n)}
        checked = {k: v for k, v in values.items() if k not in refused}
        raise ConfigError(scrub_secrets(_dedupe(problems), checked, names))
    return StackConfig(environment=environment, products=products, product_configs=product_configs)


def describe_value(value: Any) -> str:
    return show(value)


def read_pulumi_config() -> StackConfig:
    """Collect every ``platform:*`` key the engine knows about and validate them together;
    provider credentials in plain text and keys of a namespace nothing reads are refused with
    them. Raises ConfigError."""
    raw, secret_names = platform_config()
    other = dict.fromkeys(other_config_keys()) | plain_other_config()
    return validate_stack_config(raw, secret_names, stack=pulumi.get_stack(), other=other)
