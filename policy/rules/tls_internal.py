"""TLS between the platform's own hosts: a self-hosted PostgreSQL that admits TCP clients over
TLS only, and service routes to another host over mutual TLS (issue #22)."""

from __future__ import annotations

from urllib.parse import urlsplit

from policy.parsers.heredoc import written_files
from policy.parsers.nginx import NginxParseError
from policy.rules.base import (HIGH, MANDATORY, T_COMMAND, T_CONTAINER, T_ONPREM, Case, by_type, is_internal,
                               items, mapping, network, stack_policy, stdin_of, walk_strings)
from policy.rules.fixtures import container, doc, res, script
from policy.rules.nginx_configs import configs, proxies
from policy.rules.paths import where
from policy.rules.tls_connections import URL
from pulumi_policy.proxy import UnknownValueError

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

def _ssl_value(directives, name):
    found = [d["args"] for d in directives if d["directive"] == name]
    return found[-1] if found else None


def _internal_target(target):
    """The address of a proxy_pass target when it is an internal (RFC 1918...) IP literal."""
    host = urlsplit(target).hostname or ""
    parsed = network(host)
    return host if parsed is not None and is_internal(parsed) else None


def _own_addresses(resource):
    """The addresses of the host a resource runs on: its nearest ``OnPremVps`` ancestor's
    ``address`` and ``privateAddress`` (the component records both, as inputs and as outputs,
    for the stack policies); none for any other host: a droplet's addresses are outputs of the
    droplet, which the state does not hold before it exists."""
    parent = resource.parent
    while parent is not None and parent.resource_type != T_ONPREM:
        parent = parent.parent
    if parent is None:
        return set()
    found = (network(parent.props.get(key)) for key in ("address", "privateAddress"))
    return {n.network_address for n in found if n is not None and n.num_addresses == 1}


def _route_problems(item):
    props = item.props
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
            address = _internal_target(match.group(0))
            # The container's own host: its traffic to its host's address never leaves the
            # machine, as a call on its container network does not.
            if address and path.startswith("envs[") and network(address).network_address not in _own_addresses(item):
                yield (f"{where(props, path)} routes plain HTTP to {url.netloc} on another host; call it through the "
                       "mutual-TLS sidecar (http://<caller>-mtls:<port>)")
    for path, parsed in configs(props):
        if isinstance(parsed, NginxParseError):
            continue
        for server in parsed.servers:
            for target, ssl in proxies(server.directives, [d for d in parsed.http
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


def _check_mtls_routes(args):
    # A stack policy for the container's host (its parent), which a resource policy cannot see;
    # an unknown value stops one resource's check, not the others', and is raised after them.
    unknown = None
    for item in by_type(args, T_CONTAINER, T_COMMAND):
        try:
            for message in _route_problems(item):
                yield message, item.urn
        except UnknownValueError as error:
            unknown = unknown or error
    if unknown is not None:
        raise unknown


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


def _on(host, *children):
    """``children`` as the host component's own resources (its containers and commands)."""
    return [host] + [{**child, "parent": host["urn"]} for child in children]


# The app node (one address) and the edge (public and private), as the OnPremVps components record them.
_APP_NODE = res(T_ONPREM, "p-app", {"tier": "app", "address": "10.41.0.12", "privateAddress": "10.41.0.12"}, custom=False)
_EDGE = res(T_ONPREM, "p-edge", {"tier": "edge", "address": "203.0.113.21", "privateAddress": "10.41.0.11"}, custom=False)

stack_policy(
    "platform-serviceroute-enable-mtls",
    "A service route to another host is mutual TLS: no container env holds a plain http:// URL to an "
    "internal address other than its own host's, and every nginx proxy_pass to an internal address presents a "
    "client certificate and verifies the server.",
    level=MANDATORY, severity=HIGH, category="tls",
    sources=["Kredete reference architecture: all internal traffic is encrypted and uses mutual TLS where supported",
             "nginx ngx_http_proxy_module (proxy_ssl_certificate, proxy_ssl_verify)", "CWE-319"],
    fix="Send the call to the caller's mutual-TLS sidecar (stacks.pencom.mtls) instead of the other host's "
        "address; in nginx, proxy_pass https:// with proxy_ssl_certificate, _key, _trusted_certificate and "
        "proxy_ssl_verify on.",
    check=_check_mtls_routes,
    cases=Case(doc(container(envs=["CORE_SERVICE_URL=http://api-gateway-mtls:4000",
                                   "HTTPS_PROXY=http://10.41.0.11:3128", "SPACES_ENDPOINT=https://10.41.0.14:9000"]),
                   script("sidecar", {"/srv/x/files/a-mtls/etc/nginx/mtls/nginx.conf": MTLS_CALLER_OK}),
                   # A call to its own host's address, loopback or a container alias stays on the host.
                   *_on(_APP_NODE, container("p-app-payments", envs=["PAYMENTS_URL=http://10.41.0.12:5000",
                                                                     "AUDIT_URL=http://audit:9000",
                                                                     "HEALTH_URL=http://127.0.0.1:5000/health"])),
                   *_on(_EDGE, container("p-edge-api-gateway", envs=["STATUS_URL=http://10.41.0.11:8081/"]))),
               [(doc(container(envs=["CORE_SERVICE_URL=http://10.41.0.12:4000"])),
                 ["envs[0] (CORE_SERVICE_URL) routes plain HTTP to 10.41.0.12:4000 on another host; call it through the "
                  "mutual-TLS sidecar (http://<caller>-mtls:<port>)"]),
                (doc(*_on(_APP_NODE, container("p-app-payments", envs=["PAYMENTS_URL=http://10.41.0.12:5000",
                                                                       "LEDGER_URL=http://10.41.0.13:4000"])),
                     *_on(_EDGE, container("p-edge-api-gateway", envs=["PAYMENTS_URL=http://10.41.0.12:5000"]))),
                 ["envs[1] (LEDGER_URL) routes plain HTTP to 10.41.0.13:4000 on another host; call it through the "
                  "mutual-TLS sidecar (http://<caller>-mtls:<port>)",
                  "envs[0] (PAYMENTS_URL) routes plain HTTP to 10.41.0.12:5000 on another host; call it through the "
                  "mutual-TLS sidecar (http://<caller>-mtls:<port>)"]),
                (doc(script("sidecar", {"/srv/x/nginx.conf": MTLS_CALLER_OK.replace("https://10.41.0.12:14000",
                                                                                    "http://10.41.0.12:4000")})),
                 ["/srv/x/nginx.conf: proxy_pass http://10.41.0.12:4000 sends plain HTTP to another host; "
                  "proxy over mutual TLS"]),
                (doc(script("sidecar", {"/srv/x/nginx.conf": MTLS_CALLER_OK.replace(
                    "      proxy_ssl_certificate /tls/tls.crt;\n", "").replace("proxy_ssl_verify on", "proxy_ssl_verify off")})),
                 ["/srv/x/nginx.conf: proxy_pass https://10.41.0.12:14000 is TLS but not mutual and verified "
                  "(missing proxy_ssl_certificate, proxy_ssl_verify)"])]))
