"""The plain environment of a container (``ContainerSpec.env``) as the config boundary checks
it: valid names, a size execve takes, no switch that turns TLS off, no secret by its name."""

from __future__ import annotations

import re
from typing import Mapping

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from validation.connections import (NODE_TLS_AMBIGUOUS, TLS_OFF_FIX, TLS_OFF_IN_TEXT, assignments, insecure_client,
                                    simple_commands, tls_setting_shown, tls_switch_ambiguous, tls_switch_off)
from validation.conninfo import is_local_host, postgres_settings
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
"""The most a container's environment may total, counted as execve counts its strings: each
``NAME=value`` and its terminating NUL. execve(2), "Limits on size of arguments and
environment": argv and envp together may take a quarter of the stack limit (ARG_MAX: 2 MiB
under the usual 8 MiB RLIMIT_STACK, which Docker's containers inherit), else E2BIG. Counted:
everything the container receives that is known before deploying, its plain ``env``, its
``secret_env`` values (from the stack's secret config) and the variables the program adds (fixed
values, generated passwords by their length: ``stacks.env_totals``). Half of ARG_MAX is left for
what is not known then: the command and entrypoint, the image's own ENV, the values that exist
only once a resource does (a bucket's keys, a managed cluster's URI) and the pointers to every
string."""

ENV_STRING_TOO_LONG = (f"NAME=value is longer than {ENV_STRING_MAX_BYTES - 1} bytes, more than Linux lets one "
                       "environment string be (MAX_ARG_STRLEN, execve fails with E2BIG); put the data in a file")


def env_bytes(name: str, value_bytes: int) -> int:
    """The bytes ``NAME=value`` takes in a process's environment, its terminating NUL included,
    for a value of ``value_bytes`` bytes."""
    return len(name.encode("utf-8", "surrogatepass")) + 1 + value_bytes + 1


def utf8_bytes(text: str) -> int:
    """The length of ``text`` in UTF-8 bytes."""
    # surrogatepass: pydantic refuses a lone surrogate (a YAML "\ud800" escape) as no valid string.
    return len(text.encode("utf-8", "surrogatepass"))


def env_total_problem(sizes: Mapping[str, int], container: str | None = None) -> str | None:
    """The message for a container whose variables (``sizes``: name -> bytes of ``NAME=value``
    and its NUL, ``env_bytes``) total more than ``ENV_TOTAL_MAX_BYTES``, naming the container and
    the three biggest by name and size (never a value); None when they fit."""
    total = sum(sizes.values())
    if total <= ENV_TOTAL_MAX_BYTES:
        return None
    biggest = ", ".join(f"{name} ({size:,} bytes)" for name, size in
                        sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:3])
    whose = f"container {container}" if container else "the container"
    return (f"the variables total {total:,} bytes (each NAME=value and its NUL), more than the {ENV_TOTAL_MAX_BYTES:,} "
            f"a container's environment may take: {whose} receives its env, its secret_env values and the variables "
            f"the program sets, the biggest: {biggest}; execve fails with E2BIG past ARG_MAX (2 MiB under the usual "
            "8 MiB stack limit, execve(2)), which the command and the image's own variables share; put the data in a file")


def env_size_problems(env: Mapping[str, str], secret_sizes: Mapping[str, int] | None = None,
                      container: str | None = None) -> list[tuple[tuple[str, ...], str]]:
    """``(loc, message)`` for each ``NAME=value`` over ``ENV_STRING_MAX_BYTES`` (loc
    ``(NAME,)``), or, when none is, one for the whole map (loc ``()``) when it and
    ``secret_sizes`` (the container's other variables, by name: ``env_bytes`` of its secret_env
    values) total more than ``ENV_TOTAL_MAX_BYTES`` (``env_total_problem``); empty when the sizes
    fit. Lengths only: the stack file's first check (``stacks.value_checks.size_problems``) runs
    it before anything parses a value."""
    sizes = {name: env_bytes(name, utf8_bytes(value)) for name, value in env.items()}
    too_long = sorted(name for name, size in sizes.items() if size > ENV_STRING_MAX_BYTES)
    if too_long:
        return [((name,), ENV_STRING_TOO_LONG) for name in too_long]
    problem = env_total_problem({**(secret_sizes or {}), **sizes}, container)
    return [] if problem is None else [((), problem)]


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
    """The sslmode of a Postgres URL or ``keyword=value`` string (``validation.conninfo.
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


def command_tls_ambiguous(command: str | list[str]) -> str | None:
    """The ``NAME=value`` assignment of a command that sets a TLS switch to a value the program
    does not read as either on or off (``validation.connections.tls_switch_ambiguous``:
    ``NODE_TLS_REJECT_UNAUTHORIZED=false``), as a message shows it, or None."""
    for words in simple_commands(command):
        for name, value in assignments(words):
            if tls_switch_ambiguous(name, value):
                return tls_setting_shown(name, value)
    return None


def _tls_problem(name: str, value: str) -> str | None:
    """The message for env var ``name=value`` that switches TLS off (``tls_switched_off``) or is
    ambiguous (``tls_switch_ambiguous``), or None."""
    if (off := tls_switched_off(name, value)) is not None:
        return f"{off} {TLS_OFF_FIX}"
    return f"{tls_setting_shown(name, value)} {NODE_TLS_AMBIGUOUS}" if tls_switch_ambiguous(name, value) else None


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Plain env: valid names, sizes execve takes (``env_size_problems``: each ``NAME=value`` and
    its NUL at most ``ENV_STRING_MAX_BYTES``, all of them at most ``ENV_TOTAL_MAX_BYTES``), none
    that switches TLS off (``tls_switched_off``) or is ambiguous (``NODE_TLS_REJECT_UNAUTHORIZED``
    other than 0 or 1) and none that holds a secret by its name.

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
    tls_off = {k: problem for k, v in env.items() if (problem := _tls_problem(k, v))}
    if tls_off:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", problem), loc=(key,), input="[value not shown]")
            for key, problem in sorted(tls_off.items())])
    secret_like = sorted(k for k in env if looks_secret_name(k))
    if secret_like:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", SECRET_ENV_NAME), loc=(key,),
                             input="[value not shown]")
            for key in secret_like])
    return env
