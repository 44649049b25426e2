"""The stack config: which products a stack holds, the environment they share, their settings.

Read once from Pulumi config and validated before any resource is registered. Every problem
in the file is reported together, each with its key path, so one run shows everything to fix.
Sections are validated independently: a broken ``environment`` does not hide the problems of
a product, and a broken field does not hide the rules that do not read it (validation/rules.py).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Iterator, Mapping

import pulumi
from pydantic import BaseModel, ValidationError

from components import wireguard
from stacks.collisions import stack_collisions
from stacks.secret_keys import SSH_CA_SECRET, registry_secret_key, ssh_ca_secret
from stacks.definition import SecretKey
from stacks.engine_config import plain_other_config, platform_config
from stacks.environment import Environment
from stacks.errors import CONFIG_NAMESPACE, ConfigError, describe_validation_error, key_path, show
from stacks.placeholders import OFFLINE_SYNTH, PLACEHOLDER_SECRET
from stacks.registry import PRODUCTS
from validation import rules
from validation.formats import (control_characters, looks_secret_name, openssh_key_problem, secret_parts,
                                secret_value_kind)
from validation.rules import RuleContext

HEREDOC_MARKER = "PLATFORM_EOF"
"""components/hostsetup.py writes host files as heredocs ending at this line; a config value
holding it would end a file early (it refuses such content mid-build)."""


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


def _leaves(value: Any, loc: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (loc, string) in a parsed value, keys included (a key's loc ends with itself)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield loc + (key,), key
            yield from _leaves(item, loc + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, loc + (index,))
    elif isinstance(value, str):
        yield loc, value


def _strings_problems(top: str, value: Any, document: Any) -> list[str]:
    """Control characters anywhere, and secrets in plain config whatever their key."""
    problems = []
    for loc, text in _leaves(value):
        if not isinstance(text, str):
            continue
        controls = control_characters(text)
        if controls:
            problems.append(f"{key_path(top, loc, document)}: contains control characters "
                            f"({', '.join(controls)}); remove them")
        if HEREDOC_MARKER in text:
            problems.append(f"{key_path(top, loc, document)}: contains {HEREDOC_MARKER}, the marker that ends "
                            "the files the program writes on hosts (components/hostsetup.py); remove it")
        if (len(loc) >= 2 and loc[-2] == "secret_env") or (loc and loc[-1] is text):
            continue
        if loc and loc[-1] == PUBLIC_KEY_FIELD and wireguard.key_problem(text) is None:
            continue
        kind = secret_value_kind(text)
        if kind:
            problems.append(f"{key_path(top, loc, document)}: {_plain_secret_fix(top, loc, text, kind)}")
    return problems


SLACK_WEBHOOK = "hooks.slack.com/"
PUBLIC_KEY_FIELD = "public_key"
"""A WireGuard peer's public key (``environment.management.peers``): random-looking, and public
by design (its private half never leaves the peer's device)."""


def _plain_secret_fix(top: str, loc: tuple, text: str, kind: str) -> str:
    """What is wrong with a secret found in plain config at ``loc``, and the key it belongs in.

    Product settings keep secrets in ``<product>_<name>`` keys referenced from ``secret_env``;
    the environment section has one secret, the Slack webhook (``alerts_slack_webhook_url``),
    and a webhook typed where the channel name goes is the common slip (Slack shows the URL
    next to the channel). The value is never quoted; the ``pulumi config set --secret`` shown
    takes no value, so it prompts for it and the secret stays out of the shell history."""
    slack = f"`pulumi config set --secret {CONFIG_NAMESPACE}:alerts_slack_webhook_url`"
    if top == "environment" and SLACK_WEBHOOK in text:
        where = ("this key takes the channel name (such as #ops-alerts); " if loc[-1:] == ("slack_channel",)
                 else "")
        return (f"holds a Slack webhook URL, which is a secret (value not shown); {where}set the URL with "
                f"{slack} (it prompts for it) and remove it from here")
    if top == "environment":
        return (f"holds {kind} in plain text (value not shown); the environment settings take no "
                f"secrets, remove it (the one environment secret, the Slack webhook URL, is set with {slack})")
    return (f"holds {kind} in plain text (value not shown); store it with `pulumi config set --secret "
            f"{CONFIG_NAMESPACE}:{top}_<name>` (it prompts for the value) and reference it from secret_env")


_KEY_NAME = re.compile(r"[a-z][a-z0-9_]{2,62}")


def _scrub(problems: list[str], values: Mapping[str, Any], key_names: set[str] = frozenset()) -> list[str]:
    """The last guard: no message carries a value that looks like a secret, or the value of a
    key that names a secret, even where a rule or a library quoted it.

    ``key_names`` are config key names (``pencom_alerts_smtp_password``): a field such as
    ``smtp_password_secret`` holds one to say where the secret is, and a name is not a secret,
    so it stays readable in every message."""
    secrets = set()
    for top, value in values.items():
        for loc, text in _leaves(value):
            if not isinstance(text, str) or len(text) < 6 or (loc and loc[-1] is text) \
                    or text in key_names:
                continue
            if secret_value_kind(text) or (loc and isinstance(loc[-1], str) and looks_secret_name(loc[-1])
                                           and not (len(loc) >= 2 and loc[-2] == "secret_env")):
                secrets.add(text)
                secrets.update(secret_parts(text))
    scrubbed = []
    for problem in problems:
        path, sep, message = problem.partition(": ")
        for secret in sorted(secrets, key=len, reverse=True):
            message = message.replace(secret, "[value not shown]")
        scrubbed.append(path + sep + message)
    return scrubbed


def _one_per_secret(problems: list[str]) -> list[str]:
    """One message per mistake: where a value was found to hold a secret (``holds ...``), the
    field's own "not a valid value here" for the same masked value adds nothing, so it goes."""
    held = {p.partition(": ")[0] for p in problems if p.partition(": ")[2].startswith("holds ")}
    return [p for p in problems
            if not (p.partition(": ")[0] in held and "looks like a secret (not shown)" in p)]


def _dedupe(problems: list[str]) -> list[str]:
    seen: set[str] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]


def validate_stack_config(
    raw: Mapping[str, Any], secret_keys: set[str] | None = None, *, check_secrets: bool = True,
    stack: str | None = None,
) -> StackConfig:
    """Validate every ``platform:*`` key of a stack. Raises ConfigError listing all problems.

    ``raw`` maps keys without the namespace (``kro``, ``environment``) to their values as Pulumi
    delivers them: strings, with objects and lists as JSON text. ``stack`` is the stack the
    config is for (``environment.name`` must equal it); None skips that check. With
    ``check_secrets`` every secret a product asks for must be set, as a secret.
    """
    registry = PRODUCTS
    problems: list[str] = []
    secret_keys = set(secret_keys or ())
    if stack is not None:
        stack = stack.rsplit("/", 1)[-1]

    secret_prefixes = tuple(p.secret_prefix for p in registry.values()) + STACK_SECRET_PREFIXES
    known_top = {"environment", "products", *registry}
    for key in sorted(raw, key=str):
        if key not in known_top and not str(key).startswith(secret_prefixes):
            close = difflib.get_close_matches(str(key), sorted(known_top), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(
                f"{key_path(key, [])}: unknown key (known keys: {', '.join(sorted(known_top))}; "
                f"secret keys start with {', '.join(secret_prefixes)}){hint}"
            )
    values = {k: _parse_json_value(k, v, problems) for k, v in raw.items() if k in known_top}
    for key, value in values.items():
        problems += _strings_problems(key, value, value)

    def path_for(top: str):
        return lambda loc: key_path(top, loc, values.get(top))

    environment = None
    environment_view: Any = None
    raw_env = values.get("environment")
    if "environment" not in values:
        problems.append(f"{key_path('environment', [])}: required key is missing "
                        "(an object with name, admin_cidrs, and optionally region and alerts)")
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
    raw_products = values.get("products")
    if "products" not in values:
        problems.append(f"{key_path('products', [])}: required key is missing (a list drawn "
                        f"from {', '.join(sorted(registry))}; it may be empty)")
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
        elif listed:
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

    problems += stack_collisions(views, path_for, PRODUCTS)

    needed = _required_secrets(environment_view, views, products)
    problems += _unknown_secret_keys(raw, needed, registry, products)
    if check_secrets and not problems and needed is not None:
        missing = [s for s in needed.values() if s.key not in raw]
        problems.extend(
            f"{key_path(s.key, [])}: required secret is not set ({s.description}); run "
            f"{set_secret_command(s)}"
            for s in missing
        )
        for secret in needed.values():
            value = raw.get(secret.key)
            if secret.format in _KEY_FORMATS and isinstance(value, str) \
                    and not _offline_placeholder(value):
                problem = openssh_key_problem(value)
                if problem:
                    problems.append(f"{key_path(secret.key, [])}: {_KEY_FORMATS[secret.format]} {problem} "
                                    f"(value not shown); set it with `pulumi config set --secret "
                                    f"{CONFIG_NAMESPACE}:{secret.key} < KEY_FILE`")
        problems += _reused_keys(raw, needed)
        plaintext = [s for s in needed.values() if s.key in raw and s.key not in secret_keys]
        problems.extend(
            f"{key_path(s.key, [])}: is stored in plain text in the stack file; set it with "
            f"{set_secret_command(s)} so it is encrypted"
            for s in plaintext
        )
    if problems:
        problems = _one_per_secret(problems)
        # Only what has the shape of a config key name counts as one: a secret value typed where
        # a key name belongs (secret_env: {JWT_SECRET: "postgres://user:pw@..."}) stays masked.
        names = {n for n in {str(k) for k in raw} | set(needed or ())
                 if _KEY_NAME.fullmatch(n) and not secret_value_kind(n)}
        raise ConfigError(_scrub(_dedupe(problems), values, names))
    return StackConfig(environment=environment, products=products, product_configs=product_configs)


STACK_SECRET_PREFIXES = ("alerts_", "ssh_")
"""Secrets of the whole stack rather than a product: the Slack webhook, the SSH CA."""

_KEY_FORMATS = {"openssh_private_key": "the deploy user's key",
                "ssh_ca_private_key": "the SSH certificate authority's key"}


def _reused_keys(raw: Mapping[str, Any], needed: Mapping[str, SecretKey]) -> list[str]:
    """The SSH CA's key must not also be a deploy key: whoever holds a product's deploy key
    could then sign certificates for every host of the stack."""
    ca = raw.get(SSH_CA_SECRET)
    if not isinstance(ca, str) or not ca.strip() or _offline_placeholder(ca):
        return []
    return [f"{key_path(SSH_CA_SECRET, [])}: is the same key as {CONFIG_NAMESPACE}:{s.key} (value "
            f"not shown); the certificate authority needs a key of its own (`ssh-keygen -t ed25519 "
            f"-N '' -f ca`), or a deploy key could sign logins to every host"
            for s in needed.values()
            if s.format == "openssh_private_key" or s.key.endswith("_ssh_private_key")
            if isinstance(raw.get(s.key), str) and raw[s.key].strip() == ca.strip()]


def set_secret_command(secret: SecretKey) -> str:
    """The command that sets ``secret`` without the value on a command line (where it would land
    in the shell history and the process list): a multi-line value (a private key, a Docker
    ``config.json``) from its file on standard input, any other at pulumi's prompt (``pulumi
    config set`` reads the value from standard input when none is given)."""
    command = f"pulumi config set --secret {CONFIG_NAMESPACE}:{secret.key}"
    if secret.format in _KEY_FORMATS or secret.key.endswith("_ssh_private_key"):
        return f"`{command} < KEY_FILE`"
    if secret.key.endswith("_registry_auth"):
        return f"`{command} < config.json`"
    return f"`{command}` (it prompts for the value)"


def _offline_placeholder(value: str) -> bool:
    """A placeholder that only the offline synth fills in for a secret (synth/stackfile.py);
    a real deploy never accepts one."""
    if not OFFLINE_SYNTH.get():
        return False
    return value.startswith(f"{PLACEHOLDER_SECRET}:")


def describe_value(value: Any) -> str:
    return show(value)


def _required_secrets(environment: Any, views: Mapping[str, Any], products: list[str]
                      ) -> dict[str, SecretKey] | None:
    """Every secret key the stack asks for, by key; None when a section is too broken to tell."""
    needed: dict[str, SecretKey] = {}
    if environment is not None:
        needed[SSH_CA_SECRET] = ssh_ca_secret()
    try:
        if environment is not None and environment.alerts.slack_channel:
            needed["alerts_slack_webhook_url"] = SecretKey(
                key="alerts_slack_webhook_url", description="Slack incoming-webhook URL for alerts")
    except (rules.Skip, AttributeError):
        return None
    registry = PRODUCTS
    for name in products:
        if name not in views:
            return None
        try:
            for secret in registry[name].required_secrets(views[name]):
                needed.setdefault(secret.key, secret)
        except (rules.Skip, AttributeError, TypeError):
            return None
    return needed


def _unknown_secret_keys(raw: Mapping[str, Any], needed: dict[str, SecretKey] | None,
                         registry: Mapping[str, Any], products: list[str]) -> list[str]:
    """A secret key no product asks for is a typo or a leftover: the real one stays unset."""
    if needed is None:
        return []
    problems = []
    prefixes = tuple(p.secret_prefix for p in registry.values()) + STACK_SECRET_PREFIXES
    # Secrets a product reads when set, without needing them (GHCR logins).
    optional = {registry_secret_key(p) for p in products}
    for key in sorted(k for k in raw if str(k).startswith(prefixes) and k not in registry):
        if key in needed or key in optional:
            continue
        close = difflib.get_close_matches(key, sorted(needed), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(f"{key_path(key, [])}: no product of this stack asks for this secret "
                        f"(the secrets it needs: {', '.join(sorted(needed)) or 'none'}){hint}; "
                        f"remove it with `pulumi config rm {CONFIG_NAMESPACE}:{key}`")
    return problems


PROVIDER_CREDENTIAL_KEYS = frozenset({
    "digitalocean:token", "digitalocean:spacesAccessId", "digitalocean:spacesSecretKey",
    "cloudflare:apiToken", "cloudflare:apiKey", "cloudflare:apiUserServiceKey",
    "docker:registryAuth", "command:password", "command:privateKey"})
"""Provider config keys that hold a credential (the providers' schemas mark them secret:
``pulumi-digitalocean``'s token and Spaces keys, ``pulumi-cloudflare``'s API token and keys)."""


def provider_config_problems(plain: Mapping[str, Any]) -> list[str]:
    """Credentials in plain text outside the ``platform`` namespace: a provider's credential key
    (:data:`PROVIDER_CREDENTIAL_KEYS`, or a key whose name says secret) set without
    ``--secret``, or any plain value that looks like a secret. ``plain``: full key -> value of
    the keys that are not secret. The value is never quoted."""
    problems = []
    for key in sorted(plain, key=str):
        value = plain[key]
        name = str(key).partition(":")[2]
        if key in PROVIDER_CREDENTIAL_KEYS or looks_secret_name(name):
            kind = "a credential"
        else:
            kind = secret_value_kind(str(value)) if value is not None else None
        if kind:
            problems.append(f"{key}: holds {kind} in plain text (value not shown); store it with "
                            f"`pulumi config set --secret {key}` (or the provider's environment "
                            "variable), so the stack file holds only its ciphertext")
    return problems


def read_pulumi_config() -> StackConfig:
    """Collect every ``platform:*`` key the engine knows about and validate them together;
    provider credentials in plain text are refused with them. Raises ConfigError."""
    raw, secret_names = platform_config()
    leaks = provider_config_problems(plain_other_config())
    try:
        config = validate_stack_config(raw, secret_names, stack=pulumi.get_stack())
    except ConfigError as exc:
        raise ConfigError(leaks + exc.problems) from None
    if leaks:
        raise ConfigError(leaks)
    return config
