"""TLS policies on connection strings and client switches in every input (env, script, command,
App Platform spec): Postgres, MongoDB and Redis URLs, and settings that switch TLS off."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from policy.rules.base import (HIGH, MANDATORY, T_APP, T_COMMAND, T_CONTAINER, Case, resource_policy,
                               walk_strings)
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
    (re.compile(r"\bPGSSLMODE=(disable|allow|prefer)\b"), "PGSSLMODE={0}"),
    (re.compile(r"(?:^|\s)(?:curl\s[^\n]*?\s(?:-k|--insecure)|--no-check-certificate)\b"), "certificate checks switched off"),
]


def _check_tls_disabled(props, args):
    for path, text in walk_strings(props):
        for pattern, label in TLS_OFF:
            match = pattern.search(text)
            if match:
                shown = label.format(match.group(1) if match.groups() else match.group(0).strip())
                yield f"{path} disables TLS or its verification ({shown})"


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
                 ["stdin disables TLS or its verification (tls=false)"])]))
