#!/usr/bin/python3
"""A listener for an image that has no real server on this machine (MongoDB, MinIO, Grafana,
cAdvisor). It exists only so that a host converges: it answers the captured health check and
nothing else, and every answer says "not proven". The rehearsal report never counts a pass on it.

    standin_stub.py serve --port 27017 [--tls-cert FILE --tls-key FILE] [--http]
    standin_stub.py probe --port 27017 [--tls [--ca FILE]] [--path /x]   exit 0 when it answers
"""
import argparse
import http.server
import socket
import socketserver
import ssl
import sys
import threading


class Http(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 -- http.server's naming
        body = b'{"standin": "not proven: no server"}\n'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class Raw(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"not proven: no server\n")


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(args):
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key or None)
    servers = []
    for port in args.port:
        server = Server(("0.0.0.0", port), Http if args.http else Raw)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"stand-in (not proven: no server) listening on {args.port}", flush=True)
    threading.Event().wait()


def probe(args):
    port = args.port[0]
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        if args.tls:
            context = ssl.create_default_context(cafile=args.ca) if args.ca else ssl._create_unverified_context()
            context.check_hostname = False
            sock = context.wrap_socket(sock, server_hostname="localhost")
        if args.path:
            sock.sendall(f"GET {args.path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            if not sock.recv(64).startswith(b"HTTP/1.0 200"):
                return 1
        else:
            sock.recv(64)
        return 0
    except (OSError, ssl.SSLError) as exc:
        print(f"probe 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "probe"])
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args)
    return probe(args)


if __name__ == "__main__":
    sys.exit(main())
