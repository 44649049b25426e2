"""TLS policies on the HTTP front ends: the nginx configs the scripts write, read with
crossplane (DESIGN.md, "TLS invariants"; Mozilla Server Side TLS 5.7), and App Platform ingress
redirects."""

from __future__ import annotations

import re

from policy.parsers.heredoc import written_files
from policy.parsers.nginx import NginxParseError, all_of, first, parse_nginx
from policy.rules.base import (ADVISORY, HIGH, MANDATORY, MEDIUM, T_APP, T_COMMAND, Case, items,
                               mapping, resource_policy, stdin_of)
from policy.rules.fixtures import doc, res, script

# Mozilla Server Side TLS, intermediate configuration, version 5.7.
MOZILLA_INTERMEDIATE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305")
MOZILLA = ["Mozilla Server Side TLS 5.7, intermediate (https://wiki.mozilla.org/Security/Server_Side_TLS)"]


def nginx_documents(props):
    """(path, text) of every nginx.conf a script writes (a file with an ``http`` block)."""
    for path, body in written_files(stdin_of(props)):
        if path.endswith(".conf") and re.search(r"^\s*http\s*\{", body, re.MULTILINE):
            yield path, body


def configs(props):
    """(path, parsed config or its NginxParseError) of every nginx.conf a script writes."""
    for path, text in nginx_documents(props):
        try:
            yield path, parse_nginx(text)
        except NginxParseError as error:
            yield path, error


def proxies(directives, inherited=()):
    """(proxy_pass target, the proxy_ssl_* directives in force there) of every proxy_pass,
    nested locations included: nginx inherits them from the enclosing blocks."""
    here = [*inherited, *(d for d in directives if d["directive"].startswith("proxy_ssl_"))]
    for d in directives:
        if d["directive"] == "proxy_pass" and d["args"]:
            yield d["args"][0], here
        elif d["directive"] in ("location", "if", "limit_except") and d.get("block"):
            yield from proxies(d["block"], here)


def _mtls_caller(parsed):
    """The config is a caller sidecar: it serves no TLS and every proxy_pass goes over TLS."""
    targets = [t for s in parsed.servers for t, _ in proxies(s.directives)]
    return bool(targets) and not any(s.ssl for s in parsed.servers) and all(t.startswith("https://") for t in targets)


def _mtls_terminator(parsed):
    """The config verifies client certificates on every TLS server (no browser talks to it)."""
    tls = [s for s in parsed.servers if s.ssl and _answers(s)]
    return bool(tls) and all((first(s.directives, "ssl_verify_client") or first(parsed.http, "ssl_verify_client"))
                             == ["on"] for s in tls)


NGINX_OK = """worker_processes auto;
events { worker_connections 1024; }
http {
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers %s;
    ssl_prefer_server_ciphers off;
    ssl_session_tickets off;
    server_tokens off;
    server {
        listen 8080 default_server;
        location ^~ /.well-known/acme-challenge/ { root /acme; }
        location / { return 301 https://$host$request_uri; }
    }
    server {
        listen 127.0.0.1:8081;
        location = /healthz { return 200 'ok'; }
    }
    server {
        listen 8443 ssl default_server;
        ssl_reject_handshake on;
    }
    server {
        listen 8443 ssl;
        http2 on;
        add_header Strict-Transport-Security "max-age=63072000" always;
        location / { proxy_pass http://app:3000; }
    }
}
""" % MOZILLA_INTERMEDIATE


def nginx_doc(conf):
    return doc(script("ingress", {"/srv/x/nginx/nginx.conf": conf}))


def _check_nginx_parses(props, args):
    for path, parsed in configs(props):
        if isinstance(parsed, NginxParseError):
            yield f"{path} is not a configuration nginx would load: {parsed}"


resource_policy(
    "command-nginx-configure-valid-syntax",
    "Every nginx.conf a host script writes parses, so the TLS policies read what nginx will run.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["crossplane (NGINX Inc.'s parser)", "nginx -t"],
    fix="Fix the syntax error crossplane names; the renderer's tests run nginx -t too.",
    types=[T_COMMAND], check=_check_nginx_parses,
    cases=Case(nginx_doc(NGINX_OK),
               [(nginx_doc(NGINX_OK.replace("server_tokens off;", "server_tokens off")),
                 ['/srv/x/nginx/nginx.conf is not a configuration nginx would load: directive "server_tokens" is not terminated by ";" in nginx.conf:8'])]))


def _redirects(directives):
    ret = first(directives, "return")
    return bool(ret) and ret[0] in ("301", "302", "307", "308") and len(ret) > 1 and ret[1].startswith("https://")


def _check_nginx_redirect(props, args):
    for path, parsed in configs(props):
        # A mutual-TLS caller sidecar serves plain HTTP to its own host's containers only, by design.
        if isinstance(parsed, NginxParseError) or _mtls_caller(parsed):
            continue
        for server in parsed.servers:
            if server.ssl or server.loopback_only or _redirects(server.directives):
                continue
            locations = [d for d in server.directives if d["directive"] == "location"]
            serving = [l for l in locations if "acme-challenge" not in " ".join(l["args"])
                       and not _redirects(l.get("block") or [])]
            if serving or not locations:
                where = " ".join(serving[0]["args"]) if serving else "/"
                yield (f"an nginx HTTP server on port {server.listens[0].port} answers {where} "
                       "without redirecting to HTTPS")


resource_policy(
    "command-nginx-enable-https-redirect",
    "The nginx ingress answers plain HTTP with a redirect to HTTPS, except the ACME challenge path.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Mozilla Web Security Guidelines: HTTP redirections", *MOZILLA],
    fix="Make every location of the port-80 server `return 301 https://$host$request_uri;` (ACME path excepted).",
    types=[T_COMMAND], check=_check_nginx_redirect,
    cases=Case(nginx_doc(NGINX_OK),
               [(nginx_doc(NGINX_OK.replace("location / { return 301 https://$host$request_uri; }",
                                            "location /\n{\n  proxy_pass http://app;\n}")),
                 ["an nginx HTTP server on port 8080 answers / without redirecting to HTTPS"]),
                (nginx_doc(NGINX_OK.replace("listen 8080 default_server;", "listen [::]:80;").replace(
                    "location / { return 301 https://$host$request_uri; }", "location /api/ { proxy_pass http://app; }")),
                 ["an nginx HTTP server on port 80 answers /api/ without redirecting to HTTPS"])]))


def _answers(server):
    return first(server.directives, "ssl_reject_handshake") != ["on"]


def _has_hsts(directives):
    return any(args and args[0].lower() == "strict-transport-security" for args in all_of(directives, "add_header"))


def _check_nginx_tls(props, args):
    for path, parsed in configs(props):
        # A caller sidecar terminates no TLS: platform-serviceroute-enable-mtls checks its side.
        if isinstance(parsed, NginxParseError) or _mtls_caller(parsed):
            continue
        protocols = first(parsed.http, "ssl_protocols")
        if protocols is None:
            yield "nginx config sets no ssl_protocols; set TLSv1.2 TLSv1.3"
        else:
            old = [p for p in protocols if p in ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")]
            if old:
                yield f"nginx allows {', '.join(old)}; allow TLSv1.2 and TLSv1.3 only"
        tls_servers = [s for s in parsed.servers if s.ssl]
        if not tls_servers:
            yield "nginx config terminates no TLS"
        for server in tls_servers:
            # HSTS is for browsers; none talks to a terminator that demands a client certificate.
            if _answers(server) and not _mtls_terminator(parsed) and not _has_hsts(server.directives) \
                    and not _has_hsts(parsed.http):
                yield (f"the nginx HTTPS server {' '.join(server.names) or '(unnamed)'} sends no "
                       "Strict-Transport-Security header")


resource_policy(
    "command-nginx-configure-modern-tls",
    "The nginx ingress serves TLS 1.2 or newer only and sends HSTS from every HTTPS server.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=MOZILLA,
    fix="Set `ssl_protocols TLSv1.2 TLSv1.3;` in http and add_header Strict-Transport-Security in each server.",
    types=[T_COMMAND], check=_check_nginx_tls,
    cases=Case(nginx_doc(NGINX_OK),
               [(nginx_doc(NGINX_OK.replace("TLSv1.2 TLSv1.3", "TLSv1 TLSv1.1 TLSv1.2").replace(
                   '        add_header Strict-Transport-Security "max-age=63072000" always;\n', "")),
                 ["nginx allows TLSv1, TLSv1.1; allow TLSv1.2 and TLSv1.3 only",
                  "the nginx HTTPS server (unnamed) sends no Strict-Transport-Security header"]),
                (nginx_doc(NGINX_OK.replace("listen 8443 ssl;", "listen 8443;")
                           .replace("listen 8443 ssl default_server;", "listen 8444 default_server;")
                           .replace("    ssl_protocols TLSv1.2 TLSv1.3;\n", "")),
                 ["nginx config sets no ssl_protocols; set TLSv1.2 TLSv1.3", "nginx config terminates no TLS",
])]))


def _check_nginx_ciphers(props, args):
    allowed = set(MOZILLA_INTERMEDIATE.split(":"))
    for path, parsed in configs(props):
        if isinstance(parsed, NginxParseError) or not any(s.ssl for s in parsed.servers):
            continue
        ciphers = first(parsed.http, "ssl_ciphers")
        if ciphers is None:
            yield "nginx sets no ssl_ciphers; use the Mozilla intermediate list"
        else:
            extra = [c for c in ciphers[0].split(":") if c not in allowed]
            if extra:
                yield f"nginx allows ciphers outside Mozilla intermediate: {', '.join(extra)}"
        if (first(parsed.http, "ssl_session_tickets") or ["on"]) != ["off"]:
            yield "nginx leaves ssl_session_tickets on, which breaks forward secrecy; set it off"


resource_policy(
    "command-nginx-configure-mozilla-ciphers",
    "nginx offers only Mozilla intermediate ciphers and no session tickets.",
    level=MANDATORY, severity=MEDIUM, category="tls",
    sources=MOZILLA,
    fix="Copy ssl_ciphers from the Mozilla intermediate configuration and set ssl_session_tickets off.",
    types=[T_COMMAND], check=_check_nginx_ciphers,
    cases=Case(nginx_doc(NGINX_OK),
               [(nginx_doc(NGINX_OK.replace("ssl_ciphers ", "ssl_ciphers AES128-SHA:RC4-MD5:").replace("ssl_session_tickets off;", "")),
                 ["nginx allows ciphers outside Mozilla intermediate: AES128-SHA, RC4-MD5",
                  "nginx leaves ssl_session_tickets on, which breaks forward secrecy; set it off"])]))


def _check_server_tokens(props, args):
    for path, parsed in configs(props):
        if not isinstance(parsed, NginxParseError) and (first(parsed.http, "server_tokens") or ["on"]) != ["off"]:
            yield "nginx announces its version (server_tokens on); set server_tokens off"


resource_policy(
    "command-nginx-disallow-server-tokens",
    "nginx does not announce its version.",
    level=ADVISORY, severity=MEDIUM, category="tls",
    sources=["CIS NGINX Benchmark 2.5.1"],
    fix="Set `server_tokens off;` in the http block.",
    types=[T_COMMAND], check=_check_server_tokens,
    cases=Case(nginx_doc(NGINX_OK),
               [(nginx_doc(NGINX_OK.replace("server_tokens off;", "")),
                 ["nginx announces its version (server_tokens on); set server_tokens off"])]))


def _check_app_https(props, args):
    spec = mapping(props.get("spec"))
    for rule in items(mapping(spec.get("ingress")).get("rules")):
        redirect = mapping(mapping(rule).get("redirect"))
        if redirect and str(redirect.get("scheme", "https")).lower() != "https":
            yield "an App Platform ingress rule redirects to a non-HTTPS scheme"


resource_policy(
    "digitalocean-app-enable-https-redirect",
    "App Platform ingress never redirects to plain HTTP.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Mozilla Web Security Guidelines: HTTP redirections"],
    fix="Use scheme https in ingress redirects.",
    types=[T_APP], check=_check_app_https,
    cases=Case(doc(res(T_APP, "app", {"spec": {"ingress": {"rules": [{"redirect": {"scheme": "https"}}]}}})),
               [(doc(res(T_APP, "app", {"spec": {"ingress": {"rules": [{"redirect": {"scheme": "http"}}]}}})),
                 ["an App Platform ingress rule redirects to a non-HTTPS scheme"])]))
