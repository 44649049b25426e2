"""A WebSocket client for the live probes (``rehearsal.checks.tlsprobes.websocket_check``), run
at a probe position as ``python -m rehearsal.checks.wsprobe URL ADDRESS CAFILE``: the upgrade to
``URL`` (``wss://host[:port]/path``) over a TLS connection to ``ADDRESS`` that verifies ``host``
against ``CAFILE``, one text message sent, the same message expected back (the backend stand-in
echoes). The client is the ``websockets`` library (requirements-dev.txt). Exit 0 with the echo
on stdout; exit 1 with the reason on stderr (one line)."""

from __future__ import annotations

import secrets
import socket
import ssl
import sys
from typing import Optional, Sequence
from urllib.parse import urlsplit


def echo(url: str, address: str, cafile: str, *, timeout_s: float = 10.0) -> str:
    """The message the server sent back to one it was sent; raises ``RuntimeError`` when it is
    another, and the library's errors (``websockets.exceptions.InvalidStatus`` for an upgrade
    answered with another status than 101, ``ssl.SSLError``, ``OSError``) as they come."""
    from websockets.sync.client import connect

    parts = urlsplit(url)
    sock = socket.create_connection((address, parts.port or 443), timeout=timeout_s)
    message = f"lab-probe {secrets.token_hex(8)}"
    with connect(url, sock=sock, ssl=ssl.create_default_context(cafile=cafile), server_hostname=parts.hostname,
                 open_timeout=timeout_s, close_timeout=timeout_s) as client:
        client.send(message)
        got = client.recv(timeout=timeout_s)
    if got != message:
        raise RuntimeError(f"sent {message!r}, got {got!r} back")
    return got


def main(argv: Optional[Sequence[str]] = None) -> int:
    url, address, cafile = list(sys.argv[1:] if argv is None else argv)
    try:
        print(echo(url, address, cafile))
    except Exception as exc:  # noqa: BLE001 -- a probe that fails says why, once
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
