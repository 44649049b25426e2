"""Render a complete nginx.conf for TLS ingress from a routes table (a pure function).

Invariants it encodes: HTTP answers 301 to HTTPS except the ACME challenge path; TLS 1.2 and
1.3 with Mozilla's "intermediate" ciphers (guideline 5.7); HSTS on every HTTPS response; OCSP
stapling; WebSocket upgrade only where a route asks for it; unknown hosts are refused.

The same function renders the production file and the one the tests run on loopback, so the
tests prove what ships. It runs as a non-root nginx (nginxinc/nginx-unprivileged): it listens on
8080/8443 inside the container, published on 80/443.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

MOZILLA_INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
])
HSTS_MAX_AGE = 63072000  # two years, Mozilla's recommendation
RESOLVER_VALID_S = 1  # how long nginx keeps an upstream's DNS answer
PROXY_CONNECT_TIMEOUT_S = 3  # a container on the host's bridge connects in milliseconds
PROXY_NEXT_UPSTREAM_TIMEOUT_S = 10  # the longest a request spends trying other addresses


@dataclass(frozen=True)
class Route:
    host: str
    upstream: str  # host:port reachable from nginx (a container alias or an address)
    websocket: bool = False
    max_body_mb: int = 10


@dataclass(frozen=True)
class Certificate:
    fullchain: str
    private_key: str


@dataclass(frozen=True)
class IngressConfig:
    routes: Sequence[Route]
    certificate: Certificate
    acme_webroot: str = "/var/www/acme"
    http_port: int = 8080
    https_port: int = 8443
    resolver: str | None = "127.0.0.11"  # Docker's embedded DNS; None when upstreams are IPs
    pid_path: str = "/tmp/nginx.pid"
    temp_dir: str = "/tmp"
    error_log: str = "/dev/stderr"
    access_log: str = "/dev/stdout"
    worker_processes: str = "auto"
    mime_types: str | None = "/etc/nginx/mime.types"
    health_listen: str | None = "127.0.0.1:8081"  # for the container healthcheck, never public
    extra_main: Sequence[str] = field(default_factory=tuple)


def _upstream_var(route: Route) -> str:
    return "upstream_" + route.host.replace(".", "_").replace("-", "_")


def render_nginx_conf(config: IngressConfig) -> str:
    if not config.routes:
        raise ValueError("an ingress needs at least one route")
    hosts = [r.host for r in config.routes]
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"duplicate hosts in routes: {sorted(h for h in hosts if hosts.count(h) > 1)}")
    cert = config.certificate
    lines: list[str] = [
        f"worker_processes {config.worker_processes};",
        f"pid {config.pid_path};",
        f"error_log {config.error_log} warn;",
        *config.extra_main,
        "events { worker_connections 1024; }",
        "http {",
        f"  include {config.mime_types};" if config.mime_types else "  types { text/html html; }",
        "  default_type application/octet-stream;",
        f"  access_log {config.access_log};",
        f"  client_body_temp_path {config.temp_dir}/client_body;",
        f"  proxy_temp_path {config.temp_dir}/proxy;",
        f"  fastcgi_temp_path {config.temp_dir}/fastcgi;",
        f"  uwsgi_temp_path {config.temp_dir}/uwsgi;",
        f"  scgi_temp_path {config.temp_dir}/scgi;",
        "  server_tokens off;",
        "  sendfile on;",
        "  keepalive_timeout 65;",
        "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
    ]
    if config.resolver:
        # Resolve upstreams per request: nginx starts even while a backend is being replaced.
        # A service's alias names the old and the new container during a switchover (both
        # carry it); 1 s validity drops the removed one from nginx's answer within a second.
        lines.append(f"  resolver {config.resolver} valid={RESOLVER_VALID_S}s ipv6=off;")
    lines += [
        "  ssl_protocols TLSv1.2 TLSv1.3;",
        f"  ssl_ciphers {MOZILLA_INTERMEDIATE_CIPHERS};",
        "  ssl_prefer_server_ciphers off;",
        "  ssl_session_timeout 1d;",
        "  ssl_session_cache shared:TLS:10m;",
        "  ssl_session_tickets off;",
        # Stapling applies where the CA still publishes OCSP; Let's Encrypt stopped in 2025, and
        # nginx then simply serves without a staple.
        "  ssl_stapling on;",
        "  ssl_stapling_verify on;",
        f"  ssl_trusted_certificate {cert.fullchain};",
        "",
        "  server {",
        f"    listen {config.http_port} default_server;",
        "    server_name _;",
        "    location ^~ /.well-known/acme-challenge/ {",
        f"      root {config.acme_webroot};",
        "      default_type text/plain;",
        "    }",
        "    location / { return 301 https://$host$request_uri; }",
        "  }",
        "",
        *([
            "  server {",
            f"    listen {config.health_listen};",
            "    access_log off;",
            "    location = /healthz { return 200 'ok'; }",
            "  }",
            "",
        ] if config.health_listen else []),
        "  server {",
        f"    listen {config.https_port} ssl default_server;",
        "    server_name _;",
        "    ssl_reject_handshake on;",
        "  }",
    ]
    for route in config.routes:
        var = _upstream_var(route)
        lines += [
            "",
            "  server {",
            f"    listen {config.https_port} ssl;",
            "    http2 on;",
            f"    server_name {route.host};",
            f"    ssl_certificate {cert.fullchain};",
            f"    ssl_certificate_key {cert.private_key};",
            f'    add_header Strict-Transport-Security "max-age={HSTS_MAX_AGE}; includeSubDomains" always;',
            '    add_header X-Content-Type-Options "nosniff" always;',
            f"    client_max_body_size {route.max_body_mb}m;",
            "    location / {",
            f"      set ${var} {route.upstream};",
            f"      proxy_pass http://${var};",
            "      proxy_set_header Host $host;",
            "      proxy_set_header X-Real-IP $remote_addr;",
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "      proxy_set_header X-Forwarded-Proto https;",
            # Zero-downtime switchover: a connection refused (the new container not listening
            # yet), a connect timeout (the old one just removed, its address still cached) or a
            # 502/503/504 from one address is retried on the alias' other address; nginx never
            # retries a request it already sent unless it is idempotent.
            f"      proxy_connect_timeout {PROXY_CONNECT_TIMEOUT_S}s;",
            "      proxy_next_upstream error timeout http_502 http_503 http_504;",
            f"      proxy_next_upstream_timeout {PROXY_NEXT_UPSTREAM_TIMEOUT_S}s;",
        ]
        if route.websocket:
            lines += [
                "      proxy_http_version 1.1;",
                "      proxy_set_header Upgrade $http_upgrade;",
                "      proxy_set_header Connection $connection_upgrade;",
                "      proxy_read_timeout 3600s;",
            ]
        lines += ["    }", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"
