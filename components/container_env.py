"""The plain environment of a container (``ContainerSpec.env``) as the config boundary checks
it: valid names, a size execve takes, no switch that turns TLS off, no secret by its name."""

from __future__ import annotations

import re

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

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


_TLS_OFF_IN_VALUE = re.compile(r"\b(sslmode=(?:disable|allow|prefer)|(?:tls|ssl)=false|"
                               r"tls(?:Insecure|AllowInvalidCertificates|AllowInvalidHostnames)=true)\b",
                               re.IGNORECASE)
_TLS_OFF_BY_NAME = {"NODE_TLS_REJECT_UNAUTHORIZED": ("0",), "PGSSLMODE": ("disable", "allow", "prefer")}


def tls_switched_off(name: str, value: str) -> str | None:
    """The setting by which env var ``name=value`` turns TLS or certificate verification off
    (``sslmode=disable``, ``tls=false``, ``NODE_TLS_REJECT_UNAUTHORIZED=0``...), or None. The
    same list as the policy pack's platform-connection-disallow-tls-disabled (CWE-295, CWE-319):
    libpq's allow/prefer fall back to plain text, so only require/verify-* keep TLS."""
    if value.strip().lower() in _TLS_OFF_BY_NAME.get(name, ()):
        return f"{name}={value.strip()}"
    match = _TLS_OFF_IN_VALUE.search(value)
    return match.group(1) if match else None


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Plain env: valid names, each ``NAME=value`` shorter than ``ENV_STRING_MAX_BYTES``, none
    that switches TLS off (``tls_switched_off``) and none that holds a secret by its name.

    Raises ValueError for a bad name, and a ValidationError located at each secret-looking
    variable (pydantic nests it under the field: ``...env.API_TOKEN``); the value is never
    quoted."""
    check_env_names(env)
    too_long = sorted(k for k, v in env.items() if len(f"{k}={v}".encode()) >= ENV_STRING_MAX_BYTES)
    if too_long:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", f"NAME=value is longer than "
                             f"{ENV_STRING_MAX_BYTES - 1} bytes, more than Linux lets one environment "
                             "string be (MAX_ARG_STRLEN, execve fails with E2BIG); put the data in a file"),
                             loc=(key,), input="[value not shown]")
            for key in too_long])
    tls_off = {k: off for k, v in env.items() if (off := tls_switched_off(k, v))}
    if tls_off:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", f"{off} switches TLS or certificate verification "
                             "off; remove it and verify the server with the CA the program mounts "
                             "(sslmode=verify-full, tls=true)"), loc=(key,), input="[value not shown]")
            for key, off in sorted(tls_off.items())])
    secret_like = sorted(k for k in env if looks_secret_name(k))
    if secret_like:
        raise ValidationError.from_exception_data("env", [
            InitErrorDetails(type=PydanticCustomError("rule", SECRET_ENV_NAME), loc=(key,),
                             input="[value not shown]")
            for key in secret_like])
    return env
