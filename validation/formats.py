"""Grammars of the values a stack file holds, checked by their real syntax, not their shape.

- Image references: the OCI/Docker reference grammar of ``distribution/reference``
  (https://github.com/distribution/reference/blob/main/regexp.go): lower-case path components
  joined by ``.``, ``_``, ``__`` or dashes; an optional registry (a first component with a dot,
  a colon or ``localhost``); a tag ``[\\w][\\w.-]{0,127}``; a digest. A digest counts as a pin
  only when it is ``sha256:`` plus 64 lower-case hex digits (the OCI image spec's registered
  algorithm, https://github.com/opencontainers/image-spec/blob/main/descriptor.md#digests).
- Hostnames: RFC 1123 section 2.1 / RFC 1035 section 2.3.4: labels of 1-63 letters, digits
  and inner hyphens, at most 253 characters in all; here lower case and fully qualified, with
  a top-level label that is not all digits.
- systemd calendar events: the grammar of ``systemd.time(7)`` ("CALENDAR EVENTS"), checked
  in the tests against ``systemd-analyze calendar``.
- Secrets: env names that hold secrets, and values that are secrets whatever their name.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Optional

# --- image references -------------------------------------------------------------------------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_PINNED_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
NAME_TOTAL_LENGTH_MAX = 255


@dataclass(frozen=True)
class ImageReference:
    domain: Optional[str]
    path: str
    tag: Optional[str]
    digest: Optional[str]

    @property
    def pinned(self) -> bool:
        """Pinned by a sha256 digest, or by a version tag: one with a digit. A tag without one
        (``latest``, ``LATEST``, ``stable``, ``edge``, ``alpine``) names a channel that moves
        (Hadolint DL3007, CIS Docker Benchmark v1.6.0 5.27)."""
        if self.digest is not None:
            return bool(_PINNED_DIGEST.match(self.digest))
        return version_tag(self.tag)


def version_tag(tag: Optional[str]) -> bool:
    """A tag that names a version (it holds a digit), not a channel such as latest or stable."""
    return tag is not None and any(c.isdigit() for c in tag)


def parse_image_reference(reference: str) -> ImageReference:
    """Parse ``[registry/]path[:tag][@digest]``. Raises ValueError naming what is wrong."""
    if not reference or reference != reference.strip() or any(c.isspace() for c in reference):
        raise ValueError("an image reference has no spaces")
    name, digest = reference, None
    if "@" in reference:
        name, digest = reference.split("@", 1)
        if not _DIGEST.match(digest):
            raise ValueError(f"digest {digest!r} is not ALGORITHM:HEX (at least 32 hex digits)")
        if not _PINNED_DIGEST.match(digest):
            raise ValueError("a digest pins an image only as sha256: followed by 64 lower-case hex digits")
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ValueError(f"tag {tag!r} is not a valid tag (letters, digits, _ . -; at most 128)")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"the repository name is longer than {NAME_TOTAL_LENGTH_MAX} characters")
    parts = name.split("/")
    domain = None
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, parts = parts[0], parts[1:]
        if not _DOMAIN.match(domain):
            raise ValueError(f"registry {domain!r} is not a host name with an optional port")
    for part in parts:
        if not _PATH_COMPONENT.match(part):
            raise ValueError(f"repository component {part!r} must be lower-case letters and digits, "
                             "joined by . _ __ or -")
    return ImageReference(domain=domain, path="/".join(parts), tag=tag, digest=digest)


def check_pinned_image(reference: str) -> str:
    """The reference unchanged when it parses and is pinned; ValueError otherwise."""
    image = parse_image_reference(reference)
    if not image.pinned:
        raise ValueError("image must be pinned by a version tag (one with a digit, not latest or stable) "
                         "or by an @sha256: digest, e.g. nginx:1.27.3-alpine")
    return reference


# --- hostnames -------------------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def hostname_problem(value: str) -> Optional[str]:
    """Why ``value`` is not a lower-case fully qualified hostname (RFC 1123), or None."""
    if len(value) > 253:
        return f"a hostname has at most 253 characters, this one has {len(value)}"
    labels = value.split(".")
    if len(labels) < 2:
        return "must be a fully qualified hostname such as api.example.com"
    for label in labels:
        if len(label) > 63:
            return f"label {label[:20]}... is longer than 63 characters"
        if not _LABEL.match(label):
            return (f"label {label!r} must be 1-63 lower-case letters, digits or inner hyphens "
                    "(RFC 1123)")
    if labels[-1].isdigit():
        return "the top-level label cannot be all digits"
    return None


# --- control characters ----------------------------------------------------------------------

BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
"""The bidirectional embedding, override and isolate controls (U+202A-U+202E, U+2066-U+2069):
they make text display in another order than it is read ("Trojan Source", CVE-2021-42574)."""


def control_characters(value: str) -> list[str]:
    """The control characters (Unicode category Cc: NUL, tab, newline, DEL, C1) and the
    bidirectional controls (``BIDI_CONTROLS``) in ``value``."""
    return sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS})


# --- secrets ---------------------------------------------------------------------------------

_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|(^|_)PASS($|_)|(^|_)PWD($|_)|SECRET|TOKEN|API_?KEY|"
    r"PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL|(^|_)DSN($|_)|DATABASE_URL|_URI$|(^|_)AUTH($|_TOKEN|_KEY)|"
    r"AUTHORIZATION|BASIC_AUTH|COOKIE_KEY|SESSION_KEY|SIGNING_KEY|ENCRYPTION_KEY|MASTER_KEY|"
    r"WEBHOOK|(^|_)SALT($|_)|(?<!PUBLIC)_KEY$)",
    re.IGNORECASE,
)
# The scheme is bounded (RFC 3986 sets no length; real ones are short) so that a long run of
# letters is searched in linear time: an unbounded ``[a-z0-9+.-]*`` before ``://`` rescans the
# rest of the value from every position (a 200,000-character value took minutes).
# The user may be empty: Redis takes ``redis://:password@host`` (its AUTH has no user).
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]{0,31}://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)
# ``user:password@`` with or without a scheme, as a message would quote it; not an image's
# ``name:tag@sha256:...`` (a digest follows the @ there).
# Both parts are bounded so that a long value is searched in linear time.
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]{0,31}://)?[^\s/:@'\"`]{0,256}:[^\s/@'\"`]{1,256}@"
                       r"(?![A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{32,})", re.IGNORECASE)
# Oracle's Easy Connect with credentials, ``user/password@host[:port][/service]`` (Oracle Net
# Services Reference, "Easy Connect naming"), as SQL*Plus and the drivers' connect strings take it.
_ORACLE_CONNECT = re.compile(
    r"(?:^|[\s=(])[A-Za-z][A-Za-z0-9_$#]{0,127}/[^/\s@]{1,256}@(?://)?[A-Za-z0-9.-]{1,253}(?::\d{1,5})?"
    r"(?:/[A-Za-z0-9_.$-]+)?(?:$|[\s)])")
# A password as a URL query parameter (libpq's ``?password=``; most drivers take it too).
_QUERY_PASSWORD = re.compile(r"://[^\s?#]{0,2048}\?(?:[^\s#]{0,2048}&)?(?:password|pass|pwd)=([^&#\s]+)",
                             re.IGNORECASE)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
KNOWN_TOKENS = re.compile(
    r"(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
    r"(sk|rk)_(live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}|"
    r"glpat-[A-Za-z0-9_-]{20,}|hooks\.slack\.com/services/|"
    # DigitalOcean's personal, OAuth and refresh tokens (docs.digitalocean.com, "API tokens").
    r"do[por]_v1_[a-f0-9]{64})")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")
# A whole value of 48 or more hex digits with letters and digits (192 bits and up: the output of
# `openssl rand -hex 32`, a raw AES or HMAC key). Shorter hex is an id (Cloudflare's account and
# zone ids have 32 digits, a git commit 40), a digest carries its algorithm (sha256:...).
_HEX_KEY = re.compile(r"(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{48,}|"
                      r"(?=[0-9A-F]*[A-F])(?=[0-9A-F]*[0-9])[0-9A-F]{48,}")
ENTROPY_BITS_MIN = 4.2
"""Shannon entropy per character above which a 32+ character run of letters, digits and
``+/_=-`` with upper case, lower case and digits is taken for a generated secret. Hex (hashes,
digests, account ids) tops out at 4 bits a character and has no upper case, so it never counts."""


def looks_secret_name(name: str) -> bool:
    """True for an environment variable or key name that holds a secret (``DB_PASS``,
    ``SENTRY_DSN``, ``GOOGLE_CREDENTIALS``, ``SIGNING_PRIVATE_KEY``, ``BASIC_AUTH``...)."""
    return bool(_SECRET_NAME.search(name))


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def secret_value_kind(value: str) -> Optional[str]:
    """What kind of secret ``value`` is whatever its key ("a URL with a user and password", "a URL
    with a password" (a ``?password=`` query parameter), "a private key", "an API token", "a hex
    key", "a high-entropy token"), or None."""
    if _PRIVATE_KEY.search(value):
        return "a private key"
    if _URL_WITH_PASSWORD.search(value):
        return "a URL with a user and password"
    if _QUERY_PASSWORD.search(value):
        return "a URL with a password"
    if _ORACLE_CONNECT.search(value):
        return "an Oracle connect string with a user and password"
    if KNOWN_TOKENS.search(value):
        return "an API token"
    if _HEX_KEY.fullmatch(value.strip()) and _entropy(value.strip()) >= 3:
        return "a hex key"
    for run in _TOKEN_RUN.findall(value):
        classes = (any(c.isupper() for c in run), any(c.islower() for c in run), any(c.isdigit() for c in run))
        if all(classes) and _entropy(run) >= ENTROPY_BITS_MIN:
            return "a high-entropy token"
    return None


# --- SSH keys --------------------------------------------------------------------------------

def openssh_key_problem(private_key: str) -> Optional[str]:
    """Why ``private_key`` cannot be one of the program's SSH keys (a deploy user's key, the SSH
    certificate authority's), or None. The message says what is wrong, not which key: the
    caller names the key it checks ("the SSH certificate authority's key" + the message).

    It must be an unencrypted OpenSSH private key (``-----BEGIN OPENSSH PRIVATE KEY-----``):
    the command provider's SSH connection and ``tls.get_public_key(private_key_openssh=...)``
    take that format, and the deploy user's ``authorized_keys`` gets its public half, which must
    be an OpenSSH public key (``ssh-ed25519``, ``ssh-rsa``, ``ecdsa-sha2-*``). Parsed with
    ``cryptography`` (``load_ssh_private_key``). The message never quotes the key."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private_key.strip().encode() + b"\n", password=None)
    except TypeError:
        return "is protected by a passphrase; it must have none (remove it with `ssh-keygen -p -N '' -f KEY`)"
    except (ValueError, UnicodeError):
        hint = (" (this is a PEM key; convert it with `ssh-keygen -p -N '' -f KEY`, which writes the "
                "OpenSSH format)" if _PRIVATE_KEY.search(private_key) else "")
        return f"is not an OpenSSH private key{hint}"
    try:
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    except (ValueError, TypeError):
        public = ""
    if not public.startswith(("ssh-", "ecdsa-")):
        return "has no OpenSSH public half (use an Ed25519, RSA or ECDSA key)"
    return None


# --- systemd calendar events -----------------------------------------------------------------

_WEEKDAYS = {name: i for i, names in enumerate((
    ("mon", "monday"), ("tue", "tuesday"), ("wed", "wednesday"), ("thu", "thursday"),
    ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"))) for name in names}
_SHORTHANDS = {"minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually",
               "quarterly", "semiannually"}


def _component(text: str, low: int, high: int, what: str, *, fraction: bool = False,
               allow_tilde: bool = False) -> None:
    """One component of a date or time: ``*`` or a list of values, ranges ``a..b`` and
    repetitions ``v/n`` (systemd.time(7))."""
    if text == "":
        raise ValueError(f"empty {what}")
    for item in text.split(","):
        value, _, step = item.partition("/")
        if _ and not re.fullmatch(r"\d+(\.\d{1,6})?" if fraction else r"\d+", step):
            raise ValueError(f"{what} repetition {step!r} is not a number")
        if _ and float(step) <= 0:
            raise ValueError(f"{what} repetition must be positive")
        if value == "*":
            continue
        bounds = value.split("..")
        if len(bounds) > 2:
            raise ValueError(f"{what} {value!r} is not a value or a range a..b")
        numbers = []
        for bound in bounds:
            if not re.fullmatch(r"\d+(\.\d{1,6})?" if fraction else r"\d+", bound):
                raise ValueError(f"{what} {bound!r} is not a number")
            number = float(bound)
            if not low <= number <= high + (0.999999 if fraction else 0):
                raise ValueError(f"{what} {bound} is outside {low}..{high}")
            numbers.append(number)
        if len(numbers) == 2 and (numbers[0] > numbers[1] or (_ and True)):
            if numbers[0] > numbers[1]:
                raise ValueError(f"{what} range {value} runs backwards")
            raise ValueError(f"{what} {item!r}: a range cannot also repeat")


def _weekdays(text: str) -> None:
    for item in text.split(","):
        ends = item.split("..")
        if len(ends) > 2 or any(e.lower() not in _WEEKDAYS for e in ends):
            raise ValueError(f"weekday {item!r} is not a day name (Mon, Tuesday...) or a range Mon..Fri")


def check_calendar(spec: str) -> str:
    """``spec`` unchanged when it is a systemd calendar event (``OnCalendar=``); ValueError
    otherwise. Grammar: ``[WEEKDAYS] [[YEAR-]MONTH-DAY] [HOUR:MINUTE[:SECOND]] [TIMEZONE]``, or
    a shorthand (``daily``, ``weekly``...), as systemd.time(7) defines it."""
    from zoneinfo import available_timezones

    words = spec.split()
    if not words:
        raise ValueError("a calendar event cannot be empty")
    if len(words) == 1 and words[0].lower() in _SHORTHANDS:
        return spec
    if len(words) == 2 and words[0].lower() in _SHORTHANDS and words[1] == "UTC":
        return spec
    if words[-1] == "UTC" or words[-1] in available_timezones():
        words = words[:-1]
    if words and re.fullmatch(r"[A-Za-z][A-Za-z.,]*", words[0]):
        _weekdays(words.pop(0))
    date = time = None
    for word in words:
        if ":" in word and time is None:
            time = word
        elif "-" in word and date is None and time is None:
            date = word
        else:
            raise ValueError(f"{word!r} is neither a date (YYYY-MM-DD, *-*-*) nor a time (HH:MM[:SS])")
    if date is None and time is None and not words and spec.split()[0].lower() not in _WEEKDAYS \
            and not re.fullmatch(r"[A-Za-z][A-Za-z.,]*", spec.split()[0]):
        raise ValueError("no date or time")
    if date is not None:
        tilde = "~" in date
        parts = re.split(r"[-~]", date)
        if len(parts) == 2:
            parts = ["*", *parts]
        if len(parts) != 3 or (tilde and date.count("~") != 1):
            raise ValueError(f"date {date!r} is not [YEAR-]MONTH-DAY")
        if tilde and date.rfind("~") < date.rfind("-"):
            raise ValueError(f"date {date!r}: ~ comes between the month and the day")
        _component(parts[0], 1970, 2199, "year")
        _component(parts[1], 1, 12, "month")
        _component(parts[2], 1, 31, "day")
    if time is not None:
        parts = time.split(":")
        if len(parts) == 2:
            parts.append("00")
        if len(parts) != 3:
            raise ValueError(f"time {time!r} is not HOUR:MINUTE[:SECOND]")
        _component(parts[0], 0, 23, "hour")
        _component(parts[1], 0, 59, "minute")
        _component(parts[2], 0, 59, "second", fraction=True)
    return spec


def at_most_hourly(spec: str) -> str:
    """``spec`` (a calendar event that passed :func:`check_calendar`) unchanged when it fires at
    most once an hour; ValueError when it fires more often (``minutely``, ``*:0/5``, ``*:00,30``):
    every backup run dumps the whole datastore and uploads it, so a tighter recovery point comes
    from point-in-time recovery (WAL shipping, ``rpo_minutes``), not from more dumps."""
    words = spec.split()
    if words[0].lower() == "minutely":
        raise ValueError(f"{spec!r} runs more often than hourly; each run is a full dump and upload; "
                         "schedule at most hourly and use rpo_minutes (point-in-time recovery) for a "
                         "tighter recovery point")
    time = next((w for w in words if ":" in w), None)
    if time is not None:
        parts = time.split(":")
        if any(re.search(r"[*,/]|\.\.", part) for part in parts[1:]):
            raise ValueError(f"{spec!r} runs more often than hourly (minute or second {':'.join(parts[1:])!r}); "
                             "each run is a full dump and upload; schedule at most hourly and use "
                             "rpo_minutes (point-in-time recovery) for a tighter recovery point")
    return spec


def calendar_in_utc(spec: str) -> str:
    """``spec`` (a calendar event that passed :func:`check_calendar`) with `` UTC`` appended when
    it names no time zone, so that a schedule means the same on every host: without a zone,
    systemd reads the time in the host's local zone (systemd.time(7), "Calendar Events"), which
    the program does not set and which differs between droplets (UTC) and on-premises nodes."""
    from zoneinfo import available_timezones

    last = spec.split()[-1]
    return spec if last == "UTC" or last in available_timezones() else f"{spec} UTC"


def mask_userinfo(text: str) -> str:
    """``text`` with the user and password of every ``user:password@`` (RFC 3986 userinfo, with
    or without a scheme: ``postgres://app:pw@db``, ``redis://:pw@r``, ``app:pw@db``) replaced by
    ``***``, so that an error message quoting a bad value never shows a credential."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme') or ''}***@", text)


def secret_parts(value: str) -> set[str]:
    """The pieces of a secret value that must not be quoted either: a URL's password, and
    its long token runs."""
    parts = {m.group(1) for m in re.finditer(r"://[^/\s:@]*:([^/\s@]+)@", value)}
    parts |= {m.group(1) for m in _QUERY_PASSWORD.finditer(value)}
    parts |= {run for run in _TOKEN_RUN.findall(value) if _entropy(run) >= 3.5}
    return {p for p in parts if len(p) >= 6}
