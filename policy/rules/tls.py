"""TLS policies: nginx read with crossplane, connection strings in every input, Cloudflare and
App Platform TLS settings (DESIGN.md, "TLS invariants"; Mozilla Server Side TLS 5.7)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from policy.parsers.heredoc import written_files
from policy.parsers.nginx import NginxParseError, all_of, first, parse_nginx
from policy.rules.base import (ADVISORY, HIGH, MANDATORY, MEDIUM, T_APP, T_CF_ZONE_SETTING,
                               T_COMMAND, T_CONTAINER, T_R2_DOMAIN, Case, items, mapping,
                               by_type, is_internal, network, resource_policy, stack_policy, stdin_of,
                               walk_strings)
from policy.rules.fixtures import container, doc, res, script

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


def _configs(props):
    for path, text in nginx_documents(props):
        try:
            yield path, parse_nginx(text)
        except NginxParseError as error:
            yield path, error


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
    for path, parsed in _configs(props):
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
    for path, parsed in _configs(props):
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
    for path, parsed in _configs(props):
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
    for path, parsed in _configs(props):
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
    for path, parsed in _configs(props):
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


URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://[^\s\"'`<>]+", re.IGNORECASE)
LOCAL_HOSTS = ("127.", "localhost", "[::1]", "::1")


def urls(props):
    """(path, scheme, parsed url) of every URL in every string input (env, scripts, commands, specs)."""
    for path, text in walk_strings(props):
        for match in URL.finditer(text):
            try:
                yield path, match.group(1).lower(), urlsplit(match.group(0))
            except ValueError:
                continue


def _remote(url, docker_names_local=False):
    """The URL leaves the host. With ``docker_names_local``, a dotless name that is not an
    address (a container on the same Docker network, resolved by Docker's DNS) stays local."""
    host = (url.hostname or "").lower()
    if docker_names_local and host and "." not in host and ":" not in host:
        return False
    return bool(host) and not host.startswith(LOCAL_HOSTS) and host not in ("localhost", "::1")


def _check_postgres_urls(props, args):
    for path, scheme, url in urls(props):
        if scheme in ("postgres", "postgresql") and _remote(url):
            if parse_qs(url.query).get("sslmode") != ["verify-full"]:
                yield f"{path} carries a Postgres URL to {url.hostname} without sslmode=verify-full"


TLS_TYPES = [T_CONTAINER, T_APP, T_COMMAND]
resource_policy(
    "platform-connection-configure-postgres-verify-full",
    "Every Postgres connection URL that leaves the host verifies the server with sslmode=verify-full.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["PostgreSQL docs 32.19 (libpq SSL support, verify-full)", "Kredete encryption in transit"],
    fix="Append ?sslmode=verify-full&sslrootcert=<cluster CA> to the URL.",
    types=TLS_TYPES, check=_check_postgres_urls,
    cases=Case(doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=verify-full&sslrootcert=/ca.crt",
                                   "SCRATCH=postgresql://postgres@127.0.0.1:55432"])),
               [(doc(container(envs=["DATABASE_URL=postgresql://u:p@db:25060/kro?sslmode=require"])),
                 ["envs[0] carries a Postgres URL to db without sslmode=verify-full"]),
                (doc(res(T_APP, "app", {"spec": {"services": [{"envs": [{"key": "DATABASE_URL", "value": "postgres://u@db.example.com/x"}]}]}})),
                 ["spec.services[0].envs[0].value carries a Postgres URL to db.example.com without sslmode=verify-full"])]))


def _check_mongodb_tls(props, args):
    for path, scheme, url in urls(props):
        if scheme in ("mongodb", "mongodb+srv") and _remote(url):
            query = {k.lower(): v for k, v in parse_qs(url.query).items()}
            if scheme == "mongodb" and query.get("tls") != ["true"] and query.get("ssl") != ["true"]:
                yield f"{path} carries a MongoDB URL to {url.hostname} without tls=true"


resource_policy(
    "platform-connection-configure-mongodb-tls",
    "Every MongoDB connection URL that leaves the host uses TLS.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["MongoDB docs: connection string tls option", "Kredete encryption in transit"],
    fix="Add tls=true&tlsCAFile=<CA> to the URL (mongodb+srv implies TLS).",
    types=TLS_TYPES, check=_check_mongodb_tls,
    cases=Case(doc(container(envs=["MONGODB_URI=mongodb://u:p@10.0.0.3:27017/db?tls=true&tlsCAFile=/ca.crt",
                                   "ATLAS=mongodb+srv://u:p@cluster.example.net/db"])),
               [(doc(container(envs=["MONGODB_URI=mongodb://u:p@10.0.0.3:27017/db"])),
                 ["envs[0] carries a MongoDB URL to 10.0.0.3 without tls=true"])]))


def _check_redis_tls(props, args):
    for path, scheme, url in urls(props):
        if scheme == "redis" and _remote(url, docker_names_local=True):
            yield f"{path} carries a redis:// URL to {url.hostname}; use rediss:// (TLS)"


resource_policy(
    "platform-connection-configure-redis-tls",
    "Every Redis connection to another host uses rediss:// (TLS); a container on the same Docker network is the same host.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Redis docs: TLS", "Kredete encryption in transit"],
    fix="Use rediss:// with the CA, or keep the Redis client on the same host.",
    types=TLS_TYPES, check=_check_redis_tls,
    cases=Case(doc(container(envs=["REDIS_URL=rediss://:p@10.0.0.3:6379/0", "LOCAL=redis://127.0.0.1:6379",
                                   "SAME_NETWORK=redis://redis:6379/0"])),
               [(doc(container(envs=["REDIS_URL=redis://:p@10.0.0.3:6379/0"])),
                 ["envs[0] carries a redis:// URL to 10.0.0.3; use rediss:// (TLS)"])]))


TLS_OFF = [
    (re.compile(r"\bsslmode=(disable|allow|prefer)\b", re.IGNORECASE), "sslmode={0}"),
    (re.compile(r"\b(tls|ssl)=false\b", re.IGNORECASE), "{0}=false"),
    (re.compile(r"\btls(?:Insecure|AllowInvalidCertificates|AllowInvalidHostnames)=true\b", re.IGNORECASE), "{0}"),
    (re.compile(r"\bNODE_TLS_REJECT_UNAUTHORIZED=0\b"), "NODE_TLS_REJECT_UNAUTHORIZED=0"),
    (re.compile(r"\bPGSSLMODE=(disable|allow|prefer)\b"), "PGSSLMODE={0}"),
    (re.compile(r"(?:^|\s)(?:curl\s[^\n]*?\s(?:-k|--insecure)|--no-check-certificate)\b"), "certificate checks switched off"),
]


def _check_tls_disabled(props, args):
    for path, text in walk_strings(props):
        for pattern, label in TLS_OFF:
            match = pattern.search(text)
            if match:
                shown = label.format(match.group(1) if match.groups() else match.group(0).strip())
                yield f"{path} disables TLS or its verification ({shown})"


resource_policy(
    "platform-connection-disallow-tls-disabled",
    "No input (env, script, command, spec) switches TLS or certificate verification off.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["CWE-295", "CWE-319", "Kredete encryption in transit"],
    fix="Remove the flag and give the client the CA it needs to verify the server.",
    types=TLS_TYPES, check=_check_tls_disabled,
    cases=Case(doc(container(envs=["DATABASE_URL=postgresql://db/x?sslmode=verify-full", "MONGO=mongodb://h/x?tls=true"])),
               [(doc(container(envs=["DATABASE_URL=postgresql://db/x?sslmode=disable", "NODE_TLS_REJECT_UNAUTHORIZED=0"])),
                 ["envs[0] disables TLS or its verification (sslmode=disable)",
                  "envs[1] disables TLS or its verification (NODE_TLS_REJECT_UNAUTHORIZED=0)"]),
                (doc(script("s", body="mongosh 'mongodb://h/x?tls=false'\ncurl -k https://x")),
                 ["stdin disables TLS or its verification (tls=false)"])]))


def _check_zone_tls(props, args):
    setting, value = props.get("settingId"), props.get("value")
    if setting == "ssl" and value != "strict":
        yield f"Cloudflare zone SSL mode is {value!r}; set it to strict (full, with validation)"
    if setting == "min_tls_version" and str(value) not in ("1.2", "1.3"):
        yield f"Cloudflare zone minimum TLS version is {value}; set 1.2 or newer"
    if setting == "always_use_https" and value != "on":
        yield "Cloudflare zone does not always use HTTPS; set always_use_https on"


resource_policy(
    "cloudflare-zonesetting-configure-strict-tls",
    "Cloudflare zones use SSL mode strict, a minimum of TLS 1.2 and always HTTPS.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Cloudflare docs: SSL/TLS encryption modes (Full strict)", *MOZILLA],
    fix="Set zone settings ssl=strict, min_tls_version=1.2, always_use_https=on.",
    types=[T_CF_ZONE_SETTING], check=_check_zone_tls,
    cases=Case(doc(res(T_CF_ZONE_SETTING, "ssl", {"settingId": "ssl", "value": "strict"}),
                   res(T_CF_ZONE_SETTING, "tls", {"settingId": "min_tls_version", "value": "1.2"})),
               [(doc(res(T_CF_ZONE_SETTING, "ssl", {"settingId": "ssl", "value": "flexible"}),
                     res(T_CF_ZONE_SETTING, "tls", {"settingId": "min_tls_version", "value": "1.0"})),
                 ["Cloudflare zone SSL mode is 'flexible'; set it to strict (full, with validation)",
                  "Cloudflare zone minimum TLS version is 1.0; set 1.2 or newer"])]))


def _check_r2_domain_tls(props, args):
    if str(props.get("minTls") or "1.0") not in ("1.2", "1.3"):
        yield f"R2 custom domain {props.get('domain')} allows TLS below 1.2; set min_tls to 1.2"


resource_policy(
    "cloudflare-r2customdomain-configure-min-tls",
    "R2 custom domains require TLS 1.2 or newer.",
    level=MANDATORY, severity=MEDIUM, category="tls",
    sources=["Cloudflare R2 docs: custom domains (min_tls)", *MOZILLA],
    fix="Set min_tls to 1.2.",
    types=[T_R2_DOMAIN], check=_check_r2_domain_tls,
    cases=Case(doc(res(T_R2_DOMAIN, "d", {"domain": "b.example.com", "minTls": "1.2"})),
               [(doc(res(T_R2_DOMAIN, "d", {"domain": "b.example.com", "minTls": "1.0"})),
                 ["R2 custom domain b.example.com allows TLS below 1.2; set min_tls to 1.2"])]))


# --- self-hosted Postgres: TLS required by pg_hba.conf -----------------------------------------
# `ssl=on` only offers TLS: the image's pg_hba.conf (`host all all all scram-sha-256`, and trust
# on loopback) admits the same clients in plaintext, so a client with sslmode=disable gets in
# (found by the staging rehearsal on V-EdFinance). Judged from the container's own command and
# the pg_hba.conf the program writes, line by line.
_PG_DATA = "/var/lib/postgresql"


def _runs_postgres(props) -> bool:
    command = [str(w) for w in items(props.get("command"))]
    mounted = any(str(mapping(v).get("containerPath", "")).startswith(_PG_DATA) for v in items(props.get("volumes")))
    return bool(command and command[0] == "postgres") or mounted


def _hba_problems(text: str) -> list[str]:
    problems = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] in ("local", "hostssl"):
            continue
        if words[0] in ("host", "hostnossl", "hostgssenc", "hostnogssenc") and words[-1] != "reject":
            problems.append(f"`{' '.join(words)}` admits TCP without TLS")
        elif words[0].startswith("include"):
            problems.append(f"`{' '.join(words)}` includes lines the policy cannot read")
    return problems


def _check_postgres_hba(args):
    written = {path: body for c in by_type(args, T_COMMAND) for path, body in written_files(stdin_of(c.props))}
    for item in by_type(args, T_CONTAINER):
        if not _runs_postgres(item.props):
            continue
        command = [str(w) for w in items(item.props.get("command"))]
        hba = [w.split("=", 1)[1] for w in command if w.startswith("hba_file=")]
        if not hba:
            yield (f"container {item.name} runs PostgreSQL with its image's pg_hba.conf (no -c hba_file=), "
                   "which admits TCP clients without TLS"), item.urn
            continue
        bodies = [body for path, body in written.items() if path.endswith(hba[-1])]
        if not bodies:
            yield f"container {item.name} reads {hba[-1]}, which no command of the stack writes", item.urn
            continue
        for problem in _hba_problems(bodies[-1]):
            yield f"container {item.name}: {hba[-1]} {problem}", item.urn


_HBA = ("local all all trust\nhostnossl all all all reject\nhostnossl replication all all reject\n"
        "hostssl all all all scram-sha-256\nhostssl replication all all scram-sha-256\n")
_HBA_PATH = "/run/platform/hba/pg_hba.conf"


def _pg(command_tail=("-c", f"hba_file={_HBA_PATH}"), hba=_HBA):
    return doc(container("v-postgres", command=["postgres", "-c", "ssl=on", *command_tail]),
               script("v-postgres-files", files={f"/srv/v/files/postgres{_HBA_PATH}": hba}))


stack_policy(
    "docker-container-configure-postgres-tls-only",
    "A self-hosted PostgreSQL admits TCP clients over TLS only: its pg_hba.conf has hostssl lines and no host or hostnossl line that accepts.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["PostgreSQL docs 21.1 (The pg_hba.conf File: hostssl, hostnossl)", "Kredete encryption in transit",
             "CIS PostgreSQL Benchmark 6.7 (TLS)"],
    fix="Start the server with components.postgres_init.hba_file_args() and deliver render_pg_hba() at HBA_PATH.",
    check=_check_postgres_hba,
    cases=Case(_pg(),
               [(_pg(command_tail=()),
                 ["container v-postgres runs PostgreSQL with its image's pg_hba.conf (no -c hba_file=), "
                  "which admits TCP clients without TLS"]),
                (_pg(hba=_HBA.replace("hostnossl all all all reject", "host all all all scram-sha-256")),
                 [f"container v-postgres: {_HBA_PATH} `host all all all scram-sha-256` admits TCP without TLS"]),
                (doc(container("v-postgres", command=["postgres", "-c", f"hba_file={_HBA_PATH}"])),
                 [f"container v-postgres reads {_HBA_PATH}, which no command of the stack writes"])]))


# --- mutual TLS between hosts (issue #22: "all internal traffic ... uses mutual TLS") ---------

def _proxies(directives, inherited=()):
    """(proxy_pass target, the proxy_ssl_* directives in force there) of every proxy_pass,
    nested locations included: nginx inherits them from the enclosing blocks."""
    here = [*inherited, *(d for d in directives if d["directive"].startswith("proxy_ssl_"))]
    for d in directives:
        if d["directive"] == "proxy_pass" and d["args"]:
            yield d["args"][0], here
        elif d["directive"] in ("location", "if", "limit_except") and d.get("block"):
            yield from _proxies(d["block"], here)


def _ssl_value(directives, name):
    found = [d["args"] for d in directives if d["directive"] == name]
    return found[-1] if found else None


def _internal_target(target):
    """The address of a proxy_pass target when it is an internal (RFC 1918...) IP literal."""
    host = urlsplit(target).hostname or ""
    parsed = network(host)
    return host if parsed is not None and is_internal(parsed) else None


def _mtls_caller(parsed):
    """The config is a caller sidecar: it serves no TLS and every proxy_pass goes over TLS."""
    targets = [t for s in parsed.servers for t, _ in _proxies(s.directives)]
    return bool(targets) and not any(s.ssl for s in parsed.servers) and all(t.startswith("https://") for t in targets)


def _mtls_terminator(parsed):
    """The config verifies client certificates on every TLS server (no browser talks to it)."""
    tls = [s for s in parsed.servers if s.ssl and _answers(s)]
    return bool(tls) and all((first(s.directives, "ssl_verify_client") or first(parsed.http, "ssl_verify_client"))
                             == ["on"] for s in tls)


def _check_mtls_routes(props, args):
    for path, text in walk_strings(props):
        key = text.split("=", 1)[0] if path.startswith("envs[") else ""
        # A forward proxy carries CONNECT tunnels to the providers (TLS end to end), not a service route.
        if key.endswith("_PROXY"):
            continue
        for match in URL.finditer(text):
            if match.group(1).lower() != "http":
                continue
            try:
                url = urlsplit(match.group(0))
            except ValueError:
                continue
            if _internal_target(match.group(0)) and path.startswith("envs["):
                yield (f"{path} routes plain HTTP to {url.netloc} on another host; call it through the "
                       "mutual-TLS sidecar (http://<caller>-mtls:<port>)")
    for path, parsed in _configs(props):
        if isinstance(parsed, NginxParseError):
            continue
        for server in parsed.servers:
            for target, ssl in _proxies(server.directives, [d for d in parsed.http
                                                            if d["directive"].startswith("proxy_ssl_")]):
                address = _internal_target(target)
                if not address:
                    continue
                if target.startswith("http://"):
                    yield f"{path}: proxy_pass {target} sends plain HTTP to another host; proxy over mutual TLS"
                    continue
                missing = [name for name, wanted in (("proxy_ssl_certificate", None), ("proxy_ssl_certificate_key", None),
                                                     ("proxy_ssl_trusted_certificate", None), ("proxy_ssl_verify", ["on"]))
                           if _ssl_value(ssl, name) is None or (wanted and _ssl_value(ssl, name) != wanted)]
                if missing:
                    yield (f"{path}: proxy_pass {target} is TLS but not mutual and verified "
                           f"(missing {', '.join(missing)})")


MTLS_CALLER_OK = """events { worker_connections 64; }
http {
  server {
    listen 4000;
    location / {
      proxy_pass https://10.41.0.12:14000;
      proxy_ssl_certificate /tls/tls.crt;
      proxy_ssl_certificate_key /tls/tls.key;
      proxy_ssl_trusted_certificate /tls/ca.crt;
      proxy_ssl_verify on;
    }
  }
}
"""

resource_policy(
    "platform-serviceroute-enable-mtls",
    "A service route to another host is mutual TLS: no container env holds a plain http:// URL to an "
    "internal address, and every nginx proxy_pass to an internal address presents a client certificate and "
    "verifies the server.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Kredete reference architecture: all internal traffic is encrypted and uses mutual TLS where supported",
             "nginx ngx_http_proxy_module (proxy_ssl_certificate, proxy_ssl_verify)", "CWE-319"],
    fix="Send the call to the caller's mutual-TLS sidecar (stacks.pencom.mtls) instead of the other host's "
        "address; in nginx, proxy_pass https:// with proxy_ssl_certificate, _key, _trusted_certificate and "
        "proxy_ssl_verify on.",
    types=[T_CONTAINER, T_COMMAND], check=_check_mtls_routes,
    cases=Case(doc(container(envs=["CORE_SERVICE_URL=http://api-gateway-mtls:4000",
                                   "HTTPS_PROXY=http://10.41.0.11:3128", "SPACES_ENDPOINT=https://10.41.0.14:9000"]),
                   script("sidecar", {"/srv/x/files/a-mtls/etc/nginx/mtls/nginx.conf": MTLS_CALLER_OK})),
               [(doc(container(envs=["CORE_SERVICE_URL=http://10.41.0.12:4000"])),
                 ["envs[0] routes plain HTTP to 10.41.0.12:4000 on another host; call it through the "
                  "mutual-TLS sidecar (http://<caller>-mtls:<port>)"]),
                (doc(script("sidecar", {"/srv/x/nginx.conf": MTLS_CALLER_OK.replace("https://10.41.0.12:14000",
                                                                                    "http://10.41.0.12:4000")})),
                 ["/srv/x/nginx.conf: proxy_pass http://10.41.0.12:4000 sends plain HTTP to another host; "
                  "proxy over mutual TLS"]),
                (doc(script("sidecar", {"/srv/x/nginx.conf": MTLS_CALLER_OK.replace(
                    "      proxy_ssl_certificate /tls/tls.crt;\n", "").replace("proxy_ssl_verify on", "proxy_ssl_verify off")})),
                 ["/srv/x/nginx.conf: proxy_pass https://10.41.0.12:14000 is TLS but not mutual and verified "
                  "(missing proxy_ssl_certificate, proxy_ssl_verify)"])]))
