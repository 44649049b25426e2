"""The plaintext-secrets policy: no input that looks like a secret (a password, token or key, a
private key, a URL with credentials) is plain text; masked secret leaves are left out."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from policy.parsers.commands import ENV_INPUTS, URL, commands
from policy.rules.base import (CRITICAL, MANDATORY, SECRET_MASK, T_APP, T_COMMAND, T_CONTAINER, T_DROPLET,
                               Case, resource_policy, walk_strings, DO)
from policy.rules.fixtures import container, doc, res
from policy.rules.paths import where
from validation.connections import argument_credential, password_argument, secret_assignments
from validation.conninfo import parse_conninfo
from validation.formats import KNOWN_TOKENS

# Names that say secret: the words anywhere, and the short suffixes (DB_PW, SMTP_PASS, X_KEY)
# as whole parts of the name; a public key is not one.
SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|access_?key|dsn|"
                         r"(?:^|_)(?:pw|pwd|pass)$|(?<!public)_key$)", re.IGNORECASE)
# A JSON Web Token (RFC 7519): three base64url parts, the first two JSON objects ("eyJ" is "{").
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
# The scheme is bounded so that a long value is searched in linear time.
# The user may be empty (Redis: redis://:password@host).
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]{0,31}://[^\s:/@]*:[^\s@/]+@", re.IGNORECASE)
# A whole value of 48+ hex digits with letters and digits (`openssl rand -hex 32`: a raw key);
# ids are shorter (32 for Cloudflare's, 40 for a git commit) and a digest carries sha256:.
HEX_KEY = re.compile(r"(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{48,}|(?=[0-9A-F]*[A-F])(?=[0-9A-F]*[0-9])[0-9A-F]{48,}")


def _hex_key(text: str) -> bool:
    """``text``, or the value of a ``NAME=value`` env entry, is a hex key of random digits."""
    value = text.split("=", 1)[1] if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", text) else text
    return bool(HEX_KEY.fullmatch(value.strip())) and len(set(value.strip().lower())) >= 10


JWT_EXAMPLE = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


def _password_in_query(text: str) -> bool:
    """A URL in ``text`` carries a password as a query parameter (libpq and most drivers take
    ``?password=``)."""
    for match in URL.finditer(text):
        try:
            query = parse_qs(urlsplit(match.group(0)).query)
        except ValueError:
            continue
        if any(v for k, values in query.items() if k.lower() in ("password", "pass", "pwd") for v in values):
            return True
    return False


def _conninfo_password(text: str) -> bool:
    """``text``, or the value of a ``NAME=value`` entry, is a libpq ``keyword=value`` string
    with a password."""
    return any((parse_conninfo(candidate) or {}).get("password") for candidate in (text, text.partition("=")[2]))


def _in_commands(checked, leaves):
    """Secrets the commands of the checked inputs spell out, judged as the config boundary judges
    them (``validation.connections.command_credential``'s parts): an assignment of a
    secret-looking name (``db_password=...``, quoting removed) and a password as an argument."""
    for path, words in commands(checked, keep_substitutions=True):
        if path in leaves:
            continue
        for name in secret_assignments(words, SECRET_MASK):
            yield f"{path} sets {name} in plain text; pass it as a secret"
        if (option := password_argument(words, SECRET_MASK)) is not None:
            yield (f"{path} passes a password on the command line ({option}); pass it as a secret "
                   "in the environment (REDISCLI_AUTH, MYSQL_PWD)")


def _declared_secret_envs_removed(spec):
    """The spec without the values App Platform stores encrypted (envs of type SECRET)."""
    def strip(value):
        if isinstance(value, dict):
            if value.get("type") == "SECRET" and "value" in value:
                return {k: v for k, v in value.items() if k != "value"}
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(_plain(spec))


def _plain(value):
    if hasattr(value, "items") and not isinstance(value, dict):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if not isinstance(value, str) and hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        return [_plain(v) for v in value]
    return value


def _check_plaintext_secrets(props, args):
    secret_inputs = getattr(args, "secret_inputs", None)
    if secret_inputs is None:
        args.not_applicable("the engine unwraps secrets before policies see them; "
                            "python -m synth STACK --policy checks this rule on every PR")
    # The capture masks each secret leaf ("[secret]"): an input that is secret only in some
    # entries (one env var of a list) has every other entry judged on its own.
    leaves = set(getattr(args, "secret_leaves", None) or ())
    checked = {}
    for key in props:
        if key not in secret_inputs:
            checked[key] = props[key]
        elif args.resource_type == T_APP and key == "spec":
            checked[key] = _declared_secret_envs_removed(props[key])
        elif key not in leaves and any(leaf.startswith((f"{key}[", f"{key}.")) for leaf in leaves):
            checked[key] = props[key]
    found = []
    for path, text in walk_strings(checked):
        if text == SECRET_MASK or path in leaves or path.startswith(tuple(f"{leaf}{sep}" for leaf in leaves
                                                                           for sep in "[.")):
            continue
        name = path.rsplit(".", 1)[-1]
        shown = where(checked, path)
        if "BEGIN" in text and "PRIVATE KEY" in text:
            found.append(f"{shown} holds a private key in plain text; pass it as a secret")
        elif URL_WITH_CREDENTIALS.search(text) or _password_in_query(text):
            found.append(f"{shown} holds a URL with credentials in plain text; pass it as a secret")
        elif _conninfo_password(text):
            found.append(f"{shown} holds a connection string with a password in plain text; pass it as a secret")
        elif KNOWN_TOKENS.search(text) or JWT.search(text):
            found.append(f"{shown} holds an API token in plain text; pass it as a secret")
        # A NAME=value string is an env entry; a script is judged by its shell words below.
        elif re.match(r"^[A-Za-z0-9_]+=.+", text) and SECRET_NAME.search(text.split("=", 1)[0]) \
                and (path.startswith(ENV_INPUTS) or not re.search(r"\s", text)):
            variable = text.split("=", 1)[0]
            # An environment list's item is shown with its name already: said once.
            found.append(f"{shown} is set in plain text; pass it as a secret" if shown == f"{path} ({variable})"
                         else f"{shown} sets {variable} in plain text; pass it as a secret")
        elif path.startswith(ENV_INPUTS) and (option := argument_credential(
                text.partition("=")[2] if path.startswith("envs[") else text, SECRET_MASK)) is not None:
            found.append(f"{shown} passes a password as an argument ({option}) in plain text; pass it as a secret")
        elif _hex_key(text) and not path.startswith("triggers"):
            found.append(f"{shown} holds a hex key in plain text; pass it as a secret")
        elif SECRET_NAME.search(name) and text and not path.startswith("triggers"):
            # A Command's inputs are scripts and connection settings (judged above), except its
            # environment map, whose keys are variable names.
            if (args.resource_type != T_COMMAND or path.startswith("environment.")) \
                    and not path.endswith(("Name", "name", "Id", "id")):
                found.append(f"{shown} looks like a secret and is plain text; pass it as a secret")
    judged = {f.split(" ", 1)[0] for f in found}
    found += [f for f in _in_commands(checked, leaves) if f.split(" ", 1)[0] not in judged]
    yield from dict.fromkeys(found)


resource_policy(
    "platform-resource-disallow-plaintext-secrets", "No input that looks like a secret (password, token, key, URL with credentials) is plain text.",
    level=MANDATORY, severity=CRITICAL, category="data",
    sources=["CWE-312", "Checkov CKV_SECRET_* (secrets scanning)", "Kredete secrets never plaintext"],
    fix="Pass the value as a Pulumi secret (config --secret or pulumi_random).",
    types=[T_CONTAINER, T_APP, T_COMMAND, T_DROPLET, "cloudflare:index/apiToken:ApiToken",
           DO + "spacesKey:SpacesKey", "minio:index/iamUser:IamUser"],
    check=_check_plaintext_secrets,
    cases=Case(doc(res(T_CONTAINER, "c", {"envs": "[secret]", "command": [
                       "sh", "-c", 'PGPASSWORD="$(cat /run/secrets/pg)" PGPASSFILE=/run/pgpass redis-cli -a "$REDISCLI_AUTH" ping']},
                       secret_inputs=["envs"]),
                   res(T_APP, "app", {"spec": {"services": [{"name": "api", "envs": [{"key": "JWT", "type": "SECRET", "value": "hunter2-very-secret"}]}]}},
                       secret_inputs=["spec"])),
               [(doc(container(envs=["DB_PASSWORD=hunter2", "URL=https://u:p@example.com/x"])),
                 ["envs[0] (DB_PASSWORD) is set in plain text; pass it as a secret",
                  "envs[1] (URL) holds a URL with credentials in plain text; pass it as a secret"]),
                (doc(container(envs=["SIGNING_SEED=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                                     "REDIS=redis://:pw@r:6379", "ACCOUNT=4f3e2d1c0b9a88776655443322110fed"])),
                 ["envs[0] (SIGNING_SEED) holds a hex key in plain text; pass it as a secret",
                  "envs[1] (REDIS) holds a URL with credentials in plain text; pass it as a secret"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"name": "api", "envs": [
                    {"key": "JWT", "type": "SECRET", "value": "x"}, {"key": "DB", "type": "GENERAL", "value": "postgres://u:pw@db/x"}]}]}},
                    secret_inputs=["spec"])),
                 ["spec.services[0].envs[1].value (DB) holds a URL with credentials in plain text; pass it as a secret"]),
                # Spellings a review found passing: a password as a query parameter, token formats,
                # lowercase names, short suffixes, a Command's environment map, a client argument.
                (doc(container(envs=["REPORT_URL=postgresql://reporter@10.0.0.3/db?password=CorrectHorse9&sslmode=verify-full",
                                     "GH=ghp_" + "a1B2c3D4e5" * 4, "ID_TOKEN_X=" + JWT_EXAMPLE,
                                     "db_password=CorrectHorse9", "PG=host=10.0.0.3 password=CorrectHorse9"],
                               healthcheck={"tests": ["CMD", "redis-cli", "-a", "Tr0ub4dor&3xyzzy", "ping"]}),
                     res(T_COMMAND, "r", {"create": "mysql -pTr0ub4dor3 -e 'select 1'",
                                          "environment": {"DB_PW": "Tr0ub4dor&3", "PGPASSWORD": "CorrectHorse9"}})),
                 ["envs[0] (REPORT_URL) holds a URL with credentials in plain text; pass it as a secret",
                  "envs[1] (GH) holds an API token in plain text; pass it as a secret",
                  "envs[2] (ID_TOKEN_X) holds an API token in plain text; pass it as a secret",
                  "envs[3] (db_password) is set in plain text; pass it as a secret",
                  "envs[4] (PG) holds a connection string with a password in plain text; pass it as a secret",
                  "healthcheck.tests passes a password on the command line (-a); pass it as a secret in the "
                  "environment (REDISCLI_AUTH, MYSQL_PWD)",
                  "environment.DB_PW looks like a secret and is plain text; pass it as a secret",
                  "environment.PGPASSWORD looks like a secret and is plain text; pass it as a secret",
                  "create passes a password on the command line (-p<password>); pass it as a secret in the "
                  "environment (REDISCLI_AUTH, MYSQL_PWD)"])]))


