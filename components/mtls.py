"""Mutual TLS between hosts for services that speak plain HTTP (pure renderers).

Two nginx configs, both run by a non-root nginx (nginxinc/nginx-unprivileged):

- the **terminator** on the host that runs the called services: one TLS port per service,
  ``ssl_verify_client on`` against the internal CA (depth 1: a leaf the CA signed itself), and
  an allow-list of caller identities (the client certificate's CN) per service. A caller on the
  list reaches every path; a metrics caller (Prometheus) reaches ``/metrics`` only; anyone
  else gets 403. It forwards plain HTTP to the service on the host's container network by its
  alias, resolved per request (so a replaced container takes over within a second).
- the **caller** side (a sidecar of one calling identity): plain HTTP on the called service's
  own port on the caller's container network, forwarded over TLS to the terminator with that
  identity's client certificate (``proxy_ssl_certificate``), verifying the terminator's
  certificate and name (``proxy_ssl_verify on``).

A client certificate must carry the ``client_auth`` extended key usage: OpenSSL checks the
``sslclient`` purpose when a server verifies a client, so the CA's server certificates (the
data node's, the session collector's) are refused in the handshake.

The functions render the production file and the one the real-tool test runs
(``tests/test_mtls_real.py``), so the test proves what ships; the keyword defaults are the
container's paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from components.nginx import MOZILLA_INTERMEDIATE_CIPHERS, PROXY_CONNECT_TIMEOUT_S, RESOLVER_VALID_S

CONF_DIR = "/etc/nginx/mtls"
"""Where the container reads its config and TLS files (a directory mount: files are replaced)."""
CONF_PATH = f"{CONF_DIR}/nginx.conf"
TLS_DIR = f"{CONF_DIR}/tls"
HEALTH_LISTEN = "127.0.0.1:8081"
"""The health endpoint of both configs, for the container healthcheck; never published."""
METRICS_PATH = "/metrics"
CALLER_HEADER = "X-Platform-Caller"
"""Set by the terminator to the verified caller identity: every copy a client sent, in any case
or spelt with underscores, is dropped (``tests/test_mtls_real.py``)."""
FULL, METRICS = "full", "metrics"

_IDENTITY = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files nginx reads: its own certificate and key, and the CA it trusts."""

    cert: str = f"{TLS_DIR}/tls.crt"
    key: str = f"{TLS_DIR}/tls.key"
    ca: str = f"{TLS_DIR}/ca.crt"


@dataclass(frozen=True)
class Runtime:
    """Where nginx keeps its pid, temporary files and logs (the container's writable /tmp by
    default), and what else goes in its main context (a test adds ``user root;``)."""

    pid_path: str = "/tmp/nginx.pid"
    temp_dir: str = "/tmp"
    error_log: str = "/dev/stderr"
    access_log: str = "/dev/stdout"
    health_listen: str | None = HEALTH_LISTEN
    extra_main: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class TerminatedService:
    """One called service on the terminator: its TLS ``listen_port``, the ``upstream``
    (``alias:port`` on the container network), the caller identities allowed every path
    (``callers``) and those allowed ``/metrics`` only (``metrics_callers``)."""

    name: str
    listen_port: int
    upstream: str
    callers: tuple[str, ...]
    metrics_callers: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallerRoute:
    """One called service on a caller's sidecar: plain HTTP on ``listen_port``, forwarded to
    ``target`` (``address:port`` of the terminator), whose certificate must name ``server_name``."""

    name: str
    listen_port: int
    target: str
    server_name: str


def _var(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "_", name.lower())


def _main(runtime: Runtime) -> list[str]:
    return [
        "worker_processes 1;",
        f"pid {runtime.pid_path};",
        f"error_log {runtime.error_log} warn;",
        *runtime.extra_main,
        "events { worker_connections 1024; }",
        "http {",
        "  default_type application/octet-stream;",
        f"  access_log {runtime.access_log};",
        *(f"  {kind}_temp_path {runtime.temp_dir}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                        "uwsgi", "scgi")),
        "  server_tokens off;",
        "  keepalive_timeout 65;",
        *([
            "  server {",
            f"    listen {runtime.health_listen};",
            "    access_log off;",
            "    location = /healthz { return 200 'ok'; }",
            "  }",
        ] if runtime.health_listen else []),
    ]


def _check(names: Sequence[str], ports: Sequence[int], kind: str) -> None:
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{kind}: services named twice: {duplicated}")
    clashing = sorted({p for p in ports if ports.count(p) > 1})
    if clashing:
        raise ValueError(f"{kind}: ports listened on twice: {clashing}")


def render_terminator_conf(services: Sequence[TerminatedService], *, tls: TlsFiles = TlsFiles(),
                           resolver: str | None = "127.0.0.11", runtime: Runtime = Runtime()) -> str:
    """The terminator's nginx.conf. A service with no caller answers 403 to everyone. Raises
    ``ValueError`` on no services, a service or port given twice, or an identity that is not a
    lower-case DNS name (it is matched against the certificate's CN)."""
    if not services:
        raise ValueError("terminator: no services")
    _check([s.name for s in services], [s.listen_port for s in services], "terminator")
    for s in services:
        bad = [c for c in (*s.callers, *s.metrics_callers) if not _IDENTITY.match(c)]
        if bad:
            raise ValueError(f"terminator: {s.name}: identities must be lower-case DNS names, got {bad}")
    lines = _main(runtime)
    if resolver:
        lines.append(f"  resolver {resolver} valid={RESOLVER_VALID_S}s ipv6=off;")
    lines += [
        "  ssl_protocols TLSv1.2 TLSv1.3;",
        f"  ssl_ciphers {MOZILLA_INTERMEDIATE_CIPHERS};",
        "  ssl_prefer_server_ciphers off;",
        "  ssl_session_tickets off;",
        f"  ssl_certificate {tls.cert};",
        f"  ssl_certificate_key {tls.key};",
        f"  ssl_client_certificate {tls.ca};",
        "  ssl_verify_client on;",
        "  ssl_verify_depth 1;",
        # X-Platform-Caller is the verified caller's alone: proxy_set_header drops every copy a
        # client sent, and a header spelt with underscores (X_Platform_Caller, which WSGI and CGI
        # read as the same name) is dropped as invalid. nginx's defaults, kept stated here.
        "  underscores_in_headers off;",
        "  ignore_invalid_headers on;",
        # The caller is the CN of a certificate the internal CA issued (nginx verified it above).
        '  map $ssl_client_s_dn $mtls_caller { "~(^|,)CN=(?<cn>[^,]+)" $cn; default ""; }',
    ]
    for s in services:
        var = _var(s.name)
        entries = [f'"{c}" {FULL};' for c in sorted(s.callers)]
        entries += [f'"{c}" {METRICS};' for c in sorted(set(s.metrics_callers) - set(s.callers))]
        lines += [f"  map $mtls_caller $mtls_allow_{var} {{", *(f"    {e}" for e in entries),
                  '    default "";', "  }"]
    for s in services:
        var = _var(s.name)
        proxy = [
            f"      set $mtls_upstream_{var} {s.upstream};",
            f"      proxy_pass http://$mtls_upstream_{var};",
            "      proxy_set_header Host $host;",
            f"      proxy_set_header {CALLER_HEADER} $mtls_caller;",
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            f"      proxy_connect_timeout {PROXY_CONNECT_TIMEOUT_S}s;",
            "      proxy_next_upstream error timeout http_502 http_503 http_504;",
        ]
        lines += [
            "",
            "  server {",
            f"    listen {s.listen_port} ssl;",
            f"    # {s.name}: every path for {', '.join(sorted(s.callers)) or 'nobody'}; "
            f"{METRICS_PATH} also for {', '.join(sorted(s.metrics_callers)) or 'nobody else'}",
            f"    location = {METRICS_PATH} {{",
            f'      if ($mtls_allow_{var} = "") {{ return 403; }}',
            *proxy,
            "    }",
            "    location / {",
            f'      if ($mtls_allow_{var} != "{FULL}") {{ return 403; }}',
            *proxy,
            "    }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_caller_conf(routes: Sequence[CallerRoute], *, tls: TlsFiles = TlsFiles(),
                       runtime: Runtime = Runtime()) -> str:
    """A caller sidecar's nginx.conf: each route's plain port forwarded over mutual TLS with the
    sidecar's client certificate. Raises ``ValueError`` on no routes or a service or port given
    twice."""
    if not routes:
        raise ValueError("caller: no routes")
    _check([r.name for r in routes], [r.listen_port for r in routes], "caller")
    lines = _main(runtime)
    for r in routes:
        lines += [
            "",
            "  server {",
            f"    listen {r.listen_port};",
            f"    # {r.name}, over mutual TLS",
            "    location / {",
            f"      proxy_pass https://{r.target};",
            f"      proxy_ssl_certificate {tls.cert};",
            f"      proxy_ssl_certificate_key {tls.key};",
            f"      proxy_ssl_trusted_certificate {tls.ca};",
            "      proxy_ssl_verify on;",
            "      proxy_ssl_verify_depth 1;",
            f"      proxy_ssl_name {r.server_name};",
            "      proxy_ssl_server_name on;",
            "      proxy_ssl_protocols TLSv1.2 TLSv1.3;",
            "      proxy_ssl_session_reuse on;",
            "      proxy_set_header Host $host;",
            f"      proxy_connect_timeout {PROXY_CONNECT_TIMEOUT_S}s;",
            "    }",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"
