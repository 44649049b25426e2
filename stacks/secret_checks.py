"""The secret config keys a stack needs (its products', the SSH CA's, the Slack webhook's) and
the problems of the ones it has: missing, plain text, unknown, malformed, or a deploy key reused
as the CA's; and the command that sets each without its value on a command line."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from stacks.secret_keys import SSH_CA_SECRET, registry_secret_key, ssh_ca_secret
from stacks.definition import SecretKey
from stacks.errors import CONFIG_NAMESPACE, key_path
from stacks.placeholders import OFFLINE_SYNTH, PLACEHOLDER_SECRET
from stacks.registry import PRODUCTS
from validation import rules
from validation.formats import openssh_key_problem


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
    ca_identity = _key_identity(ca)
    return [f"{key_path(SSH_CA_SECRET, [])}: is the same key as {CONFIG_NAMESPACE}:{s.key} (value "
            f"not shown); the certificate authority needs a key of its own (`ssh-keygen -t ed25519 "
            f"-N '' -f ca`), or a deploy key could sign logins to every host"
            for s in needed.values()
            if s.format == "openssh_private_key" or s.key.endswith("_ssh_private_key")
            if isinstance(raw.get(s.key), str) and _key_identity(raw[s.key]) == ca_identity]


def _key_identity(private_key: str) -> str:
    """What makes two private key files the same key: the OpenSSH public half. The file's text
    is not: every re-save (a new comment, ``ssh-keygen -p``) draws new random check bytes. A
    value that does not parse as an unencrypted OpenSSH key is compared by its text."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private_key.strip().encode() + b"\n", password=None)
        return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()
    except (ValueError, TypeError, UnicodeError):
        return private_key.strip()


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


def required_secret_keys(environment: Any, views: Mapping[str, Any], products: list[str]
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


def unknown_secret_keys(raw: Mapping[str, Any], needed: dict[str, SecretKey] | None,
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


def secret_problems(raw: Mapping[str, Any], needed: Mapping[str, SecretKey], secret_keys: set[str]) -> list[str]:
    """What is wrong with the secrets a stack needs (``needed``, by key) in ``raw``: each one
    missing, malformed (an SSH key, checked unless it is the offline synth's placeholder), reused
    as the CA's key, or stored in plain text (not in ``secret_keys``). No message holds a value."""
    problems: list[str] = []
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
    return problems
