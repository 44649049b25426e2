"""TLS policies on connection strings and client switches in every input (env, script, command,
App Platform spec): Postgres, MongoDB and Redis URLs, and settings that switch TLS off."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

from policy.parsers.commands import ENV_INPUTS, URL, commands
from policy.rules.base import (HIGH, MANDATORY, T_APP, T_COMMAND, T_CONTAINER, Case, items, resource_policy,
                               walk_strings)
from policy.rules.fixtures import container, doc, res, script
from policy.rules.paths import value_at, where
from validation.connections import (NODE_TLS_AMBIGUOUS, TLS_OFF_IN_TEXT, assignments, insecure_client, simple_commands,
                                    tls_setting_shown, tls_switch_ambiguous, tls_switch_off)
from validation.conninfo import is_local_host, postgres_settings, url_hosts


def urls(props):
    """(path, scheme, parsed url) of every URL in every string input (env, scripts, commands, specs)."""
    for path, text in walk_strings(props):
        for match in URL.finditer(text):
            try:
                yield path, match.group(1).lower(), urlsplit(match.group(0))
            except ValueError:
                continue


def _remote_host(hosts, docker_names_local=False):
    """The first of a connection's ``hosts`` that leaves the machine (``validation.conninfo.
    is_local_host``: only ``localhost``, loopback and sockets stay), or None. With
    ``docker_names_local``, a dotless name that is not an address (a container on the same
    Docker network, resolved by Docker's DNS) stays local."""
    for host in hosts:
        if docker_names_local and host and "." not in host and ":" not in host:
            continue
        if not is_local_host(host):
            return host.lower()
    return None


def _remote(url, docker_names_local=False):
    return _remote_host(url_hosts(url.netloc), docker_names_local)


def postgres_strings(props):
    """(path, "URL" or "connection string", settings) of every Postgres connection in every input:
    URLs anywhere in a string, and libpq ``keyword=value`` strings as a whole input, an env var's
    value or one shell word (``validation.conninfo.postgres_settings``)."""
    seen = set()
    for path, text in walk_strings(props):
        for match in URL.finditer(text):
            if (settings := postgres_settings(match.group(0))) is not None:
                yield path, "URL", settings
        if "=" not in text or "host" not in text.lower() and "sslmode" not in text.lower():
            continue
        candidates = [text, text.partition("=")[2]]
        candidates += [w.partition("=")[2] if w.partition("=")[0].isupper() else w
                       for c in simple_commands(text) for w in c if "=" in w]
        for candidate in candidates:
            if not URL.match(candidate) and (settings := postgres_settings(candidate)) is not None \
                    and (path, candidate) not in seen:
                seen.add((path, candidate))
                yield path, "connection string", settings


def _check_postgres_urls(props, args):
    for path, kind, settings in postgres_strings(props):
        if (host := _remote_host(settings["hosts"])) and settings["sslmode"] != "verify-full":
            yield f"{where(props, path)} carries a Postgres {kind} to {host} without sslmode=verify-full"


TLS_TYPES = [T_CONTAINER, T_APP, T_COMMAND]
resource_policy(
    "platform-connection-configure-postgres-verify-full",
    "Every Postgres connection URL that leaves the host verifies the server with sslmode=verify-full.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["PostgreSQL docs 32.19 (libpq SSL support, verify-full)", "Kredete encryption in transit"],
    fix="Append ?sslmode=verify-full&sslrootcert=<cluster CA> to the URL.",
    types=TLS_TYPES, check=_check_postgres_urls,
    cases=Case(doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=verify-full&sslrootcert=/ca.crt",
                                   "SCRATCH=postgresql://postgres@127.0.0.1:55432",
                                   "LOCAL=postgresql://u@127.0.0.1:1,[::1]:2/db", "SOCKET=host=/run/postgresql dbname=x"])),
               [(doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=require"])),
                 ["envs[0] (DATABASE_URL) carries a Postgres URL to db without sslmode=verify-full"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"envs": [{"key": "DATABASE_URL", "value": "postgres://u@db.example.com/x"}]}]}})),
                 ["spec.services[0].envs[0].value (DATABASE_URL) carries a Postgres URL to db.example.com without sslmode=verify-full"]),
                (doc(container(envs=["A=postgresql:///db?host=10.0.0.3&sslmode=require",
                                     "B=postgresql://u@127.0.0.1:1,10.0.0.3:5432/db?sslmode=require",
                                     "C=postgresql://u@localhost.db.example.com/db?sslmode=require",
                                     "PG_DSN=host=10.0.0.3 dbname=x sslmode=require"])),
                 ["envs[0] (A) carries a Postgres URL to 10.0.0.3 without sslmode=verify-full",
                  "envs[1] (B) carries a Postgres URL to 10.0.0.3 without sslmode=verify-full",
                  "envs[2] (C) carries a Postgres URL to localhost.db.example.com without sslmode=verify-full",
                  "envs[3] (PG_DSN) carries a Postgres connection string to 10.0.0.3 without sslmode=verify-full"])]))


def _check_mongodb_tls(props, args):
    for path, scheme, url in urls(props):
        if scheme in ("mongodb", "mongodb+srv") and _remote(url):
            query = {k.lower(): v for k, v in parse_qs(url.query).items()}
            if scheme == "mongodb" and query.get("tls") != ["true"] and query.get("ssl") != ["true"]:
                yield f"{where(props, path)} carries a MongoDB URL to {_remote(url)} without tls=true"


resource_policy(
    "platform-connection-configure-mongodb-tls",
    "Every MongoDB connection URL that leaves the host uses TLS.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["MongoDB docs: connection string tls option", "Kredete encryption in transit"],
    fix="Add tls=true&tlsCAFile=<CA> to the URL (mongodb+srv implies TLS).",
    types=TLS_TYPES, check=_check_mongodb_tls,
    cases=Case(doc(container(envs=["MONGODB_URI=mongodb://u:p@10.0.0.3:27017/db?tls=true&tlsCAFile=/ca.crt",
                                   "ATLAS=mongodb+srv://u:p@cluster.example.net/db"])),
               [(doc(container(envs=["MONGODB_URI=mongodb://u:p@10.0.0.3:27017/db"])),
                 ["envs[0] (MONGODB_URI) carries a MongoDB URL to 10.0.0.3 without tls=true"])]))


def _check_redis_tls(props, args):
    for path, scheme, url in urls(props):
        if scheme == "redis" and _remote(url, docker_names_local=True):
            yield (f"{where(props, path)} carries a redis:// URL to {_remote(url, docker_names_local=True)}; "
                   "use rediss:// (TLS)")


resource_policy(
    "platform-connection-configure-redis-tls",
    "Every Redis connection to another host uses rediss:// (TLS); a container on the same Docker network is the same host.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Redis docs: TLS", "Kredete encryption in transit"],
    fix="Use rediss:// with the CA, or keep the Redis client on the same host.",
    types=TLS_TYPES, check=_check_redis_tls,
    cases=Case(doc(container(envs=["REDIS_URL=rediss://:p@10.0.0.3:6379/0", "LOCAL=redis://127.0.0.1:6379",
                                   "SAME_NETWORK=redis://redis:6379/0"])),
               [(doc(container(envs=["REDIS_URL=redis://:p@10.0.0.3:6379/0"])),
                 ["envs[0] (REDIS_URL) carries a redis:// URL to 10.0.0.3; use rediss:// (TLS)"])]))


TLS_OFF = [
    (TLS_OFF_IN_TEXT, "{0}"),
    (re.compile(r"\bNODE_TLS_REJECT_UNAUTHORIZED=0(?![\w.-])"), "NODE_TLS_REJECT_UNAUTHORIZED=0"),
    (re.compile(r"\bPGSSLMODE=(?![\"']?verify-full(?![\w-]))[\"']?([^\s;&\"']*)"), "PGSSLMODE={0}"),
    (re.compile(r"\bPYTHONHTTPSVERIFY=0\b"), "PYTHONHTTPSVERIFY=0"),
    (re.compile(r"\bGIT_SSL_NO_VERIFY="), "GIT_SSL_NO_VERIFY"),
]
INSECURE_CLIENT = "certificate checks switched off"


def env_pairs(props):
    """(path, name, value) of every environment variable: "NAME=value" items and map entries of
    ``ENV_INPUTS``, and an App Platform spec's ``{key, value}`` entries."""
    for key in ENV_INPUTS:
        value = props.get(key)
        if isinstance(value, Mapping):
            # Sorted: the engine sends a map's keys sorted (protobuf Struct), the capture in order.
            for name in sorted(value):
                if isinstance(value[name], str):
                    yield f"{key}.{name}", str(name), value[name]
        for index, entry in enumerate(items(value)):
            if isinstance(entry, str) and "=" in entry:
                name, _, setting = entry.partition("=")
                yield f"{key}[{index}]", name, setting
    for path, value in walk_strings(props):
        if path.endswith(".value") and isinstance(key := value_at(props, path[:-len(".value")] + ".key"), str):
            yield path, key, value


def _check_tls_disabled(props, args):
    found, ambiguous = {}, {}
    for path, text in walk_strings(props):
        for pattern, label in TLS_OFF:
            match = pattern.search(text)
            if match:
                found.setdefault(path, []).append(label.format(next((g for g in match.groups() if g is not None), match.group(0).strip())))

    def judge(path, name, value):
        if tls_switch_off(name, value):
            found.setdefault(path, []).append(tls_setting_shown(name, value))
        elif tls_switch_ambiguous(name, value):
            ambiguous.setdefault(path, {})[tls_setting_shown(name, value)] = None

    for path, name, value in env_pairs(props):
        judge(path, name, value)
    for path, kind, settings in postgres_strings(props):
        if str(settings["sslmode"]).lower() in ("disable", "allow", "prefer"):
            found.setdefault(path, []).append(f"sslmode={settings['sslmode']}")
    for path, words in commands(props):
        if insecure_client(words):
            found.setdefault(path, []).append(INSECURE_CLIENT)
        for name, value in assignments(words):
            judge(path, name, value)
    for path, shown in found.items():
        # One message per setting: the pattern's GIT_SSL_NO_VERIFY and the parser's
        # GIT_SSL_NO_VERIFY=... are one finding.
        for label in dict.fromkeys(shown):
            if not any(label.startswith(f"{other}=") for other in shown):
                yield f"{where(props, path)} disables TLS or its verification ({label})"
    for path, shown in ambiguous.items():
        yield from (f"{where(props, path)} sets {label}, which {NODE_TLS_AMBIGUOUS}" for label in shown)


resource_policy(
    "platform-connection-disallow-tls-disabled",
    "No input (env, script, command, spec) switches TLS or certificate verification off.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["CWE-295", "CWE-319", "Kredete encryption in transit"],
    fix="Remove the flag and give the client the CA it needs to verify the server.",
    types=TLS_TYPES, check=_check_tls_disabled,
    cases=Case(doc(container(envs=["DATABASE_URL=postgresql://db/x?sslmode=verify-full", "MONGO=mongodb://h/x?tls=true"],
                             command=["sh", "-c", "/usr/bin/curl -fsS https://10.0.0.3/ && NODE_TLS_REJECT_UNAUTHORIZED='1' node m"])),
               [(doc(container(envs=["DATABASE_URL=postgresql://db/x?sslmode=disable", "NODE_TLS_REJECT_UNAUTHORIZED=0"])),
                 ["envs[0] (DATABASE_URL) disables TLS or its verification (sslmode=disable)",
                  "envs[1] (NODE_TLS_REJECT_UNAUTHORIZED) disables TLS or its verification (NODE_TLS_REJECT_UNAUTHORIZED=0)"]),
                (doc(script("s", body="mongosh 'mongodb://h/x?tls=false'\ncurl -k https://x")),
                 ["stdin disables TLS or its verification (tls=false)",
                  "stdin disables TLS or its verification (certificate checks switched off)"]),
                (doc(container(envs=["PGSSLMODE=require", "PYTHONHTTPSVERIFY=0", "GIT_SSL_NO_VERIFY=", "DATABASE_SSL=false",
                                     "MINIO_INSECURE=true", "DATABASE_SSL=true"])),
                 ["envs[0] (PGSSLMODE) disables TLS or its verification (PGSSLMODE=require)",
                  "envs[1] (PYTHONHTTPSVERIFY) disables TLS or its verification (PYTHONHTTPSVERIFY=0)",
                  "envs[2] (GIT_SSL_NO_VERIFY) disables TLS or its verification (GIT_SSL_NO_VERIFY)",
                  "envs[3] (DATABASE_SSL) disables TLS or its verification (DATABASE_SSL=false)",
                  "envs[4] (MINIO_INSECURE) disables TLS or its verification (MINIO_INSECURE=true)"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"envs": [{"key": "DB_SSL", "value": "0"}]}]}})),
                 ["spec.services[0].envs[0].value (DB_SSL) disables TLS or its verification (DB_SSL=0)"]),
                # Node reads only "0" as off: "false" keeps verification on but reads as off.
                (doc(container(envs=["NODE_TLS_REJECT_UNAUTHORIZED=false"],
                               command=["sh", "-c", "NODE_TLS_REJECT_UNAUTHORIZED=no node m.js"])),
                 [f"envs[0] (NODE_TLS_REJECT_UNAUTHORIZED) sets NODE_TLS_REJECT_UNAUTHORIZED=false, which {NODE_TLS_AMBIGUOUS}",
                  f"command[2] sets NODE_TLS_REJECT_UNAUTHORIZED=no, which {NODE_TLS_AMBIGUOUS}"]),
                (doc(container(envs=["PGSSLMODE=no-verify", "DATABASE_SSL=n", "NODE_OPTIONS=--tls-min-v1.0"])),
                 ["envs[0] (PGSSLMODE) disables TLS or its verification (PGSSLMODE=no-verify)",
                  "envs[2] (NODE_OPTIONS) disables TLS or its verification (--tls-min-v1.0)",
                  "envs[1] (DATABASE_SSL) disables TLS or its verification (DATABASE_SSL=n)"]),
                (doc(container(command=["curl", "-fsSk", "https://10.0.0.3/health"],
                               healthcheck={"tests": ["CMD", "curl", "--insecure", "https://localhost/"]})),
                 ["healthcheck.tests disables TLS or its verification (certificate checks switched off)",
                  "command disables TLS or its verification (certificate checks switched off)"]),
                # Ordinary spellings a review found passing: curl by its path, inside sh -c, found
                # by $(which curl); quoted values; the environment map; a keyword DSN with spaces.
                (doc(container(command=["sh", "-c", "/usr/bin/curl -k https://10.0.0.3/ && NODE_TLS_REJECT_UNAUTHORIZED='0' node m.js"],
                               healthcheck={"tests": ["CMD", "/usr/bin/curl", "-fsk", "https://10.0.0.3/health"]})),
                 ["healthcheck.tests disables TLS or its verification (certificate checks switched off)",
                  "command[2] disables TLS or its verification (certificate checks switched off)",
                  "command[2] disables TLS or its verification (NODE_TLS_REJECT_UNAUTHORIZED=0)"]),
                (doc(res(T_COMMAND, "r", {"create": 'PGSSLMODE="disable" psql -c "select 1"; "$(which curl)" -k https://x/',
                                          "environment": {"PGSSLMODE": "disable", "NODE_TLS_REJECT_UNAUTHORIZED": "0"}}),
                     container(envs=["PG_DSN=host=10.0.0.3 dbname=x sslmode = disable"]),
                     res(T_APP, "app", {"spec": {"services": [{"name": "api", "runCommand":
                                                               "NODE_TLS_REJECT_UNAUTHORIZED='0' node dist/main.js"}]}})),
                 ["create disables TLS or its verification (PGSSLMODE=disable)",
                  "create disables TLS or its verification (certificate checks switched off)",
                  "environment.NODE_TLS_REJECT_UNAUTHORIZED disables TLS or its verification (NODE_TLS_REJECT_UNAUTHORIZED=0)",
                  "environment.PGSSLMODE disables TLS or its verification (PGSSLMODE=disable)",
                  "envs[0] (PG_DSN) disables TLS or its verification (sslmode=disable)",
                  "spec.services[0].runCommand disables TLS or its verification (NODE_TLS_REJECT_UNAUTHORIZED=0)"])]))
