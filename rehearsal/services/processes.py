"""The processes ``python -m rehearsal.services KIND ...`` runs inside the lab's namespace: the
SMTP sink, the webhook receiver and the readiness probes."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from rehearsal.services.plan import ACME_HOST


def _serve_smtp(args: argparse.Namespace) -> None:
    """aiosmtpd on every ``--port``: 465 with TLS from the start, others STARTTLS required; AUTH
    (after TLS only) accepts any credentials and records the login name; each message goes to
    the Maildir through aiosmtpd's own Mailbox handler."""
    import signal
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    # AUTH LOGIN's challenges as SendGrid, Postfix and Exchange send them; aiosmtpd's own
    # ("User Name\0") made Alertmanager give up: "*email.loginAuth auth: unexpected server
    # challenge" (its loginAuth answers "Username:" and "Password:" only; seen on the rehearsal).
    SMTP.AuthLoginUsernameChallenge = "Username:"
    SMTP.AuthLoginPasswordChallenge = "Password:"

    class Sink(Mailbox):
        def prepare_message(self, session, envelope):
            message = super().prepare_message(session, envelope)
            if session.authenticated and session.auth_data:
                message["X-Lab-Auth-Login"] = str(session.auth_data)
            return message

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and auth_data.login:
            return AuthResult(success=True, auth_data=auth_data.login.decode(errors="replace"))
        return AuthResult(success=False, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    # Not created here: mailbox.Maildir makes tmp/new/cur only when it creates the directory.
    Path(args.maildir).parent.mkdir(parents=True, exist_ok=True)
    controllers = []
    for port in args.port:
        # On 465 every byte is TLS, but aiosmtpd counts only STARTTLS as TLS for AUTH (its
        # auth_require_tls would refuse AUTH there): it is off on 465 only.
        tls = ({"ssl_context": context, "auth_require_tls": False} if port == 465 else
               {"tls_context": context, "require_starttls": True, "auth_require_tls": True})
        controller = Controller(Sink(args.maildir), hostname=args.address, port=port,
                                authenticator=authenticator, **tls)
        controller.start()
        controllers.append(controller)
    print(f"smtp sink on {args.address} ports {args.port}, maildir {args.maildir}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for controller in controllers:
        controller.stop()


def _serve_webhook(args: argparse.Namespace) -> None:
    """HTTPS on ``address:443``: every POST stored as JSON in ``--directory`` (the URL path
    only as its SHA-256: a Slack webhook URL is a secret), answered ``200 ok`` as Slack does."""
    import itertools
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    counter = itertools.count()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 -- http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            record = {"host": self.headers.get("Host", ""),
                      "path_sha256": hashlib.sha256(self.path.encode()).hexdigest(),
                      "content_type": self.headers.get("Content-Type", ""),
                      "body": body.decode(errors="replace")}
            name = f"{time.time_ns()}-{next(counter):06d}.json"
            (directory / (name + ".tmp")).write_text(json.dumps(record))
            (directory / (name + ".tmp")).rename(directory / name)
            self._answer(200, b"ok")

        def do_GET(self):  # noqa: N802 -- readiness probes
            self._answer(200, b"webhook receiver")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 -- the path is a secret: not logged
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    server = ThreadingHTTPServer((args.address, 443), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"webhook receiver on {args.address}:443, posts in {directory}", flush=True)
    server.serve_forever()


def _probe(argv: Sequence[str]) -> int:
    """Readiness probes, run in the namespace: ``dns SERVER NAME ADDRESS``, ``https ADDRESS
    PORT SNI CAFILE PATH`` (any HTTP answer below 500 over verified TLS), ``smtp ADDRESS PORT
    NAME CAFILE`` (EHLO offers STARTTLS, or TLS verified on 465), ``roots PORT CAFILE`` (prints
    pebble's root and intermediate), ``tcp ADDRESS PORT`` (a connection is accepted)."""
    import http.client
    import smtplib
    import socket
    import ssl

    kind, *rest = argv

    def https(address: str, port: int, sni: str, cafile: str, path: str) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((address, port), timeout=5)
        conn = http.client.HTTPSConnection(sni, port, context=context, timeout=5)
        conn.sock = context.wrap_socket(raw, server_hostname=sni)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    if kind == "dns":
        import dns.resolver

        server, name, expected = rest
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.lifetime = [server], 3
        got = [a.to_text() for a in resolver.resolve(name, "A")]
        return 0 if got == [expected] else 1
    if kind == "tcp":
        address, port = rest
        socket.create_connection((address, int(port)), timeout=5).close()
        return 0
    if kind == "https":
        address, port, sni, cafile, path = rest
        return 0 if https(address, int(port), sni, cafile, path)[0] < 500 else 1
    if kind == "smtp":
        address, port, name, cafile = rest
        context = ssl.create_default_context(cafile=cafile)
        if int(port) == 465:  # the certificate names the address too
            with smtplib.SMTP_SSL(address, 465, context=context, timeout=5) as client:
                return 0 if client.ehlo()[0] == 250 else 1
        with smtplib.SMTP(address, int(port), timeout=5) as client:
            client.ehlo()
            if not client.has_extn("starttls"):
                return 1
            client.starttls(context=context)  # verified: the certificate names the address too
            return 0 if client.ehlo()[0] == 250 else 1
    if kind == "roots":
        port, cafile = rest
        pems = b""
        for what in ("roots", "intermediates"):
            status, body = https("127.0.0.1", int(port), ACME_HOST, cafile, f"/{what}/0")
            if status != 200:
                return 1
            pems += body if body.endswith(b"\n") else body + b"\n"
        sys.stdout.buffer.write(pems)
        return 0
    if kind == "lock-bucket":
        address, cafile, bucket, days = rest
        lock_bucket(f"https://{address}", cafile, bucket, int(days))
        return 0
    print(f"unknown probe {kind}", file=sys.stderr)
    return 2


def lock_bucket(endpoint: str, cafile: Optional[str], bucket: str, days: int) -> None:
    """Creates ``bucket`` on the S3 stand-in at ``endpoint`` with an object lock: every object
    retained ``days`` days in COMPLIANCE mode, which no credential can shorten. R2's bucket lock
    (a rule for every prefix) refuses deleting and overwriting a locked object; S3's object
    lock refuses deleting or changing a locked version, and a plain delete or a re-upload only
    adds a version: the lab proves what a host cannot take away, not R2's exact answers."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, verify=cafile or True, region_name="us-east-1",
                          aws_access_key_id="lab", aws_secret_access_key="lab",
                          config=Config(s3={"addressing_style": "path"}))
    try:
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}}})


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe"]:
        try:
            return _probe(argv[1:])
        except Exception as exc:  # noqa: BLE001 -- a probe that fails says why, once
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    parser = argparse.ArgumentParser(prog="python -m rehearsal.services")
    sub = parser.add_subparsers(dest="kind", required=True)
    smtp = sub.add_parser("smtp")
    smtp.add_argument("--address", required=True)
    smtp.add_argument("--port", type=int, action="append", required=True)
    smtp.add_argument("--cert", required=True)
    smtp.add_argument("--key", required=True)
    smtp.add_argument("--maildir", required=True)
    webhook = sub.add_parser("webhook")
    webhook.add_argument("--address", required=True)
    webhook.add_argument("--cert", required=True)
    webhook.add_argument("--key", required=True)
    webhook.add_argument("--directory", required=True)
    args = parser.parse_args(argv)
    {"smtp": _serve_smtp, "webhook": _serve_webhook}[args.kind](args)
    return 0
