"""Connection settings parsed rather than matched, shared by the config boundary and the policy
pack: shell words (``shlex``), libpq connection strings (URLs and ``keyword=value``), hosts
(``ipaddress``), and the client switches that turn TLS verification off or put a password on a
command line."""

from __future__ import annotations

import ipaddress
import os.path
import re
import shlex
from typing import Iterator, Optional
from urllib.parse import parse_qs, unquote, urlsplit

# --- shell words ------------------------------------------------------------------------------

_SEPARATORS = {";", "&&", "||", "|", "&", "\n", ";;", "|&"}
_GROUPING = {"(", ")", "$", "`", "{", "}"}
_SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh"}
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def _tokens(text: str) -> list[str]:
    """POSIX shell tokens of ``text``, quotes removed, operators and newlines as their own tokens.
    Text shlex cannot split (an unclosed quote) falls back to whitespace splitting per line."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace, lexer.commenters, lexer.whitespace_split = " \t\r", "", True
    try:
        return list(lexer)
    except ValueError:
        return [t for line in text.splitlines() for t in (*line.split(), "\n")]


def simple_commands(words_or_text: str | list[str], depth: int = 0, nested: bool = True) -> Iterator[list[str]]:
    """The simple commands (lists of words) in a shell script, or in an exec-form command given
    as a list; with ``nested``, the script of ``sh -c``/``bash -c`` is split in turn. Command
    substitution is read inline (``"$(which curl) -k"`` is ``which curl -k``)."""
    tokens = _tokens(words_or_text) if isinstance(words_or_text, str) else list(words_or_text)
    command: list[str] = []
    for token in [*tokens, ";"]:
        if token in _SEPARATORS or (isinstance(words_or_text, str) and set(token) <= set(";&|\n")):
            if command:
                yield command
                for index, word in enumerate(command[:-2]):
                    if os.path.basename(word) in _SHELLS and command[index + 1].startswith("-") \
                            and command[index + 1].endswith("c") and nested and depth < 4:
                        yield from simple_commands(command[index + 2], depth + 1)
            command = []
        elif not isinstance(words_or_text, str):
            command.append(token)
        elif "$(" in token or "`" in token:
            command.extend(w for part in token.split() if (w := part.strip("`$(){}")))
        elif token not in _GROUPING and not set(token) <= set("()<>"):
            command.append(token)


def assignments(words: list[str]) -> Iterator[tuple[str, str]]:
    """Every ``NAME=value`` word of a command, its value with the shell quoting removed
    (``NODE_TLS_REJECT_UNAUTHORIZED='0'`` gives ``0``); a value that still starts with a quote
    is a script's text, not an assignment."""
    for word in words:
        match = _ASSIGNMENT.match(word)
        # A word still quoted or spanning lines is a script handed to a shell (sh -c '...'), split
        # on its own; its first NAME= is no assignment of the whole.
        if match and not match.group(2).startswith(("'", '"')) and "\n" not in word:
            yield match.group(1), match.group(2)


def insecure_client(words: list[str]) -> bool:
    """curl (any path: ``/usr/bin/curl``) with ``-k``/``--insecure`` (alone or in a cluster such as
    ``-fsSk``), or ``--no-check-certificate`` (wget) anywhere in the command."""
    if "--no-check-certificate" in words:
        return True
    for index, word in enumerate(words):
        if os.path.basename(word) == "curl":
            rest = words[index + 1:]
            return any(w == "--insecure" or re.fullmatch(r"-[A-Za-z]*k[A-Za-z]*", w) for w in rest)
    return False


_PASSWORD_CLIENTS = {"redis-cli", "mysql", "mysqladmin", "mysqldump", "mariadb", "mariadb-dump", "keydb-cli"}


def password_argument(words: list[str]) -> Optional[str]:
    """The option by which a command takes a password on its command line (where ``ps`` and the
    container's inspect output show it), or None: ``--password=X`` for any program, and for
    redis-cli and the MySQL clients ``-a X``, ``--pass X``, ``--password X`` and ``-pX``. A
    value that is a variable reference (``$REDISCLI_AUTH``) is not plain text."""
    def plain(value: str) -> bool:
        return bool(value) and not value.startswith("$")
    for index, word in enumerate(words):
        if word.startswith("--password=") and plain(word.partition("=")[2]):
            return "--password="
    client = next((i for i, w in enumerate(words) if os.path.basename(w) in _PASSWORD_CLIENTS), None)
    if client is None:
        return None
    rest = words[client + 1:]
    for index, word in enumerate(rest):
        following = rest[index + 1] if index + 1 < len(rest) else ""
        if word in ("-a", "--pass", "--password") and plain(following):
            return word
        if word.startswith("--pass=") and plain(word.partition("=")[2]):
            return "--pass="
        if re.fullmatch(r"-p.+", word) and os.path.basename(words[client]) != "redis-cli" and plain(word[2:]):
            return "-p<password>"
    return None


# --- hosts and libpq connection strings ------------------------------------------------------

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
