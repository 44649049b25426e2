"""Hosts and Postgres connection strings parsed rather than matched, shared by the config
boundary and the policy pack: whether a host leaves the machine (``ipaddress``), libpq
``keyword=value`` strings and ``postgres://`` URLs (their hosts, sslmode and password)."""

from __future__ import annotations

import ipaddress
import re
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit


def is_local_host(host: str) -> bool:
    """``host`` never leaves the machine: empty or a path (a Unix socket), exactly
    ``localhost``, or a loopback address (127.0.0.0/8, ::1). ``localhost.example.com`` is a
    name like any other."""
    host = unquote(host or "").strip().strip("[]").lower()
    if not host or host.startswith("/") or host.startswith("@"):
        return True
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# libpq's connection keywords (PostgreSQL docs 32.1.2, "Parameter Key Words").
LIBPQ_KEYWORDS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "replication", "gssencmode", "sslmode", "requiressl", "sslnegotiation", "sslcompression", "sslcert",
    "sslkey", "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni",
    "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib",
    "gssdelegation", "service", "target_session_attrs", "load_balance_hosts"})
_CONNINFO_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)*)")


def parse_conninfo(text: str) -> Optional[dict[str, str]]:
    """A libpq ``keyword = value`` connection string as a dict, or None when ``text`` is not one
    (every pair's keyword must be libpq's, and there must be two pairs or more). The grammar is
    libpq's (PostgreSQL docs 32.1.1.1): spaces around ``=`` are allowed, a value is single-quoted
    when it holds spaces, and a backslash escapes ``'`` or ``\\``."""
    pairs, position = {}, 0
    text = text.strip()
    while position < len(text):
        match = _CONNINFO_PAIR.match(text, position)
        if not match or match.end() == position or match.group(1).lower() not in LIBPQ_KEYWORDS:
            return None
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1]
        pairs[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return pairs if len(pairs) >= 2 else None


def url_hosts(netloc: str) -> list[str]:
    """The hosts of a libpq URL's authority, which may list several: ``u@h1:5432,[::1]:6432``."""
    hosts = []
    for part in netloc.rpartition("@")[2].split(","):
        if part.startswith("["):
            hosts.append(part[1:part.find("]")] if "]" in part else part[1:])
        else:
            hosts.append(part.rpartition(":")[0] if ":" in part else part)
    return hosts


def postgres_settings(text: str) -> Optional[dict[str, object]]:
    """``{"hosts": [...], "sslmode": str | None, "password": bool}`` of a Postgres connection
    string, a ``postgres[ql]://`` URL (hosts from the authority, comma-separated, and from the
    ``host``/``hostaddr`` query parameters, which libpq lets override it) or a ``keyword=value``
    string; None for anything else. A socket path or no host at all is ``""`` (local)."""
    if re.match(r"(?i)postgres(ql)?://", text):
        try:
            url = urlsplit(text)
        except ValueError:
            return None
        query = {k.lower(): v for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        hosts = [h for value in query.get("host", []) + query.get("hostaddr", []) for h in value.split(",")]
        hosts = hosts or url_hosts(url.netloc)
        password = bool(url.password) or any(query.get("password", []))
        return {"hosts": hosts, "sslmode": (query.get("sslmode") or [None])[-1], "password": password}
    pairs = parse_conninfo(text)
    if pairs is None:
        return None
    hosts = [h for key in ("host", "hostaddr") for h in pairs.get(key, "").split(",") if key in pairs] or [""]
    return {"hosts": hosts, "sslmode": pairs.get("sslmode"), "password": bool(pairs.get("password"))}
