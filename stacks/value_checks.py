"""Checks on a stack file's values as text, whatever their key: sizes (first, before anything
parses a value), control characters, the host files' heredoc marker, secrets typed into plain
config (and provider credentials set without ``--secret``), and the last guard that keeps
secret values out of every message."""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Iterator, Mapping

from components import wireguard
from components.container_env import (ENV_STRING_MAX_BYTES, command_tls_ambiguous, command_tls_off, env_bytes,
                                      env_size_problems, utf8_bytes)
from components.hostsetup.delivery import HEREDOC_MARKER
from stacks.errors import CONFIG_NAMESPACE, key_path, shown_key
from stacks.provider_keys import ENGINE_KEYS, provider_keys
from validation.connections import NODE_TLS_AMBIGUOUS, TLS_OFF_FIX, argument_credential, command_credential
from validation.formats import control_characters, looks_secret_name, secret_parts, secret_value_kind


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


STRING_MAX_BYTES = ENV_STRING_MAX_BYTES - 1
"""The longest string (a value or a key) a stack file's config may hold, in UTF-8 bytes:
Linux's MAX_ARG_STRLEN less the terminating NUL, the longest one argument, ``sh -c`` script or
environment string a program can start with. Every string of the config ends up as one of
those or as something far shorter (a name, a hostname, a reason); the committed stack files'
longest is 195 bytes."""


def _secret_env_sizes(container: Mapping, secrets: Mapping[str, Any]) -> dict[str, int]:
    """``env_bytes`` of each ``secret_env`` variable of a container whose secret config value is
    known (``secrets``: key without the namespace -> value, a string when it is known)."""
    secret_env = container.get("secret_env")
    if not isinstance(secret_env, Mapping):
        return {}
    return {name: env_bytes(name, utf8_bytes(secrets[key])) for name, key in secret_env.items()
            if isinstance(name, str) and isinstance(key, str) and isinstance(secrets.get(key), str)}


def _oversized(value: Any, loc: tuple = (), secrets: Mapping[str, Any] = {}) -> Iterator[tuple[tuple, str]]:
    too_big = (f"more than the {STRING_MAX_BYTES:,} a config string may be (Linux's MAX_ARG_STRLEN, the longest "
               "one argument or environment string a program can start with); shorten it or put the data in a file")
    if isinstance(value, Mapping):
        fits = {}
        for key, item in value.items():
            if isinstance(key, str) and utf8_bytes(key) > STRING_MAX_BYTES:
                yield loc, f"has a key of {utf8_bytes(key):,} bytes, {too_big}"
            else:
                fits[key] = item
        if isinstance(fits.get("env"), Mapping):
            env = {k: v for k, v in fits["env"].items() if isinstance(k, str) and isinstance(v, str)
                   and utf8_bytes(k) <= STRING_MAX_BYTES}
            name = fits.get("name") if isinstance(fits.get("name"), str) else None
            yield from ((loc + ("env",) + at, message) for at, message in
                        env_size_problems(env, _secret_env_sizes(fits, secrets), shown_key(name) if name else None))
        env = {k: v for k, v in fits.items() if isinstance(k, str) and isinstance(v, str)} \
            if loc and loc[-1] == "env" else {}
        for key, item in fits.items():
            if key not in env:
                yield from _oversized(item, loc + (key,), secrets)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _oversized(item, loc + (index,), secrets)
    elif isinstance(value, str) and utf8_bytes(value) > STRING_MAX_BYTES:
        yield loc, f"is {utf8_bytes(value):,} bytes, {too_big}"


def size_problems(top: str, value: Any, document: Any, secrets: Mapping[str, Any] = {}) -> list[str]:
    """What is too big in a top-level key's parsed value, by lengths alone, at each key path:
    a string or a key over ``STRING_MAX_BYTES``, an ``env`` map over
    ``components.container_env.env_size_problems`` (one ``NAME=value`` over MAX_ARG_STRLEN, or
    the container's env and its ``secret_env`` values, from ``secrets`` (the stack's secret keys
    without the namespace, a value a string when known), too big a total).

    The first check of a stack file's values: the text checks parse strings and the models and
    rules run regexes over them, so a section with any problem here is checked no further
    (``stacks.config.validate_stack_config``). The variables the program adds are counted once
    the config is valid (``stacks.env_totals``)."""
    return [f"{key_path(top, loc, document)}: {message}" for loc, message in _oversized(value, (), secrets)]


def string_problems(top: str, value: Any, document: Any) -> list[str]:
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
                            "the files the program writes on hosts (components/hostsetup/delivery.py); remove it")
        if (len(loc) >= 2 and loc[-2] == "secret_env") or (loc and loc[-1] is text):
            continue
        if loc and loc[-1] == PUBLIC_KEY_FIELD and wireguard.key_problem(text) is None:
            continue
        kind = secret_value_kind(text)
        if kind:
            problems.append(f"{key_path(top, loc, document)}: {_plain_secret_fix(top, loc, text, kind)}")
    return problems + command_problems(top, value, (), document)


PASSWORD_IN_COMMAND_FIX = ("passes a password in plain text (value not shown), where the stack file, `ps` and "
                           "`docker inspect` show it; store it with `pulumi config set --secret "
                           f"{CONFIG_NAMESPACE}:<product>_<name>` (it prompts for the value), list it under "
                           "secret_env and reference the variable (\"$NAME\", or a file under /run/secrets)")


def _command_problem(command: str | list[str]) -> str | None:
    """What is wrong with one command: TLS switched off (``command_tls_off``), a TLS switch set
    to a value read as neither on nor off (``command_tls_ambiguous``) or a literal secret
    (``validation.connections.command_credential``); None when nothing is."""
    if (off := command_tls_off(command)) is not None:
        return f"{off} {TLS_OFF_FIX}"
    if (ambiguous := command_tls_ambiguous(command)) is not None:
        return f"{ambiguous} {NODE_TLS_AMBIGUOUS}"
    if (spelling := command_credential(command)) is not None:
        return f"{spelling} {PASSWORD_IN_COMMAND_FIX}"
    return None


def command_problems(top: str, value: Any, loc: tuple = (), document: Any = None) -> list[str]:
    """TLS switched off or a literal password in a command (``_command_problem``): every list of
    strings (an exec-form command such as ``healthcheck.command`` or an ``entrypoint``) and every
    string under a key that ends in ``command`` (``run_command``), at its key path; and a
    password option in an ``env`` value that is an argument string (``REDIS_ARGS: "--requirepass
    X"``, ``validation.connections.argument_credential``)."""
    document = value if document is None else document
    found = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, str) and str(key).endswith("command"):
                if (problem := _command_problem(item)) is not None:
                    found.append((loc + (key,), problem))
            elif key == "env" and isinstance(item, Mapping):
                found += [(loc + (key, name), f"{spelling} {PASSWORD_IN_COMMAND_FIX}")
                          for name, text in item.items()
                          if isinstance(text, str) and (spelling := argument_credential(text)) is not None]
            else:
                found += [(None, p) for p in command_problems(top, item, loc + (key,), document)]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if (problem := _command_problem(list(value))) is not None:
            found.append((loc, problem))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += [(None, p) for p in command_problems(top, item, loc + (index,), document)]
    return [p if at is None else f"{key_path(top, at, document)}: {p}" for at, p in found]


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


KEY_NAME = re.compile(r"[a-z][a-z0-9_]{2,62}")


def scrub_secrets(problems: list[str], values: Mapping[str, Any], key_names: set[str] = frozenset()) -> list[str]:
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


def one_message_per_secret(problems: list[str]) -> list[str]:
    """One message per mistake: where a value was found to hold a secret (``holds ...``), the
    field's own "not a valid value here" for the same masked value adds nothing, so it goes."""
    held = {p.partition(": ")[0] for p in problems if p.partition(": ")[2].startswith("holds ")}
    return [p for p in problems
            if not (p.partition(": ")[0] in held and "looks like a secret (not shown)" in p)]


PROVIDER_CREDENTIAL_KEYS = frozenset({
    "digitalocean:token", "digitalocean:spacesAccessId", "digitalocean:spacesSecretKey",
    "cloudflare:apiToken", "cloudflare:apiKey", "cloudflare:apiUserServiceKey",
    "docker:registryAuth", "command:password", "command:privateKey"})
"""Provider config keys that hold a credential (the providers' schemas mark them secret:
``pulumi-digitalocean``'s token and Spaces keys, ``pulumi-cloudflare``'s API token and keys)."""


PROVIDER_NAMESPACES = ("digitalocean", "cloudflare", "docker", "command", "random", "tls", "minio")
"""The config namespaces of the providers the program uses: each ``pulumi-<name>`` package of
requirements.txt, whose provider reads ``<name>:*`` keys (``digitalocean:token``,
``cloudflare:apiToken``)."""

CONFIG_NAMESPACES = (CONFIG_NAMESPACE, "pulumi", *PROVIDER_NAMESPACES)
"""Every namespace a stack's config may use: the program's own, Pulumi's (``pulumi:template``,
``pulumi:disable-default-providers``) and the providers'. Pulumi takes a key of any namespace
and hands it to the program, so a misspelled one (``platfrom:kro``) would be read by nothing."""


def meant_key(key: str) -> str | None:
    """The key ``key`` likely meant when its namespace is none of ``CONFIG_NAMESPACES`` but close
    to one (``platfrom:kro`` -> ``platform:kro``), else None."""
    namespace, _, name = key.partition(":")
    if namespace in CONFIG_NAMESPACES:
        return None
    close = difflib.get_close_matches(namespace, CONFIG_NAMESPACES, n=1)
    return f"{close[0]}:{name}" if close else None


def _provider_key_problem(key: str) -> str | None:
    """What is wrong with a key of a provider's namespace that the provider does not read
    (``stacks.provider_keys``: the keys of its installed SDK, and the engine's ``version`` and
    ``pluginDownloadURL``), with the key it was likely meant to be; None for a key it reads."""
    namespace, _, name = key.partition(":")
    known = provider_keys(namespace)
    if known is None or name in known or name in ENGINE_KEYS:
        return None
    close = [k for k in sorted(known) if k.lower() == name.lower()] or \
        difflib.get_close_matches(name, sorted(known), n=1)
    fix = f"did you mean {namespace}:{close[0]}?" if close else \
        f"rename it, or remove it with `pulumi config rm {shown_key(key)}`"
    reads = f"pulumi_{namespace}/config/vars.py reads {', '.join(sorted(known))}" if known else \
        f"pulumi_{namespace} has no config module: the provider takes no settings"
    return (f"{shown_key(key)}: unknown {namespace} provider key {shown_key(name)!r}, so nothing reads it "
            f"(the installed SDK's {reads}); {fix}")


def namespace_problems(keys: Iterable[str]) -> list[str]:
    """A config key (``namespace:name``, any but the ``platform:`` ones) whose namespace is none
    of ``CONFIG_NAMESPACES``, named with the key it was likely meant to be (``meant_key``), and
    a key of a provider's namespace that its provider does not read (``digitalocean:tokne``,
    ``_provider_key_problem``). Names only, never a value."""
    problems = []
    for key in sorted(keys, key=str):
        namespace = str(key).partition(":")[0]
        if namespace in PROVIDER_NAMESPACES:
            if (problem := _provider_key_problem(str(key))) is not None:
                problems.append(problem)
            continue
        if namespace in CONFIG_NAMESPACES:
            continue
        meant = meant_key(str(key))
        hint = f"did you mean {shown_key(meant)}?" if meant else \
            f"rename it, or remove it with `pulumi config rm {shown_key(key)}`"
        problems.append(f"{shown_key(key)}: unknown config namespace {shown_key(namespace)!r}, so nothing reads "
                        f"this key (the stack's namespaces: {', '.join(CONFIG_NAMESPACES)}); {hint}")
    return problems


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
