"""nginx configuration read with crossplane (NGINX Inc.'s own parser), not with patterns.

``parse_nginx(text)`` gives the ``http`` block's directives and one ``Server`` per ``server``
block: its listen sockets and its directives with their nested blocks.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Optional

import crossplane


class NginxParseError(ValueError):
    """The text's structure is not one nginx would load (crossplane's message). Unknown
    directives are not errors here: crossplane 0.5.8's table predates ``http2 on`` and
    ``ssl_reject_handshake``, so its strict mode would reject the committed configs."""


@dataclass(frozen=True)
class Listen:
    address: str
    port: int
    ssl: bool

    @property
    def loopback(self) -> bool:
        return self.address.startswith("127.") or self.address in ("localhost", "[::1]", "unix")


@dataclass
class Server:
    listens: list[Listen]
    directives: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ssl(self) -> bool:
        return any(listen.ssl for listen in self.listens)

    @property
    def loopback_only(self) -> bool:
        return bool(self.listens) and all(listen.loopback for listen in self.listens)

    def first(self, name: str) -> Optional[list[str]]:
        return first(self.directives, name)

    @property
    def names(self) -> list[str]:
        return self.first("server_name") or []


@dataclass
class NginxConfig:
    http: list[dict[str, Any]]
    servers: list[Server]


def first(directives: list[dict[str, Any]], name: str) -> Optional[list[str]]:
    """Arguments of the first directive ``name`` in one block (not its children)."""
    for directive in directives:
        if directive["directive"] == name:
            return list(directive["args"])
    return None


def all_of(directives: list[dict[str, Any]], name: str) -> list[list[str]]:
    return [list(d["args"]) for d in directives if d["directive"] == name]


def _listen(args: list[str]) -> Listen:
    socket = args[0]
    if socket.startswith("unix:"):
        return Listen("unix", 0, "ssl" in args[1:])
    host, _, port = socket.rpartition(":") if not socket.isdigit() else ("", "", socket)
    if not port.isdigit():  # "listen example.com;" means port 80
        host, port = socket, "80"
    return Listen(host or "*", int(port), "ssl" in args[1:])


def parse_nginx(text: str) -> NginxConfig:
    """Parse one nginx.conf document. Raises NginxParseError when nginx would reject it."""
    with tempfile.TemporaryDirectory(prefix="policy-nginx-") as folder:
        path = os.path.join(folder, "nginx.conf")
        with open(path, "w") as handle:
            handle.write(text)
        payload = crossplane.parse(path, single=True, catch_errors=True, comments=False)
    config = payload["config"][0]
    if config["status"] != "ok":
        raise NginxParseError("; ".join(e["error"].replace(path, "nginx.conf") for e in config["errors"]))
    http = next((d.get("block") or [] for d in config["parsed"] if d["directive"] == "http"), [])
    servers = []
    for directive in http:
        if directive["directive"] == "server":
            block = directive.get("block") or []
            listens = [_listen(args) for args in all_of(block, "listen")] or [Listen("*", 80, False)]
            servers.append(Server(listens=listens, directives=block))
    return NginxConfig(http=http, servers=servers)
