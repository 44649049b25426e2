"""The plain environment of a container (``ContainerSpec.env``) as the config boundary checks
it: valid names, a size execve takes, no switch that turns TLS off, no secret by its name."""

from __future__ import annotations

import re
from typing import Mapping

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from validation.connections import (TLS_OFF_FIX, TLS_OFF_IN_TEXT, assignments, insecure_client, is_local_host, postgres_settings,
                                    simple_commands, tls_setting_shown, tls_switch_off)
from validation.formats import looks_secret_name

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    """``env`` unchanged when every name matches ``ENV_NAME``; ValueError naming the others."""
    bad = sorted(k for k in env if not re.match(ENV_NAME, k))
    if bad:
        raise ValueError(f"{', '.join(bad)}: environment variable names are letters, digits and _, "
                         "not starting with a digit")
    return env


SECRET_ENV_NAME = ("the name says it holds a secret, and env is plain text in the stack file; move it "
                   "to secret_env (the variable -> a secret config key set with `pulumi config set "
                   "--secret platform:<product>_<name>`, which prompts for the value)")
"""The fix for a plain env var named like a secret (``looks_secret_name``: ``DB_PASS``,
``SENTRY_DSN``...). No braces: it is a pydantic message template."""


ENV_STRING_MAX_BYTES = 32 * 4096
"""Linux's MAX_ARG_STRLEN (include/uapi/linux/binfmts.h: 32 pages, the terminating NUL
included): the longest one ``NAME=value`` string execve takes, so the longest env var a
container's process can start with."""

ENV_TOTAL_MAX_BYTES = 1024 * 1024
"""The most a container's plain ``env`` may total, counted as execve counts its strings: each
``NAME=value`` and its terminating NUL. execve(2), "Limits on size of arguments and
environment": argv and envp together may take a quarter of the stack limit (ARG_MAX: 2 MiB
under the usual 8 MiB RLIMIT_STACK, which Docker's containers inherit), else E2BIG. Half of
that is left for what also counts against it and the stack file does not show: the command
and entrypoint, the image's own ENV, the secret_env values and the variables the program adds
(a DATABASE_URL, CA paths), and the pointers to every string."""

ENV_STRING_TOO_LONG = (f"NAME=value is longer than {ENV_STRING_MAX_BYTES - 1} bytes, more than Linux lets one "
                       "environment string be (MAX_ARG_STRLEN, execve fails with E2BIG); put the data in a file")


def _env_bytes(name: str, value: str) -> int:
    """The bytes ``NAME=value`` takes in a process's environment, its terminating NUL included."""
    # surrogatepass: pydantic refuses a lone surrogate (a YAML "\ud800" escape) as no valid string.
    return len(f"{name}={value}".encode("utf-8", "surrogatepass")) + 1


def env_size_problems(env: Mapping[str, str]) -> list[tuple[tuple[str, ...], str]]:
    """``(loc, message)`` for each ``NAME=value`` over ``ENV_STRING_MAX_BYTES`` (loc
    ``(NAME,)``), or, when none is, one for the whole map (loc ``()``) when it totals more than
    ``ENV_TOTAL_MAX_BYTES``; empty when the sizes fit. Lengths only: the stack file's first
    check (``stacks.value_checks.size_problems``) runs it before anything parses a value."""
    sizes = {name: _env_bytes(name, value) for name, value in env.items()}
    too_long = sorted(name for name, size in sizes.items() if size > ENV_STRING_MAX_BYTES)
    if too_long:
        return [((name,), ENV_STRING_TOO_LONG) for name in too_long]
    total = sum(sizes.values())
    if total > ENV_TOTAL_MAX_BYTES:
        return [((), f"the variables total {total:,} bytes (each NAME=value and its NUL), more than the "
                     f"{ENV_TOTAL_MAX_BYTES:,} a container's plain environment may take: execve fails with E2BIG "
                     "past ARG_MAX (2 MiB under the usual 8 MiB stack limit, execve(2)), which the command, the "
                     "image's own variables and the secrets share; put the data in a file")]
    return []


def tls_switched_off(name: str, value: str) -> str | None:
    """The setting by which env var ``name=value`` turns TLS or certificate verification off, or
    None: in the value (``sslmode=disable``, ``tls=false``, ``tlsInsecure=true``), or by the
    variable itself: a libpq sslmode other than verify-full (``PGSSLMODE=require``, or
    ``no-verify``, which node-postgres reads as "skip verification"), a switch that keeps TLS on
    set to anything but a true word, or one that turns it off set to anything but a false word,
    ``PYTHONHTTPSVERIFY=0`` (PEP 493), ``GIT_SSL_NO_VERIFY`` with any value (git reads only
    whether it is set), ``NODE_TLS_REJECT_UNAUTHORIZED=0``, and the ``DATABASE_SSL=false`` and
    ``*_INSECURE=true`` kinds of switch, and a Postgres URL or ``keyword=value`` string to another
    host whose sslmode is below verify-full (``_weak_postgres``). The same list as the policy pack's
    platform-connection-disallow-tls-disabled (CWE-295, CWE-319)."""
    if tls_switch_off(name, value):
        return tls_setting_shown(name, value)
    match = TLS_OFF_IN_TEXT.search(value)
    if match:
        return match.group(1) or match.group(2)
    return _weak_postgres(value)


def _weak_postgres(value: str) -> str | None:
    """The sslmode of a Postgres URL or ``keyword=value`` string (``validation.connections.
    postgres_settings``) below verify-full when a host leaves the machine (any of several hosts;
    the ``host`` query parameter counts), or None. No sslmode is libpq's default, prefer."""
    settings = postgres_settings(value.strip())
    if settings is None or all(is_local_host(h) for h in settings["hosts"]) \
            or settings["sslmode"] == "verify-full":
        return None
    return f"sslmode={settings['sslmode'] or 'prefer (libpq default)'}"


def command_tls_off(command: str | list[str]) -> str | None:
    """The setting by which a command (a shell string such as a ``run_command``, or an exec-form
    list such as a healthcheck's) turns TLS verification off, or None: curl ``-k``/``--insecure``
    or ``--no-check-certificate`` (``validation.connections.insecure_client``, inside ``sh -c``
    too), or a ``NAME=value`` assignment ``tls_switched_off`` refuses in env."""
    for words in simple_commands(command):
        if insecure_client(words):
            return "curl -k (--insecure) or --no-check-certificate"
        for name, value in assignments(words):
            if (off := tls_switched_off(name, value)) is not None:
                return off
    return None


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Plain env: valid names, sizes execve takes (``env_size_problems``: each ``NAME=value`` and
    its NUL at most ``ENV_STRING_MAX_BYTES``, all of them at most ``ENV_TOTAL_MAX_BYTES``), none
    that switches TLS off (``tls_switched_off``) and none that holds a secret by its name.

    Raises ValueError for a bad name, and a ValidationError located at each variable too long,
    that switches TLS off or is named like a secret (pydantic nests it under the field:
    ``...env.API_TOKEN``), or at ``env`` itself for too big a total; the value is never quoted.
    The sizes are checked first, so no parser reads a value execve would refuse anyway."""
    check_env_names(env)
    sized = env_size_problems(env)
    if sized:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", message), loc=loc, input="[value not shown]")
            for loc, message in sized])
    tls_off = {k: off for k, v in env.items() if (off := tls_switched_off(k, v))}
    if tls_off:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", f"{off} {TLS_OFF_FIX}"), loc=(key,),
                             input="[value not shown]")
            for key, off in sorted(tls_off.items())])
    secret_like = sorted(k for k in env if looks_secret_name(k))
    if secret_like:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", SECRET_ENV_NAME), loc=(key,),
                             input="[value not shown]")
            for key in secret_like])
    return env
