"""Placeholder values a real deploy must refuse: the offline synth accepts them, `pulumi up` not.

The committed stack files hold values that only stand in for real ones (the seeds do not give
them). Applied as written they would lock people out (UFW admitting SSH only from a
documentation address) or point at nothing. A value is a placeholder when it is:

- an IPv4 address or network inside a documentation range (RFC 5737: 192.0.2.0/24,
  198.51.100.0/24, 203.0.113.0/24) or IPv6 inside 2001:db8::/32 (RFC 3849);
- a name under a reserved example domain (RFC 2606 / RFC 6761: example.com, example.net,
  example.org and the TLDs .example, .invalid, .test), including the domain of an email address;
- marked: a string starting with ``PLACEHOLDER-`` (the convention for new stack files), or one
  of the made-up ids committed before that convention (``KNOWN_PLACEHOLDERS``).

``check`` raises ConfigError listing every placeholder with its key path and what to put there,
before any resource is registered, unless the program runs in the offline synth
(``OFFLINE_SYNTH``, which only the synth sets); there ``warning`` gives the same list.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from stacks.engine_config import plain_platform_config
from stacks.errors import ConfigError, key_path

# Set to True by the offline synth (synth/engine.py) for the run it makes; never set under the
# Pulumi CLI, so a real preview or up enforces.
OFFLINE_SYNTH: contextvars.ContextVar[bool] = contextvars.ContextVar("platform_offline_synth", default=False)

PLACEHOLDER_SECRET = "synth-placeholder-secret"
"""The offline synth's stand-in for a secret the stack file does not hold (synth/stackfile.py),
followed by ``:<key>``; a real deploy never sees one."""

MARKER = "PLACEHOLDER-"
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
RESERVED_TLDS = ("example", "invalid", "test")

# Made-up values committed in Pulumi.*.yaml before the PLACEHOLDER- convention; they pass the
# format checks (32 hex characters, an MD5 fingerprint), so only this list can tell.
KNOWN_PLACEHOLDERS: dict[str, str] = {
    "4f3e2d1c0b9a88776655443322110fed": "made-up Cloudflare account id",
    "9a8b7c6d5e4f30211203f4e5d6c7b8a9": "made-up Cloudflare account id",
    "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa": "made-up SSH key fingerprint",
    "qjkpf8aa3kuun9j4xytllsxui13qcy013y6c45kxxok=": "made-up WireGuard public key",
    "mvoum/yykkfyv9cy/udsuca60htmbm2vxotwyaxcokq=": "made-up WireGuard public key",
}

# What to put there, by the last key of the path (the field's name).
FIXES: dict[str, str] = {
    "admin_cidrs": "the office or VPN egress CIDR that `pulumi up` runs from (else SSH locks you out)",
    "cloudflare_account_id": "the Cloudflare account id (dashboard, Account home, Account ID)",
    "ssh_key_fingerprints": "the MD5 fingerprint of a key uploaded to DigitalOcean "
                            "(`doctl compute ssh-key list`)",
    "public_address": "the node's real public address",
    "private_address": "the node's real private address",
    "address": "the host's real address",
    "host": "the real public hostname, with DNS you control",
    "acme_email": "a mailbox you read (Let's Encrypt expiry notices)",
    "smtp_from": "a sender address of a domain you send mail from",
    "emails": "a mailbox you read",
    "public_key": "the peer's WireGuard public key (`wg pubkey < private.key` on its device)",
}

_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?:/\d{1,2})?(?![\d.])")
_IPV6 = re.compile(r"(?i)(?<![\w:])2001:0?db8:")
_HOST = re.compile(r"(?i)(?:^|[@/\s.])((?:[a-z0-9-]+\.)*[a-z0-9-]+\.([a-z]+))(?=$|[:/\s,])")


@dataclass(frozen=True)
class Placeholder:
    path: str
    value: str
    why: str

    def message(self) -> str:
        field = re.sub(r"\[\d+\]$", "", self.path).rsplit(".", 1)[-1]
        fix = FIXES.get(field, "the real value")
        return f"{self.path}: {self.value!r} is a placeholder ({self.why}); put {fix} there"


def _why(text: str) -> str | None:
    if text.upper().startswith(MARKER):
        return f"marked {MARKER}"
    if text.lower() in KNOWN_PLACEHOLDERS:
        return KNOWN_PLACEHOLDERS[text.lower()]
    for match in _IPV4.finditer(text):
        try:
            address = ipaddress.ip_address(match.group(1))
        except ValueError:
            continue
        for network in DOCUMENTATION_NETWORKS:
            if address.version == 4 and address in network:
                return f"documentation range {network}, RFC 5737"
    if _IPV6.search(text):
        return "documentation range 2001:db8::/32, RFC 3849"
    for match in _HOST.finditer(text):
        host, tld = match.group(1).lower(), match.group(2).lower()
        if tld in RESERVED_TLDS or any(host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS):
            return "reserved example domain, RFC 2606/6761"
    return None


def _walk(value: Any, top: str, loc: tuple) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, top, loc + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, top, loc + (index,))
    elif isinstance(value, str):
        yield key_path(top, loc), value


def find(raw: Mapping[str, Any]) -> list[Placeholder]:
    """Every placeholder in a stack's ``platform:*`` config (keys without the namespace; values
    as Pulumi delivers them, objects as JSON text)."""
    found = []
    for top in sorted(raw):
        value = raw[top]
        if isinstance(value, str) and value.strip()[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        for path, text in _walk(value, top, ()):
            why = _why(text)
            if why:
                found.append(Placeholder(path, text, why))
    return found


def check(raw: Mapping[str, Any] | None = None) -> list[Placeholder]:
    """Raise ConfigError for placeholders under a real engine; return them in the offline synth.

    ``raw`` defaults to the running program's non-secret config."""
    found = find(plain_platform_config() if raw is None else raw)
    if found and not OFFLINE_SYNTH.get():
        raise ConfigError([p.message() for p in found]
                          + ["placeholders are fine for `python -m synth`; a real deploy needs "
                             "the real values (README, 'Deploying for real')"])
    return found


def warning(found: list[Placeholder]) -> str:
    lines = "\n".join(f"  - {p.message()}" for p in found)
    return (f"{len(found)} placeholder value{'s' if len(found) != 1 else ''} that a real "
            f"`pulumi up` refuses:\n{lines}")
