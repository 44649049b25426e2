"""TLS policies on connection strings and client switches in every input (env, script, command,
App Platform spec): Postgres, MongoDB and Redis URLs, and settings that switch TLS off."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from collections.abc import Mapping

from policy.rules.base import (HIGH, MANDATORY, T_APP, T_COMMAND, T_CONTAINER, Case, is_list, items, mapping,
                               resource_policy, walk_strings)
from policy.rules.fixtures import container, doc, res, script

URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://[^\s\"'`<>]+", re.IGNORECASE)
LOCAL_HOSTS = ("127.", "localhost", "[::1]", "::1")


def urls(props):
    """(path, scheme, parsed url) of every URL in every string input (env, scripts, commands, specs)."""
    for path, text in walk_strings(props):
        for match in URL.finditer(text):
            try:
                yield path, match.group(1).lower(), urlsplit(match.group(0))
            except ValueError:
                continue


def _remote(url, docker_names_local=False):
    """The URL leaves the host. With ``docker_names_local``, a dotless name that is not an
    address (a container on the same Docker network, resolved by Docker's DNS) stays local."""
    host = (url.hostname or "").lower()
    if docker_names_local and host and "." not in host and ":" not in host:
        return False
    return bool(host) and not host.startswith(LOCAL_HOSTS) and host not in ("localhost", "::1")


def _check_postgres_urls(props, args):
    for path, scheme, url in urls(props):
        if scheme in ("postgres", "postgresql") and _remote(url):
            if parse_qs(url.query).get("sslmode") != ["verify-full"]:
                yield f"{path} carries a Postgres URL to {url.hostname} without sslmode=verify-full"


TLS_TYPES = [T_CONTAINER, T_APP, T_COMMAND]
resource_policy(
    "platform-connection-configure-postgres-verify-full",
    "Every Postgres connection URL that leaves the host verifies the server with sslmode=verify-full.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["PostgreSQL docs 32.19 (libpq SSL support, verify-full)", "Kredete encryption in transit"],
    fix="Append ?sslmode=verify-full&sslrootcert=<cluster CA> to the URL.",
    types=TLS_TYPES, check=_check_postgres_urls,
    cases=Case(doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=verify-full&sslrootcert=/ca.crt",
                                   "SCRATCH=postgresql://postgres@127.0.0.1:55432"])),
               [(doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=require"])),
                 ["envs[0] carries a Postgres URL to db without sslmode=verify-full"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"envs": [{"key": "DATABASE_URL", "value": "postgres://u@db.example.com/x"}]}]}})),
                 ["spec.services[0].envs[0].value carries a Postgres URL to db.example.com without sslmode=verify-full"])]))


def _check_mongodb_tls(props, args):
    for path, scheme, url in urls(props):
        if scheme in ("mongodb", "mongodb+srv") and _remote(url):
            query = {k.lower(): v for k, v in parse_qs(url.query).items()}
            if scheme == "mongodb" and query.get("tls") != ["true"] and query.get("ssl") != ["true"]:
                yield f"{path} carries a MongoDB URL to {url.hostname} without tls=true"


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
                 ["envs[0] carries a MongoDB URL to 10.0.0.3 without tls=true"])]))


def _check_redis_tls(props, args):
    for path, scheme, url in urls(props):
        if scheme == "redis" and _remote(url, docker_names_local=True):
            yield f"{path} carries a redis:// URL to {url.hostname}; use rediss:// (TLS)"


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
                 ["envs[0] carries a redis:// URL to 10.0.0.3; use rediss:// (TLS)"])]))


TLS_OFF = [
    (re.compile(r"\bsslmode=(disable|allow|prefer)\b", re.IGNORECASE), "sslmode={0}"),
    (re.compile(r"\b(tls|ssl)=false\b", re.IGNORECASE), "{0}=false"),
    (re.compile(r"\btls(?:Insecure|AllowInvalidCertificates|AllowInvalidHostnames)=true\b", re.IGNORECASE), "{0}"),
    (re.compile(r"\bNODE_TLS_REJECT_UNAUTHORIZED=0\b"), "NODE_TLS_REJECT_UNAUTHORIZED=0"),
    (re.compile(r"\bPGSSLMODE=(disable|allow|prefer|require|verify-ca)\b"), "PGSSLMODE={0}"),
    (re.compile(r"\bPYTHONHTTPSVERIFY=0\b"), "PYTHONHTTPSVERIFY=0"),
    (re.compile(r"\bGIT_SSL_NO_VERIFY="), "GIT_SSL_NO_VERIFY"),
    CURL_INSECURE := (re.compile(r"(?:^|\s)(?:curl(?:\s[^\n]*?)?\s(?:-[a-zA-Z]*k[a-zA-Z]*|--insecure)|--no-check-certificate)\b"),
                      "certificate checks switched off"),
]
# Env switches judged by their name (the config boundary's components.container_env keeps the
# same list): a libpq sslmode below verify-full, a switch that keeps TLS on set false
# (DATABASE_SSL, REDIS_TLS_ENABLED, VERIFY_SSL, *_REJECT_UNAUTHORIZED), one that turns
# verification off set true (MINIO_INSECURE, TLS_SKIP_VERIFY).
_FALSE, _TRUE = {"false", "0", "no", "off", "disable", "disabled"}, {"true", "1", "yes", "on"}
_PG_SSLMODE = re.compile(r"^(?:[A-Z0-9]+_)*(?:PG)?SSL_?MODE$", re.IGNORECASE)
_ON_SWITCH = re.compile(r"^(?:[A-Z0-9]+_)*(?:(?:USE_|ENABLE_)?(?:SSL|TLS)(?:_ENABLED?|_VERIFY(?:_[A-Z]+)?|"
                        r"_REJECT_UNAUTHORIZED)?|VERIFY_(?:SSL|TLS|CERTS?)|REJECT_UNAUTHORIZED)$", re.IGNORECASE)
_OFF_SWITCH = re.compile(r"^(?:[A-Z0-9]+_)*(?:(?:SSL|TLS)_)?(?:INSECURE(?:_SKIP_VERIFY)?|SKIP_(?:SSL_|TLS_)?VERIFY|"
                         r"NO_VERIFY|DISABLE_(?:SSL|TLS))$", re.IGNORECASE)


def _switch_off(name: str, value: str) -> bool:
    setting = value.strip().lower()
    return bool((_PG_SSLMODE.match(name) and setting in {"disable", "allow", "prefer", "require", "verify-ca"})
                or (_ON_SWITCH.match(name) and setting in _FALSE) or (_OFF_SWITCH.match(name) and setting in _TRUE))


def env_pairs(props):
    """(path, name, value) of every environment variable: a container's ``envs[i]`` "NAME=value"
    and an App Platform spec's ``{key, value}`` entries."""
    for index, entry in enumerate(items(props.get("envs"))):
        if isinstance(entry, str) and "=" in entry:
            name, _, value = entry.partition("=")
            yield f"envs[{index}]", name, value
    for path, value in walk_strings(props):
        if path.endswith(".value") and isinstance(key := _at(props, path[:-len(".value")] + ".key"), str):
            yield path, key, value


def _at(value, path):
    """The value at a walk_strings path (``spec.services[0].envs[1].key``), or None."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            value = items(value)[int(part[1:-1])] if int(part[1:-1]) < len(items(value)) else None
        else:
            value = mapping(value).get(part)
    return value


def command_lines(props):
    """(path, the items joined by spaces) of every list of strings (a container's ``command``,
    ``entrypoint``, healthcheck ``tests``): exec form splits ``curl -k`` into two items."""
    def walk(value, path):
        if is_list(value):
            if len(value) > 1 and all(isinstance(v, str) for v in value):
                yield path, " ".join(value)
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")
        elif isinstance(value, Mapping):
            for key in value:
                yield from walk(value[key], f"{path}.{key}" if path else str(key))
    yield from walk(props, "")


def _check_tls_disabled(props, args):
    for path, text in walk_strings(props):
        for pattern, label in TLS_OFF:
            match = pattern.search(text)
            if match:
                shown = label.format(match.group(1) if match.groups() else match.group(0).strip())
                yield f"{path} disables TLS or its verification ({shown})"
    for path, name, value in env_pairs(props):
        if _switch_off(name, value) and not any(p.search(f"{name}={value}") for p, _ in TLS_OFF):
            yield f"{path} disables TLS or its verification ({name}={value.strip()})"
    for path, line in command_lines(props):
        if CURL_INSECURE[0].search(line) and not any(CURL_INSECURE[0].search(w) for w in items(_at(props, path))):
            yield f"{path} disables TLS or its verification ({CURL_INSECURE[1]})"


resource_policy(
    "platform-connection-disallow-tls-disabled",
    "No input (env, script, command, spec) switches TLS or certificate verification off.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["CWE-295", "CWE-319", "Kredete encryption in transit"],
    fix="Remove the flag and give the client the CA it needs to verify the server.",
    types=TLS_TYPES, check=_check_tls_disabled,
    cases=Case(doc(container(envs=["DATABASE_URL=postgresql://db/x?sslmode=verify-full", "MONGO=mongodb://h/x?tls=true"])),
               [(doc(container(envs=["DATABASE_URL=postgresql://db/x?sslmode=disable", "NODE_TLS_REJECT_UNAUTHORIZED=0"])),
                 ["envs[0] disables TLS or its verification (sslmode=disable)",
                  "envs[1] disables TLS or its verification (NODE_TLS_REJECT_UNAUTHORIZED=0)"]),
                (doc(script("s", body="mongosh 'mongodb://h/x?tls=false'\ncurl -k https://x")),
                 ["stdin disables TLS or its verification (tls=false)",
                  "stdin disables TLS or its verification (certificate checks switched off)"]),
                (doc(container(envs=["PGSSLMODE=require", "PYTHONHTTPSVERIFY=0", "GIT_SSL_NO_VERIFY=", "DATABASE_SSL=false",
                                     "MINIO_INSECURE=true", "DATABASE_SSL=true"])),
                 ["envs[0] disables TLS or its verification (PGSSLMODE=require)",
                  "envs[1] disables TLS or its verification (PYTHONHTTPSVERIFY=0)",
                  "envs[2] disables TLS or its verification (GIT_SSL_NO_VERIFY)",
                  "envs[3] disables TLS or its verification (DATABASE_SSL=false)",
                  "envs[4] disables TLS or its verification (MINIO_INSECURE=true)"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"envs": [{"key": "DB_SSL", "value": "0"}]}]}})),
                 ["spec.services[0].envs[0].value disables TLS or its verification (DB_SSL=0)"]),
                (doc(container(command=["curl", "-fsSk", "https://10.0.0.3/health"],
                               healthcheck={"tests": ["CMD", "curl", "--insecure", "https://localhost/"]})),
                 ["healthcheck.tests disables TLS or its verification (certificate checks switched off)",
                  "command disables TLS or its verification (certificate checks switched off)"])]))
