"""Commands and settings parsed rather than matched, shared by the config boundary and the policy
pack: shell words (``validation.shell_words``), the client switches that turn TLS verification
off or put a password on a command line, and the TLS switches of an environment. Hosts and
Postgres connection strings are ``validation.conninfo``'s."""

from __future__ import annotations

import os.path
import re
from typing import Iterator, Optional

from validation.formats import looks_secret_name
from validation.shell_words import shell_tokens

# --- shell words ------------------------------------------------------------------------------

_SEPARATORS = {";", "&&", "||", "|", "&", "\n", ";;", "|&"}
_GROUPING = {"(", ")", "$", "`", "{", "}"}
_SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh"}
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


# POSIX shell tokens, quotes removed, operators and newlines their own tokens: shlex's grammar in
# linear time (a 128 KB word cost shlex 0.7 s).
_tokens = shell_tokens


def simple_commands(words_or_text: str | list[str], depth: int = 0, nested: bool = True,
                    keep_substitutions: bool = False) -> Iterator[list[str]]:
    """The simple commands (lists of words) in a shell script, or in an exec-form command given
    as a list; with ``nested``, the script of ``sh -c``/``bash -c`` is split in turn. Command
    substitution is read inline (``"$(which curl) -k"`` is ``which curl -k``); with
    ``keep_substitutions`` its first word keeps the ``$(`` (``--requirepass "$(cat f)"`` gives
    ``$(cat``), so that an option's value read from a file is seen as no literal."""
    tokens = _tokens(words_or_text) if isinstance(words_or_text, str) else list(words_or_text)
    command: list[str] = []
    for token in [*tokens, ";"]:
        if token in _SEPARATORS or (isinstance(words_or_text, str) and set(token) <= set(";&|\n")):
            if command:
                yield command
                for index, word in enumerate(command[:-2]):
                    if os.path.basename(word) in _SHELLS and command[index + 1].startswith("-") \
                            and command[index + 1].endswith("c") and nested and depth < 4:
                        yield from simple_commands(command[index + 2], depth + 1,
                                                   keep_substitutions=keep_substitutions)
            command = []
        elif not isinstance(words_or_text, str):
            command.append(token)
        elif "$(" in token or "`" in token:
            parts = [w for part in token.split() if (w := part.strip("`$(){}"))]
            if keep_substitutions and parts and token.startswith(("$(", "`")):
                parts[0] = "$(" + parts[0]
            command.extend(parts)
        elif token not in _GROUPING and not set(token) <= set("()<>"):
            command.append(token)


def assignments(words: list[str]) -> Iterator[tuple[str, str]]:
    """Every ``NAME=value`` word of a command, its value with the shell quoting removed
    (``NODE_TLS_REJECT_UNAUTHORIZED='0'`` gives ``0``); a value that still starts with a quote
    is a script's text, not an assignment."""
    scripts = {index + 2 for index, word in enumerate(words[:-2])
               if os.path.basename(word) in _SHELLS and words[index + 1].startswith("-")
               and words[index + 1].endswith("c")}
    for index, word in enumerate(words):
        match = _ASSIGNMENT.match(word)
        # A shell's script (sh -c 'PGSSLMODE=verify-full exec node m.js'), or a word still quoted
        # or spanning lines, is split on its own (simple_commands); its first NAME= is no
        # assignment of the whole, whose "value" would run to the end of the script.
        if match and index not in scripts and not match.group(2).startswith(("'", '"')) and "\n" not in word:
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
# Options that take a password as their value whatever the program (redis-server's and keydb's
# --requirepass/--masterauth, wget's --http-password...), as the next word or after "=".
_PASSWORD_OPTIONS = {"--requirepass", "--masterauth", "--http-password", "--ftp-password", "--proxy-password"}
# Any long option named *password/*passwd takes its value after "=" (psql's bare --password
# takes none, it only makes psql prompt; --no-password is its opposite).
_PASSWORD_EQUALS = re.compile(r"^(--(?:[a-z]+-)*(?:password|passwd|requirepass|masterauth))=(.*)$", re.DOTALL)
# curl's short options that take a value (curl --help all): in a cluster such as -fsu, the rest
# of the word or the next word is the value of the first of them.
_CURL_VALUE_LETTERS = set("AbcCdDeEFHKmoPQrtTuUwxXyYz")
_CURL_USER_OPTIONS = {"--user": "-u/--user", "--proxy-user": "--proxy-user", "u": "-u/--user", "U": "--proxy-user"}
# A name that says where a secret is, not the secret: PGPASSFILE-like *_FILE, paths and ids.
SECRET_REFERENCE = re.compile(r"_(?:FILE|PATH|DIR|NAME|ID)$", re.IGNORECASE)


def literal_secret(value: str, mask: str = "") -> bool:
    """``value`` is the secret itself: not empty, not a reference to one (``$VAR``, ``${VAR}``,
    a command substitution kept by ``simple_commands``, a file path such as ``/run/secrets/x``)
    and not ``mask`` (the policy capture's stand-in for a secret leaf)."""
    return bool(value) and not value.startswith(("$", "/")) and value != mask


def _curl_user(words: list[str], mask: str) -> Optional[str]:
    """curl's ``-u``/``--user``/``-U``/``--proxy-user`` given ``user:password`` with a literal
    password (``user`` alone makes curl prompt; ``user:$PASS`` is a reference)."""
    client = next((i for i, w in enumerate(words) if os.path.basename(w) == "curl"), None)
    if client is None:
        return None
    rest = words[client + 1:]
    for index, word in enumerate(rest):
        following = rest[index + 1] if index + 1 < len(rest) else ""
        option, value = None, None
        if word.partition("=")[0] in ("--user", "--proxy-user"):
            option, value = word.partition("=")[0], word.partition("=")[2] if "=" in word else following
        elif re.fullmatch(r"-[A-Za-z].*", word):
            for position, letter in enumerate(word[1:], start=2):
                if letter in _CURL_VALUE_LETTERS:
                    if letter in "uU":
                        option, value = letter, word[position:] or following
                    break
        if option and ":" in value and literal_secret(value.partition(":")[2], mask):
            return _CURL_USER_OPTIONS[option]
    return None


def password_argument(words: list[str], mask: str = "", program_known: bool = True) -> Optional[str]:
    """The option by which a command takes a literal password on its command line (where ``ps``
    and the container's inspect output show it), or None: ``--password=X`` and the other
    ``_PASSWORD_EQUALS`` spellings and ``_PASSWORD_OPTIONS`` (``--requirepass X``) for any
    program; for redis-cli and the MySQL clients ``-a X``, ``--pass X``, ``--password X`` and
    ``-pX``; for curl ``-u user:X`` (in a cluster too: ``-fsu``). ``program_known=False`` reads
    ``words`` as arguments of an unknown program (an env var such as ``REDIS_ARGS``): only the
    options of any program count. A reference (``literal_secret``) is no literal."""
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if (match := _PASSWORD_EQUALS.match(word)) and literal_secret(match.group(2), mask):
            return match.group(1) + "="
        if word in _PASSWORD_OPTIONS and literal_secret(following, mask):
            return word
    if not program_known:
        return None
    if (option := _curl_user(words, mask)) is not None:
        return option
    client = next((i for i, w in enumerate(words) if os.path.basename(w) in _PASSWORD_CLIENTS), None)
    if client is None:
        return None
    rest = words[client + 1:]
    for index, word in enumerate(rest):
        following = rest[index + 1] if index + 1 < len(rest) else ""
        if word in ("-a", "--pass", "--password") and literal_secret(following, mask):
            return word
        if word.startswith("--pass=") and literal_secret(word.partition("=")[2], mask):
            return "--pass="
        if re.fullmatch(r"-p.+", word) and os.path.basename(words[client]) != "redis-cli" \
                and literal_secret(word[2:], mask):
            return "-p<password>"
    return None


def secret_assignments(words: list[str], mask: str = "") -> Iterator[str]:
    """The names of the ``NAME=value`` words of a command that set a secret-looking variable
    (``validation.formats.looks_secret_name``: ``PGPASSWORD``, ``MYSQL_PWD``, ``REDISCLI_AUTH``,
    not a ``*_FILE`` reference) to a literal value (``literal_secret``)."""
    for name, value in assignments(words):
        if looks_secret_name(name) and not SECRET_REFERENCE.search(name) and literal_secret(value, mask):
            yield name


def command_credential(command: str | list[str]) -> Optional[str]:
    """How a command (a shell string, or an exec-form list; ``sh -c`` scripts in turn) spells a
    literal secret, or None: ``PGPASSWORD=`` (a secret-looking assignment) or the option
    (``password_argument``). Never the value. The config boundary and the policy pack's
    platform-resource-disallow-plaintext-secrets both judge commands with these functions."""
    for words in simple_commands(command, keep_substitutions=True):
        for name in secret_assignments(words):
            return f"{name}="
        if (option := password_argument(words)) is not None:
            return option
    return None


def argument_credential(value: str, mask: str = "") -> Optional[str]:
    """The option by which an env var's value that is a program's argument string (``REDIS_ARGS:
    "--requirepass X"``) passes a literal password (``password_argument`` of an unknown program),
    or None."""
    for words in simple_commands(value, keep_substitutions=True):
        if (option := password_argument(words, mask, program_known=False)) is not None:
            return option
    return None


# --- TLS switches in env (the config boundary's components.container_env and the policy pack's
# platform-connection-disallow-tls-disabled judge them alike, CWE-295 and CWE-319) ------------

TLS_TRUE_WORDS = frozenset({"true", "1", "yes", "on", "enabled", "enable", "required", "starttls"})
TLS_FALSE_WORDS = frozenset({"false", "0", "no", "off", "disable", "disabled"})
# A libpq sslmode other than verify-full: disable, allow and prefer fall back to plain text,
# require and verify-ca take any certificate for the host (PostgreSQL docs 32.19, "SSL Mode
# Descriptions"); no-verify is node-postgres' "skip verification". MySQL's VERIFY_IDENTITY is its
# verify-full (MySQL docs, "--ssl-mode"); Grafana's MySQL ssl_mode "true" verifies too.
_SSLMODE_NAME = re.compile(r"^(?:[A-Z0-9]+_)*(?:PG)?SSL_?MODE$", re.IGNORECASE)
# libpq's verify-full is exact (it refuses VERIFY-FULL); MySQL's mode is any case.
_CASELESS_SSLMODES = frozenset({"verify_identity", "true"})
# Words that make a switch one that turns TLS or its checks OFF when true (NO_SSL_VERIFY,
# DISABLE_TLS_VERIFY, MINIO_INSECURE, TLS_SKIP_VERIFY, IGNORE_CERT_ERRORS), wherever they sit in
# the name: a keep-on pattern whose prefix swallowed NO_ read NO_SSL_VERIFY=true as TLS on.
_NEGATING_WORDS = frozenset({"NO", "DISABLE", "DISABLED", "SKIP", "IGNORE", "INSECURE"})
_TLS_WORDS = frozenset({"SSL", "TLS", "VERIFY", "VERIFICATION", "CERT", "CERTS", "CERTIFICATE", "CERTIFICATES",
                        "HOSTNAME", "HTTPS"})
# A switch that keeps TLS or its verification on, so anything but a true word turns it off:
# DATABASE_SSL, REDIS_TLS_ENABLED, USE_SSL, SMTP_TLS_VERIFY, NODE_TLS_REJECT_UNAUTHORIZED...
_ON_SWITCH = re.compile(r"^(?:[A-Z0-9]+_)*(?:(?:USE_|ENABLE_)?(?:SSL|TLS)(?:_ENABLED?|_VERIFY(?:_PEER|_HOST(?:NAME)?|"
                        r"_CERTS?|_SERVER(?:_CERT)?)?|_REJECT_UNAUTHORIZED)?|VERIFY_(?:SSL|TLS|CERTS?)|"
                        r"REJECT_UNAUTHORIZED)$", re.IGNORECASE)
# OpenLDAP's client certificate check (ldap.conf(5) TLS_REQCERT): only demand and hard verify.
_REQCERT_NAME = re.compile(r"^(?:[A-Z0-9]+_)*LDAP_?TLS_REQCERT$", re.IGNORECASE)


def tls_switch_kind(name: str) -> str | None:
    """What env var ``name`` is, for TLS: ``"sslmode"`` (PGSSLMODE, DB_SSL_MODE), ``"off"`` (a
    switch that, when true, turns TLS or its checks off: a name with NO, DISABLE, SKIP, IGNORE
    or INSECURE beside a TLS word, or INSECURE alone: MINIO_INSECURE), ``"on"`` (a switch that
    keeps it on: DATABASE_SSL, VERIFY_SSL), ``"reqcert"`` (LDAPTLS_REQCERT), or None."""
    if _SSLMODE_NAME.match(name):
        return "sslmode"
    if _REQCERT_NAME.match(name):
        return "reqcert"
    words = set(name.upper().split("_"))
    if "INSECURE" in words or (words & _NEGATING_WORDS and words & _TLS_WORDS):
        return "off"
    if _ON_SWITCH.match(name):
        return "on"
    return None


def tls_switch_off(name: str, value: str) -> bool:
    """Whether ``name=value`` turns TLS or certificate verification off by the variable itself,
    judged by what keeps TLS on (so a spelling nobody listed, ``no-verify``, ``n``, an invisible
    character inside ``false``, counts as off): an sslmode other than a verifying one (exact
    case: libpq refuses ``VERIFY-FULL``), a keep-on switch set to anything but a true word or an
    absolute path (a CA bundle: requests' ``verify=``), an off switch set to anything but a
    false word, TLS_REQCERT other than demand or hard, ``GIT_SSL_NO_VERIFY`` with any value (git
    reads only whether it is set), ``PYTHONHTTPSVERIFY=0`` (PEP 493) and
    ``NODE_TLS_REJECT_UNAUTHORIZED`` exactly ``0``, the one value Node reads as off (any other
    is ``tls_switch_ambiguous``)."""
    setting = value.strip()
    kind = tls_switch_kind(name)
    if name == NODE_TLS_SWITCH:
        return value == "0"
    if name == "GIT_SSL_NO_VERIFY" or (name == "PYTHONHTTPSVERIFY" and setting == "0"):
        return True
    if kind == "sslmode":
        return setting != "verify-full" and setting.lower() not in _CASELESS_SSLMODES
    if kind == "reqcert":
        return setting.lower() not in ("demand", "hard")
    if kind == "off":
        return setting.lower() not in TLS_FALSE_WORDS
    if kind == "on":
        return not (setting.lower() in TLS_TRUE_WORDS or setting.startswith("/"))
    return False


NODE_TLS_SWITCH = "NODE_TLS_REJECT_UNAUTHORIZED"
NODE_TLS_AMBIGUOUS = ('is neither 1 nor unset: Node turns certificate verification off only when '
                      f'{NODE_TLS_SWITCH} is exactly "0" and keeps it on for any other value, so this one '
                      'reads as a switch it is not; remove it, or set it to 1')
"""The fix for ``tls_switch_ambiguous`` (config boundary and policy pack alike)."""


def tls_switch_ambiguous(name: str, value: str) -> bool:
    """``NODE_TLS_REJECT_UNAUTHORIZED`` set to anything but ``0`` (``tls_switch_off``) or ``1``: Node
    disables verification only when the value equals "0" (Node docs), so ``false`` keeps it on."""
    return name == NODE_TLS_SWITCH and value not in ("0", "1")


TLS_OFF_IN_TEXT = re.compile(
    r"\b(sslmode=(?:disabled?|allow|prefer)|(?:tls|ssl|useSSL|sslValidate)=false|"
    r"tls(?:Insecure|AllowInvalidCertificates|AllowInvalidHostnames)=(?:true|1)|"
    r"ssl_cert_reqs=(?:none|CERT_NONE)|TrustServerCertificate=true|"
    r"sslfactory=org\.postgresql\.ssl\.NonValidatingFactory)(?![\w-])|"
    # Node's option that lets TLS 1.0 or 1.1 back in (NODE_OPTIONS); OpenSSL security level 0.
    r"(--tls-min-v1\.[01]|@SECLEVEL=0)(?![\w.])",
    re.IGNORECASE)
"""A setting inside a value or a script that turns TLS or its checks off, in group 1 or 2:
libpq, JDBC (useSSL, sslfactory), MongoDB (tls, sslValidate, tlsInsecure...), redis-py
(ssl_cert_reqs), SQL Server (TrustServerCertificate), Node's --tls-min-v1.0/1.1, OpenSSL's
@SECLEVEL=0."""


_SHOWN_WORDS = TLS_TRUE_WORDS | TLS_FALSE_WORDS | {"", "allow", "prefer", "require", "verify-ca", "verify-full",
                                                  "no-verify", "never", "try", "demand", "hard", "verify_identity",
                                                  "preferred", "verify_ca"}


def tls_setting_shown(name: str, value: str) -> str:
    """``NAME=value`` for a message about a TLS switch, the value shown only when it is a word
    of the switches' vocabulary (``false``, ``require``, ``no-verify``), as ``repr`` when an
    invisible character hides inside such a word (``'fa\\u200blse'``); any other value may be a
    secret put in the wrong place, so only its length is shown."""
    setting = value.strip()
    plain = setting.isprintable() and setting.isascii()
    if plain and (setting.lower() in _SHOWN_WORDS or len(setting) <= 6):
        return f"{name}={setting}"
    if not plain and len(setting) <= 12:
        return f"{name}={setting!r}"
    return f"{name}=<{len(setting)} characters, not shown>"


TLS_OFF_FIX = ("switches TLS or certificate verification off; keep it on and verified with the CA the program "
               "mounts: sslmode=verify-full, a TLS switch set to true, an insecure switch set to false or removed")
"""The fix every refusal of a TLS setting names (config boundary). Not "remove it": an sslmode
removed falls back to libpq's prefer, and DATABASE_SSL removed is often off."""
