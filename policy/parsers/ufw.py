"""UFW commands parsed with ufw(8)'s grammar, into the tuples ``ufw --dry-run`` prints.

Covers the forms ufw accepts: the short form (``ufw allow 5432/tcp``, ``ufw allow 22``,
``ufw allow OpenSSH``, ``ufw allow ssh``), the full form (``[route] [insert N | prepend]
allow|deny|reject|limit [in|out] [on IFACE] [log|log-all] [proto P] [from ADDR [port P | app A]]
[to ADDR [port P | app A]] [comment C]``), port ranges (``6000:6007``) and comma lists
(``80,443,8000:8010``). A platform waiver is the ``# waiver: NAME`` comment on the line.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from dataclasses import dataclass
from typing import Optional

ACTIONS = ("allow", "deny", "reject", "limit")
# Application profiles shipped by Debian/Ubuntu packages (/etc/ufw/applications.d).
APP_PORTS = {"openssh": ("tcp", "22"), "nginx http": ("tcp", "80"), "nginx https": ("tcp", "443"),
             "nginx full": ("tcp", "80,443"), "www": ("tcp", "80"), "www secure": ("tcp", "443"),
             "www full": ("tcp", "80,443"), "squid": ("tcp", "3128"), "postgresql": ("tcp", "5432")}
WORLD = ("0.0.0.0/0", "::/0")


class UfwSyntaxError(ValueError):
    """A ``ufw`` command line ufw itself would reject."""


@dataclass(frozen=True)
class UfwRule:
    action: str
    direction: str = "in"
    route: bool = False
    interface: str = ""
    proto: str = "any"
    src: str = "any"
    src_port: str = "any"
    dst: str = "any"
    dst_port: str = "any"
    app: str = ""
    log: str = ""
    line: str = ""
    waiver: str = ""

    def port_ranges(self) -> list[tuple[int, int]]:
        """Destination ports as inclusive ranges; "any" is 1-65535."""
        return parse_ports(self.dst_port)

    def source_networks(self) -> list[str]:
        return list(WORLD) if self.src == "any" else [self.src]

    @property
    def from_anyone(self) -> bool:
        return any(ipaddress.ip_network(n, strict=False).prefixlen < 8 for n in self.source_networks())

    def tuples(self) -> list[str]:
        """The ``### tuple ###`` lines ``ufw --dry-run`` prints for this rule (app names left out)."""
        out = []
        for version in (4, 6):
            src = _family(self.src, version)
            dst = _family(self.dst, version)
            if src is None or dst is None:
                continue
            action = self.action + (f"_{self.log}" if self.log else "")
            action = f"route:{action}" if self.route else action
            direction = self.direction + (f"_{self.interface}" if self.interface else "")
            out.append(f"{action} {self.proto} {self.dst_port} {dst} {self.src_port} {src} {direction}")
        return out


def _family(address: str, version: int) -> Optional[str]:
    if address == "any":
        return WORLD[0] if version == 4 else WORLD[1]
    network = ipaddress.ip_network(address, strict=False)
    if network.version != version:
        return None
    # ufw prints a single host without its prefix length (/32, /128).
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def parse_ports(text: str) -> list[tuple[int, int]]:
    if text in ("any", ""):
        return [(1, 65535)]
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        ranges.append((int(low), int(high or low)))
    return ranges


def _port_spec(spec: str) -> tuple[str, str]:
    """``5432/tcp`` -> (tcp, 5432); ``ssh`` -> service port; an app profile -> its ports."""
    port, _, proto = spec.partition("/")
    if re.fullmatch(r"[0-9,:]+", port):
        parse_ports(port)
        if (":" in port or "," in port) and not proto:
            raise UfwSyntaxError(f"port ranges and lists need a protocol: {spec}")
        return proto or "any", port
    if port.lower() in APP_PORTS:
        return APP_PORTS[port.lower()]
    try:
        return proto or "any", str(socket.getservbyname(port, proto or "tcp"))
    except OSError:
        raise UfwSyntaxError(f"unknown service or application profile {spec!r}") from None


def _address(text: str) -> str:
    if text == "any":
        return text
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UfwSyntaxError(f"bad address {text!r}") from None
    return text


def parse_ufw_line(line: str) -> Optional[UfwRule]:
    """The rule a ``ufw ...`` line adds, or None for other ufw commands (default, enable, ...).
    Raises UfwSyntaxError for a rule ufw would reject."""
    code, _, comment = line.partition("#")
    waiver = re.search(r"waiver:\s*([\w.-]+)", comment)
    try:
        words = shlex.split(code)
    except ValueError as error:
        raise UfwSyntaxError(f"{error}: {line.strip()}") from None
    if not words or words[0] != "ufw":
        return None
    words = [w for w in words[1:] if w not in ("--dry-run", "--force")]
    route = bool(words) and words[0] == "route"
    if route:
        words = words[1:]
    if words[:1] == ["insert"]:
        words = words[2:]
    elif words[:1] == ["prepend"]:
        words = words[1:]
    if not words or words[0] not in ACTIONS:
        return None
    fields: dict = {"action": words[0], "route": route, "line": line.strip(),
                    "waiver": waiver.group(1) if waiver else ""}
    rest = words[1:]
    if rest[:1] in (["in"], ["out"]):
        fields["direction"] = rest.pop(0)
        if rest[:1] == ["on"]:
            rest.pop(0)
            fields["interface"] = rest.pop(0)
    if rest[:1] in (["log"], ["log-all"]):
        fields["log"] = rest.pop(0)
    if "comment" in rest:
        rest = rest[:rest.index("comment")]
    if len(rest) == 1:  # short form: PORT[/PROTO] or APP or service
        fields["proto"], fields["dst_port"] = _port_spec(rest[0])
        if rest[0].lower() in APP_PORTS:
            fields["app"] = rest[0]
        return UfwRule(**fields)
    index = 0
    while index < len(rest):
        word = rest[index]
        value = rest[index + 1] if index + 1 < len(rest) else None
        if value is None:
            raise UfwSyntaxError(f"{word} needs a value: {line.strip()}")
        if word == "proto":
            fields["proto"] = value
        elif word == "from":
            fields["src"] = _address(value)
            side = "src"
        elif word == "to":
            fields["dst"] = _address(value)
            side = "dst"
        elif word == "port":
            parse_ports(value)
            fields[f"{side if 'side' in locals() else 'dst'}_port"] = value
        elif word == "app":
            proto, ports = _port_spec(value)
            fields["proto"], fields[f"{side}_port"], fields["app"] = proto, ports, value
        else:
            raise UfwSyntaxError(f"unexpected {word!r}: {line.strip()}")
        index += 2
    ports = (fields.get("dst_port", "any"), fields.get("src_port", "any"))
    if any(":" in p or "," in p for p in ports) and fields.get("proto", "any") == "any":
        raise UfwSyntaxError(f"port ranges and lists need a protocol: {line.strip()}")
    return UfwRule(**fields)


def ufw_rules(script: str) -> tuple[list[UfwRule], list[str]]:
    """Every distinct rule a script adds, and the ufw lines that do not parse."""
    rules: list[UfwRule] = []
    errors: list[str] = []
    seen = set()
    for raw in script.splitlines():
        line = raw.strip()
        if not line.startswith("ufw "):
            continue
        try:
            rule = parse_ufw_line(line)
        except UfwSyntaxError as error:
            errors.append(str(error))
            continue
        if rule is not None and rule.line not in seen:
            seen.add(rule.line)
            rules.append(rule)
    return rules, errors


def default_policy(script: str, direction: str = "incoming") -> Optional[str]:
    """The last ``ufw default POLICY DIRECTION`` a script sets."""
    found = None
    for raw in script.splitlines():
        words = raw.split("#", 1)[0].split()
        if words[:2] == ["ufw", "default"] and len(words) >= 3:
            if len(words) == 3 or words[3] in (direction, direction.replace("ing", "")):
                found = words[2]
    return found
