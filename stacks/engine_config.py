"""The stack's ``platform:*`` config as the engine hands it to the program: every key, with its
value as delivered (strings; objects and lists as JSON text), and which keys are secret.

Validation needs every key, to name the unknown ones (a typo leaves the real key unset), and
``pulumi.Config`` only answers for a key the program already knows. So this is the one module
that reads the SDK's config store itself: ``pulumi.runtime.config.CONFIG``, the map that the
language host (or the offline synth, through the public ``set_all_config``) fills, and
``PULUMI_CONFIG``, the environment variable form. Secret keys come from the public
``is_config_secret`` and ``get_config_secret_keys_env``. ``tests/test_layering.py`` fails when
an SDK upgrade changes the store, and no other module may read it.
"""

from __future__ import annotations

from typing import Any

from pulumi.runtime import config as runtime_config

from stacks.errors import CONFIG_NAMESPACE

PREFIX = f"{CONFIG_NAMESPACE}:"


def _all_config() -> dict[str, Any]:
    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def _is_secret(full_key: str) -> bool:
    return runtime_config.is_config_secret(full_key) or full_key in runtime_config.get_config_secret_keys_env()


def platform_config() -> tuple[dict[str, Any], set[str]]:
    """Every ``platform:*`` key (without the namespace) with its value, and the keys among them
    that are secret."""
    merged = _all_config()
    raw = {k[len(PREFIX):]: v for k, v in merged.items() if k.startswith(PREFIX)}
    secret = {k[len(PREFIX):] for k in set(merged) | set(runtime_config.get_config_secret_keys_env())
              if k.startswith(PREFIX) and _is_secret(k)}
    return raw, secret


def plain_platform_config() -> dict[str, Any]:
    """The ``platform:*`` keys that are not secret, with their values: what may be quoted in a
    message (secret values are never read here)."""
    merged = _all_config()
    return {k[len(PREFIX):]: v for k, v in merged.items() if k.startswith(PREFIX) and not _is_secret(k)}


def other_config_keys() -> set[str]:
    """Every key of the other namespaces (``digitalocean:token``, ``pulumi:template``), secret or
    not, by full key: the config boundary refuses a namespace the program does not read."""
    return {k for k in set(_all_config()) | set(runtime_config.get_config_secret_keys_env())
            if not k.startswith(PREFIX)}


def plain_other_config() -> dict[str, Any]:
    """The keys of every other namespace (providers' ``digitalocean:token``,
    ``cloudflare:apiToken``, ...) that are not secret, by full key, with their values: the
    config boundary refuses a credential among them."""
    merged = _all_config()
    return {k: v for k, v in merged.items() if not k.startswith(PREFIX) and not _is_secret(k)}
