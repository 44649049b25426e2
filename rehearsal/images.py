"""Stand-in images for every image reference a stack names, and the registry that serves them.

Public registries cannot be reached here, so a rehearsal builds, for every reference the stack's
``docker:index/remoteImage:RemoteImage`` resources name, a local image under that same reference
with the same contract (ports, healthcheck command, user, data paths, entrypoint/command), and
serves it from a local registry (Debian's ``docker-registry`` 2.8) inside the lab's network
namespace, so that the Docker daemons in the boxes really pull it under the stack's reference.

Where Debian 12 has the real server, the stand-in *is* that server (Debian's package, started
through an entrypoint with the official image's contract); where it has none, the stand-in only
answers the captured health check and is marked ``proven=False`` ("not proven: no server").

API (agreed in rehearsal/LAB_API.md, section "Images")::

    contracts = contracts_from_state(state)           # state: `python -m synth STACK --json` dict
    standins  = plan_standins(contracts)              # pure: kind, proven, note, recipe hash
    registry  = Registry(cache_dir=IMAGE_CACHE)       # test CA + storage persist in the cache
    registry.start(lab)                               # lab.spawn_service(...) on SERVICE_ADDRESS:443
    missing   = registry.missing(standins)            # what the registry lacks (skopeo inspect)
    build_standins(missing, docker_client)            # into the harness daemon, cached (docker save)
    registry.push(missing, lab.harness_docker_host)   # skopeo copy in the namespace
    prep      = registry.box_preparation()            # files/hosts lines/commands for each box
    registry.stop()
    # or all of it:  ensure_standins(contracts, lab, registry) -> list[StandIn]

Kinds (:data:`KINDS`): postgres, redis, nginx, prometheus, alertmanager, node-exporter,
blackbox, squid (real Debian servers); app (a Node.js server answering the captured health path);
stub (MongoDB, MinIO, Grafana, cAdvisor: not proven). Every stand-in's version gap to the image
it stands in for is in its ``note``.

Caches (outside the repository, default /var/cache/platform-rehearsal/images, env
``PLATFORM_REHEARSAL_CACHE`` moves the root): the debootstrap root filesystem tarball of the
base, keyed by its recipe; a ``docker save`` tarball of every stand-in, keyed by the hash of all
recipes; the registry's storage, which keeps every pushed blob so that a warm run pushes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence

CACHE_ROOT = Path(os.environ.get("PLATFORM_REHEARSAL_CACHE", "/var/cache/platform-rehearsal"))
IMAGE_CACHE = CACHE_ROOT / "images"
STANDINS_DIR = Path(__file__).parent / "standins"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("ca-certificates", "wget", "netbase", "procps")
"""On top of debootstrap's minbase: wget for the stack's ``wget -q -O /dev/null`` health checks."""

LABEL_RECIPE = "org.platform-rehearsal.recipe"
LABEL_PROVEN = "org.platform-rehearsal.proven"
LABEL_KIND = "org.platform-rehearsal.kind"

REGISTRY_PORT = 443
REGISTRY_HOSTS = ("registry-1.docker.io", "index.docker.io", "docker.io", "ghcr.io", "gcr.io",
                  "quay.io", "registry.digitalocean.com", "public.ecr.aws", "registry.k8s.io")
"""Hostnames the registry answers for (its certificate's SANs, the boxes' /etc/hosts); the
registries of the stack's references are added to these. ``docker.io`` references are pulled
from ``registry-1.docker.io``."""


class ImageError(RuntimeError):
    """A stand-in could not be planned, built, pushed or served; the message names the reference."""


# --- contracts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageContract:
    """What the stack expects of one image reference, merged over every container that uses it.

    ``ports``: TCP ports the image must listen on (published ``internal`` ports and the port of
    an HTTP health check), sorted. ``healthchecks``: each distinct captured ``tests`` argv (with
    its leading ``CMD``/``CMD-SHELL``). ``users``: each distinct ``user`` ("" = image default).
    ``commands``: each distinct ``command`` argv. ``data_paths``: container paths of the volumes.
    ``env_keys``: names of the variables passed (empty when the capture masks ``envs``: synth
    the stack with ``reveal_secrets=True`` to see them). ``containers``: the containers' names.
    """

    reference: str
    ports: tuple[int, ...] = ()
    healthchecks: tuple[tuple[str, ...], ...] = ()
    users: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    data_paths: tuple[str, ...] = ()
    env_keys: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()

    @property
    def health_paths(self) -> tuple[str, ...]:
        """HTTP paths the health checks GET on 127.0.0.1 (``/health``), sorted."""
        return tuple(sorted({path for _, path in _http_targets(self.healthchecks)}))


_HTTP_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s)]*)?")


def _http_targets(healthchecks: Iterable[Sequence[str]]) -> set[tuple[int, str]]:
    found = set()
    for test in healthchecks:
        for match in _HTTP_URL.finditer(" ".join(test)):
            found.add((int(match.group(1)), match.group(2) or "/"))
    return found


def contracts_from_state(state: Mapping[str, Any]) -> list[ImageContract]:
    """One :class:`ImageContract` per distinct RemoteImage ``name`` in a synth capture.

    ``state`` is the dict ``python -m synth STACK --json`` writes (``resources`` list). A
    container belongs to the image resource of the same provider named ``<container>-image``
    (components/droplet_stack.py names them so; the ``image`` input itself is an output, unknown
    at synth time). A reference no container uses still gets a contract (no ports, no check).
    Raises ImageError when a container has no image resource. Sorted by reference.
    """
    resources = state["resources"]
    images = {(r.get("provider"), r["name"]): r["inputs"]["name"] for r in resources
              if r["type"] == "docker:index/remoteImage:RemoteImage"}
    merged: dict[str, dict[str, set]] = {
        ref: {k: set() for k in ("ports", "hc", "users", "cmds", "paths", "env", "names")}
        for ref in images.values()}
    for res in resources:
        if res["type"] != "docker:index/container:Container":
            continue
        key = (res.get("provider"), f"{res['name']}-image")
        if key not in images:
            raise ImageError(f"container {res['name']}: no RemoteImage named {key[1]} on its "
                             f"provider; name the image resource <container>-image")
        inputs, acc = res["inputs"], merged[images[key]]
        acc["names"].add(res["name"])
        acc["ports"].update(int(p["internal"]) for p in inputs.get("ports") or [])
        tests = tuple((inputs.get("healthcheck") or {}).get("tests") or ())
        if tests:
            acc["hc"].add(tests)
            acc["ports"].update(port for port, _ in _http_targets([tests]))
        acc["users"].add(inputs.get("user") or "")
        acc["cmds"].add(tuple(inputs.get("command") or ()))
        acc["paths"].update(v["containerPath"] for v in inputs.get("volumes") or [])
        envs = inputs.get("envs")
        if isinstance(envs, list):
            acc["env"].update(e.split("=", 1)[0] for e in envs)
    return [ImageContract(reference=ref, ports=tuple(sorted(a["ports"])),
                          healthchecks=tuple(sorted(a["hc"])), users=tuple(sorted(a["users"])),
                          commands=tuple(sorted(a["cmds"])), data_paths=tuple(sorted(a["paths"])),
                          env_keys=tuple(sorted(a["env"])), containers=tuple(sorted(a["names"])))
            for ref, a in sorted(merged.items())]


# --- references -------------------------------------------------------------------------------

def split_reference(reference: str) -> tuple[str, str, str]:
    """``(registry host, repository path, tag)`` as a Docker daemon resolves a reference:
    ``postgres:17`` -> ``("registry-1.docker.io", "library/postgres", "17")``. Digests are
    refused (a stand-in cannot match one): ImageError."""
    if "@" in reference:
        raise ImageError(f"{reference}: a digest reference cannot have a stand-in; use a tag")
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        name, tag = reference, "latest"
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "registry-1.docker.io", name
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
    if host == "registry-1.docker.io" and "/" not in path:
        path = f"library/{path}"
    return host, path, tag


# --- kinds ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """One stand-in kind: the Debian packages added to the base, the files from ``standins/``
    copied into the build context, and the Dockerfile lines after the packages are installed
    (before them: ``pre``, e.g. users with the official images' uids)."""

    name: str
    packages: tuple[str, ...]
    files: tuple[str, ...]
    pre: str
    post: str
    proven: bool
    suite: str = DEBIAN_SUITE
    """The Debian release the kind is built from: bookworm, unless the server the stack runs
    needs a newer version than bookworm has (nginx: the stack's config uses ``http2 on``)."""


def _users(*specs: tuple[str, int, str, int]) -> str:
    lines = []
    for user, uid, group, gid in specs:
        lines.append(f"RUN (getent group {gid} >/dev/null || groupadd -r -g {gid} {group}) && "
                     f"useradd -r -M -u {uid} -g {gid} -s /usr/sbin/nologin -d /nonexistent {user}")
    return "\n".join(lines)


KINDS: dict[str, Kind] = {k.name: k for k in (
    # trixie's PostgreSQL 17, the stack's major version (bookworm has 15 and no pgvector).
    *(Kind(name, ("postgresql-17", "postgresql-client-17", *extra), ("postgres/docker-entrypoint.sh",),
           pre=_users(("postgres", 999, "postgres", 999)) + "\n"
           "RUN mkdir -p /etc/postgresql-common/createcluster.d && "
           "echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/standin.conf",
           # As the official image: initdb's sample listens on every address of the container,
           # so a port published on the host reaches the server (Debian's says 'localhost').
           post="RUN sed -ri \"s/^#?listen_addresses = 'localhost'/listen_addresses = '*'/\" "
                "/usr/share/postgresql/17/postgresql.conf.sample && "
                "grep -q \"^listen_addresses = '[*]'\" /usr/share/postgresql/17/postgresql.conf.sample\n"
                "ENV PATH=/usr/lib/postgresql/17/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8\n"
                "RUN mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql && "
                "chown -R 999:999 /var/lib/postgresql /var/run/postgresql && chmod 3777 /var/run/postgresql\n"
                # As the official image's Dockerfile: initdb's sample listens on every address
                # (Debian's says localhost, and the app containers were refused on the bridge).
                "RUN sed -ri \"s!^#?(listen_addresses)\\s*=\\s*\\S+.*!\\1 = '*'!\" "
                "/usr/share/postgresql/17/postgresql.conf.sample && "
                "grep -F \"listen_addresses = '*'\" /usr/share/postgresql/17/postgresql.conf.sample\n"
                "COPY postgres/docker-entrypoint.sh /usr/local/bin/\n"
                "VOLUME /var/lib/postgresql/data\n"
                'ENTRYPOINT ["docker-entrypoint.sh"]\nSTOPSIGNAL SIGINT\nEXPOSE 5432\nCMD ["postgres"]',
           proven=True, suite="trixie")
      for name, extra in (("postgres", ()), ("postgres-pgvector", ("postgresql-17-pgvector",)))),
    Kind("redis", ("redis-server", "redis-tools"), ("redis/docker-entrypoint.sh",),
         pre="RUN groupadd -r -g 1000 redis && useradd -r -M -u 999 -g 1000 -s /usr/sbin/nologin "
             "-d /data redis",
         post="RUN mkdir /data && chown redis:redis /data\nVOLUME /data\nWORKDIR /data\n"
              "COPY redis/docker-entrypoint.sh /usr/local/bin/\n"
              'ENTRYPOINT ["docker-entrypoint.sh"]\nEXPOSE 6379\nCMD ["redis-server"]',
         proven=True),
    # trixie's nginx 1.26: bookworm's 1.22 predates the `http2 on` directive (nginx 1.25.1)
    # that the stack's config uses for its 1.27 image.
    Kind("nginx", ("nginx",), (),
         pre=_users(("nginx", 101, "nginx", 101)),
         post="RUN mkdir -p /var/cache/nginx /var/lib/nginx/body /var/lib/nginx/proxy "
              "/var/lib/nginx/fastcgi /var/lib/nginx/uwsgi /var/lib/nginx/scgi && "
              "ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log && "
              "chown -R 101:101 /var/cache/nginx /var/lib/nginx /var/log/nginx /etc/nginx && "
              "rm -f /etc/nginx/sites-enabled/default\n"
              'USER 101\nEXPOSE 8080\nSTOPSIGNAL SIGQUIT\nCMD ["nginx", "-g", "daemon off;"]',
         proven=True, suite="trixie"),
    Kind("prometheus", ("prometheus",), (), pre="",
         post="RUN mkdir -p /prometheus && chown 65534:65534 /prometheus\nUSER 65534\n"
              "WORKDIR /prometheus\nVOLUME /prometheus\nEXPOSE 9090\n"
              'ENTRYPOINT ["/usr/bin/prometheus"]\n'
              'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]',
         proven=True),
    Kind("alertmanager", ("prometheus-alertmanager",), (), pre="",
         post="RUN mkdir -p /alertmanager /etc/alertmanager && chown 65534:65534 /alertmanager && "
              "cp /etc/prometheus/alertmanager.yml /etc/alertmanager/alertmanager.yml\n"
              "USER 65534\nWORKDIR /alertmanager\nVOLUME /alertmanager\nEXPOSE 9093\n"
              'ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]\n'
              'CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]',
         proven=True),
    Kind("node-exporter", ("prometheus-node-exporter",), (), pre="",
         post='USER 65534\nEXPOSE 9100\nENTRYPOINT ["/usr/bin/prometheus-node-exporter"]',
         proven=True),
    Kind("blackbox", ("prometheus-blackbox-exporter",), (), pre="",
         post="RUN mkdir -p /etc/blackbox && cp /etc/prometheus/blackbox.yml /etc/blackbox/blackbox.yml\n"
              'USER 65534\nEXPOSE 9115\nENTRYPOINT ["/usr/bin/prometheus-blackbox-exporter"]\n'
              'CMD ["--config.file=/etc/blackbox/blackbox.yml"]',
         proven=True),
    Kind("squid", ("squid",), ("squid/entrypoint.sh",), pre="",
         post="COPY squid/entrypoint.sh /usr/local/bin/\nEXPOSE 3128\n"
              'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]\n'
              'CMD ["-f", "/etc/squid/squid.conf", "-NYC"]',
         proven=True),
    Kind("app", ("nodejs",), ("app/server.js",),
         pre=_users(("node", 1000, "node", 1000)),
         post="RUN mkdir -p /usr/src/app /app /home/node && chown node:node /home/node\n"
              "COPY app/server.js /opt/standin/server.js\nWORKDIR /usr/src/app\n"
              'CMD ["node", "/opt/standin/server.js"]',
         proven=True),
    Kind("stub", ("python3",),
         ("stub/standin_stub.py", "stub/mongod", "stub/mongosh", "stub/minio", "stub/mc",
          "stub/http-stub"),
         pre=_users(("grafana", 472, "root", 0)),
         post="COPY stub/ /usr/local/bin/\n"
              "RUN ln -s http-stub /usr/local/bin/grafana-server && mkdir -p /usr/bin && "
              "ln -s /usr/local/bin/http-stub /usr/bin/cadvisor && mkdir -p /data/db /data "
              "/var/lib/grafana && chown 999:999 /data/db && chown 472:0 /var/lib/grafana",
         proven=False),
)}


@dataclass(frozen=True)
class Rule:
    """How one upstream repository maps to a kind; ``setup`` are extra per-reference Dockerfile
    lines (the upstream entrypoint/command contract)."""

    pattern: str
    kind: str
    note: str
    setup: str = ""
    proven: Optional[bool] = None  # None: the kind's


RULES: tuple[Rule, ...] = (
    Rule(r"^library/postgres$", "postgres", "Debian 13's PostgreSQL 17 stands in for {tag}"),
    Rule(r"^pgvector/pgvector$", "postgres-pgvector",
         "Debian 13's PostgreSQL 17 with pgvector 0.8 stands in for {tag}"),
    Rule(r"^library/redis$", "redis", "Debian 12's redis-server 7.0 (TLS-capable) stands in for {tag}"),
    Rule(r"^nginxinc/nginx-unprivileged$", "nginx",
         "Debian 13's nginx 1.26 stands in for {tag}, as uid 101 on port 8080"),
    Rule(r"^prom/prometheus$", "prometheus", "Debian 12's prometheus 2.42 stands in for {tag}"),
    Rule(r"^prom/alertmanager$", "alertmanager",
         "Debian 12's prometheus-alertmanager 0.25 stands in for {tag}"),
    Rule(r"^prom/node-exporter$", "node-exporter",
         "Debian 12's prometheus-node-exporter 1.5 stands in for {tag}"),
    Rule(r"^prom/blackbox-exporter$", "blackbox",
         "Debian 12's prometheus-blackbox-exporter 0.23 stands in for {tag}"),
    Rule(r"^ubuntu/squid$", "squid", "Debian 12's squid 5.7 stands in for {tag} (squid 6)"),
    Rule(r"^library/mongo$", "stub", "not proven: no server (no MongoDB server to be had here)",
         setup='ENV STANDIN_PORTS=27017\nUSER 0\nCMD ["mongod"]'),
    Rule(r"^minio/minio$", "stub", "not proven: no server (no MinIO server to be had here)",
         setup='ENV STANDIN_PORTS=9000\nUSER 1000:1000\nENTRYPOINT ["/usr/local/bin/minio"]\n'
               'CMD ["server", "/data"]'),
    Rule(r"^grafana/grafana(-oss)?$", "stub",
         "not proven: no server (no Grafana server to be had here)",
         setup='ENV STANDIN_PORTS=3000\nUSER 472:0\nENTRYPOINT ["/usr/local/bin/grafana-server"]'),
    Rule(r"^cadvisor/cadvisor$", "stub",
         "not proven: no server (Debian 12 packages no cAdvisor)",
         setup='ENV STANDIN_PORTS=8080\nENTRYPOINT ["/usr/bin/cadvisor", "-logtostderr"]'),
)
"""Upstream images by repository path. Any other reference is a product's application image:
the ``app`` kind, which needs an HTTP health check in its contract."""


@dataclass(frozen=True)
class StandIn:
    """A planned or built stand-in for ``reference``.

    ``kind``: a key of :data:`KINDS`. ``proven``: False when nothing real answers (the report
    must say "not proven" for every check that depends on it). ``note``: what stands in, and the
    gap. ``recipe``: sha256 hex of everything the image is built from (label
    ``org.platform-rehearsal.recipe``). ``registry_path``: ``host/path:tag`` as pulled."""

    reference: str
    kind: str
    proven: bool
    note: str
    recipe: str = ""
    dockerfile: str = field(default="", repr=False, compare=False)

    @property
    def registry_path(self) -> str:
        host, path, tag = split_reference(self.reference)
        return f"{host}/{path}:{tag}"


@dataclass(frozen=True)
class Managed:
    """A stand-in for a DigitalOcean managed database that a host talks to (not an image the
    stack names): built and served like the others, run where R3 places the cluster's address.
    TLS material goes to ``/run/managed/tls/{server.crt,server.key}`` (key owned 999, mode 0600;
    see :func:`managed_tls_files`), so clients can use ``sslmode=verify-full`` against
    :class:`TestCA`."""

    reference: str
    kind: str
    port: int
    setup: str
    note: str
    proven: bool = True


MANAGED: tuple[Managed, ...] = (
    Managed("platform-rehearsal/managed-postgres:17", "postgres", 25060,
            'ENV STANDIN_REQUIRE_SSL=1 POSTGRES_USER=doadmin POSTGRES_DB=defaultdb\n'
            'CMD ["postgres", "-c", "ssl=on", "-c", "ssl_cert_file=/run/managed/tls/server.crt", '
            '"-c", "ssl_key_file=/run/managed/tls/server.key", "-c", "port=25060", '
            '"-c", "listen_addresses=*"]',
            "DigitalOcean managed PostgreSQL: Debian 13's PostgreSQL 17 on :25060, TLS only "
            "(hostssl), user doadmin, database defaultdb; POSTGRES_PASSWORD sets the password"),
    Managed("platform-rehearsal/managed-redis:7", "redis", 25061,
            'CMD ["sh", "-c", "exec redis-server --port 0 --tls-port 25061 '
            '--tls-cert-file /run/managed/tls/server.crt --tls-key-file /run/managed/tls/server.key '
            '--tls-auth-clients no --requirepass \\"$REDIS_PASSWORD\\""]',
            "DigitalOcean managed Redis/Valkey: Debian 12's redis-server 7.0 on :25061, TLS only; "
            "REDIS_PASSWORD sets the password"),
    Managed("platform-rehearsal/managed-mongo:7", "stub", 27017,
            'ENV STANDIN_PORTS=27017\nUSER 0\nCMD ["mongod", "--tlsMode", "requireTLS", '
            '"--tlsCertificateKeyFile", "/run/managed/tls/server.pem"]',
            "not proven: no server (DigitalOcean managed MongoDB; no MongoDB server here)", False),
)


def managed_tls_files(ca: "TestCA", names: Sequence[str]) -> dict[str, tuple[bytes, int, int, int]]:
    """Container path -> (content, mode, uid, gid) of a managed stand-in's TLS material for
    ``names`` (the cluster's host names and addresses as clients dial them)."""
    issued = ca.issue(list(names))
    return {"/run/managed/tls/server.crt": (issued.cert_pem, 0o644, 0, 0),
            "/run/managed/tls/server.key": (issued.key_pem, 0o600, 999, 999),
            "/run/managed/tls/server.pem": (issued.cert_pem + issued.key_pem, 0o600, 999, 999),
            "/run/managed/tls/ca.crt": (ca.cert_pem, 0o644, 0, 0)}


def _sha(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def base_recipe(suite: str = DEBIAN_SUITE) -> str:
    return _sha("base", suite, DEBIAN_MIRROR, BASE_PACKAGES, 1)


def _kind_dockerfile(kind: Kind) -> str:
    # apt (not dpkg -i) orders the local .debs, Pre-Depends included; the build has no network.
    return (f"FROM {base_image(kind.suite)}\n{kind.pre}\nCOPY debs/ /tmp/debs/\n"
            "RUN apt-get install -y -qq --no-install-recommends /tmp/debs/*.deb >/dev/null && "
            "rm -rf /tmp/debs /var/log/*.log /var/log/apt /var/cache/debconf/*-old "
            "/var/lib/apt/lists/*\n"
            f"{kind.post}\n")


def kind_recipe(kind: Kind) -> str:
    files = [(name, (STANDINS_DIR / name).read_bytes()) for name in kind.files]
    return _sha("kind", base_recipe(kind.suite), kind.name, kind.packages, _kind_dockerfile(kind),
                [(n, hashlib.sha256(b).hexdigest()) for n, b in files])


def base_image(suite: str = DEBIAN_SUITE) -> str:
    return f"platform-rehearsal/base:{base_recipe(suite)[:16]}"


def kind_image(kind: Kind) -> str:
    return f"platform-rehearsal/{kind.name}:{kind_recipe(kind)[:16]}"


def _standin(reference: str, kind: Kind, proven: bool, note: str, setup: str) -> StandIn:
    recipe = _sha("standin", reference, kind_recipe(kind), setup, proven)
    dockerfile = (f"FROM {kind_image(kind)}\n{setup}\n"
                  f"LABEL {LABEL_RECIPE}={recipe} {LABEL_KIND}={kind.name} "
                  f"{LABEL_PROVEN}={str(proven).lower()}\n")
    return StandIn(reference, kind.name, proven, note, recipe, dockerfile)


# Kinds whose server dials out over TLS to the lab's outside world (Alertmanager: the SMTP
# smarthost's STARTTLS and Slack's webhook), with the user their image runs as: their stand-in
# trusts the lab's test CA, which stands in for the public PKI that the real servers carry.
TRUSTING_KINDS = {"alertmanager": "65534"}


def trust_setup(ca_pem: bytes, user: str) -> str:
    """Dockerfile lines that append ``ca_pem`` to the image's system trust store (what Go's
    crypto/x509 reads on Debian), as root, then return to ``user``."""
    lines = " ".join(f"'{line}'" for line in ca_pem.decode().strip().splitlines())
    return (f"USER 0\nRUN printf '%s\\n' {lines} >> /etc/ssl/certs/ca-certificates.crt\n"
            f"USER {user}")


def plan_standins(contracts: Sequence[ImageContract], managed: bool = True,
                  trust_pem: Optional[bytes] = None) -> list[StandIn]:
    """A :class:`StandIn` per contract, then (``managed``) one per :data:`MANAGED` (no side
    effect). ``trust_pem``: the lab's CA, trusted by the stand-ins of :data:`TRUSTING_KINDS`.
    Raises ImageError naming every reference that has no stand-in (an application
    image without an HTTP health check, a digest, or two references that the one registry would
    serve under the same repository path)."""
    planned, errors, seen = [], [], {}
    for contract in contracts:
        try:
            host, path, tag = split_reference(contract.reference)
        except ImageError as exc:
            errors.append(str(exc))
            continue
        if (path, tag) in seen and seen[(path, tag)] != contract.reference:
            errors.append(f"{contract.reference} and {seen[(path, tag)]} would be one repository "
                          f"{path}:{tag} in the one rehearsal registry")
        seen[(path, tag)] = contract.reference
        rule = next((r for r in RULES if re.match(r.pattern, path)), None)
        if rule is None:
            targets = _http_targets(contract.healthchecks)
            if not targets:
                errors.append(f"{contract.reference}: no stand-in: not a known upstream image "
                              f"(rehearsal.images.RULES) and no HTTP health check to answer "
                              f"(containers: {', '.join(contract.containers) or 'none'})")
                continue
            kind, proven = KINDS["app"], True
            note = ("application stand-in (Node.js 18): answers " + ", ".join(
                sorted(f":{p}{h}" for p, h in targets)) + "; proves the host's wiring, not the app")
            setup = "ENV " + " ".join([
                f"STANDIN_PORTS={','.join(map(str, contract.ports))}",
                f"STANDIN_HEALTH={','.join(contract.health_paths)}",
                f"STANDIN_ENV_KEYS={','.join(contract.env_keys)}"])
        else:
            kind = KINDS[rule.kind]
            proven = kind.proven if rule.proven is None else rule.proven
            note, setup = rule.note.format(tag=contract.reference), rule.setup
            if trust_pem and rule.kind in TRUSTING_KINDS:
                setup = "\n".join(filter(None, [setup, trust_setup(trust_pem, TRUSTING_KINDS[rule.kind])]))
        planned.append(_standin(contract.reference, kind, proven, note, setup))
    if managed:
        planned.extend(_standin(m.reference, KINDS[m.kind], m.proven, m.note, m.setup)
                       for m in MANAGED)
    if errors:
        raise ImageError("stand-in images:\n  " + "\n  ".join(errors))
    return planned


# --- building ---------------------------------------------------------------------------------

def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-3000:]
        raise ImageError(f"{' '.join(map(str, argv[:5]))} ... exited {proc.returncode}: {tail}")
    return proc


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise ImageError(f"{name} is not installed; scripts/bootstrap.sh installs it")
    return found


def build_base_rootfs(cache_dir: Path = IMAGE_CACHE, suite: str = DEBIAN_SUITE) -> Path:
    """The base root filesystem tarball (debootstrap ``--variant=minbase`` of ``suite`` plus
    :data:`BASE_PACKAGES`), built once per recipe into ``cache_dir``; returns its path."""
    tarball = Path(cache_dir) / f"base-{base_recipe(suite)[:16]}.tar"
    if tarball.exists():
        return tarball
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="base-build-") as tmp:
        root = Path(tmp) / "root"
        _run([_tool("debootstrap"), "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              suite, str(root), DEBIAN_MIRROR], timeout=1800)
        # No daemon may start while a stand-in's packages install (docker build has no init).
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for child in (root / junk).glob("*"):
                if child.is_file():
                    child.unlink()
        partial = tarball.with_suffix(f".tar.{os.getpid()}.partial")
        _run(["tar", "--numeric-owner", "--exclude=./proc/*", "--exclude=./sys/*",
              "--exclude=./dev/*", "-C", str(root), "-cf", str(partial), "."])
        partial.rename(tarball)
    return tarball


def _apt_options(suite: str, cache_dir: Path) -> list[str]:
    """apt options that resolve against ``suite``: the build machine's own configuration for its
    release (bookworm), else a private source list and package lists under ``cache_dir``,
    refreshed here, so that the build machine's apt state is never touched."""
    if suite == DEBIAN_SUITE:
        return []
    root = Path(cache_dir) / f"apt-{suite}"
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "sources.list.d").mkdir(exist_ok=True)
    (root / "sources.list").write_text(f"deb {DEBIAN_MIRROR} {suite} main\n")
    options = ["-o", f"Dir::Etc::sourcelist={root / 'sources.list'}",
               "-o", f"Dir::Etc::sourceparts={root / 'sources.list.d'}",
               "-o", f"Dir::State::Lists={root / 'lists'}",
               "-o", f"Dir::Cache::pkgcache={root / 'pkgcache.bin'}",
               "-o", f"Dir::Cache::srcpkgcache={root / 'srcpkgcache.bin'}"]
    _run(["apt-get", *options, "-o", "Debug::NoLocking=1", "update", "-qq"], timeout=600)
    return options


def _download_debs(packages: Sequence[str], status_file: Path, dest: Path,
                   suite: str = DEBIAN_SUITE, cache_dir: Path = IMAGE_CACHE) -> None:
    """The .debs that installing ``packages`` of ``suite`` on a system with dpkg
    ``status_file`` needs, resolved and fetched by the build machine's apt (the build
    containers have no network)."""
    (dest / "partial").mkdir(parents=True, exist_ok=True)
    _run(["apt-get", *_apt_options(suite, cache_dir), "install", "--download-only",
          "--no-install-recommends", "-y", "-qq",
          "-o", f"Dir::State::status={status_file}", "-o", f"Dir::Cache::archives={dest}",
          "-o", "Debug::NoLocking=1", *packages], timeout=1200,
         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    shutil.rmtree(dest / "partial", ignore_errors=True)
    (dest / "lock").unlink(missing_ok=True)


def _image_labels(client: Any, ref: str) -> Optional[dict]:
    import docker.errors

    try:
        return client.images.get(ref).labels or {}
    except docker.errors.ImageNotFound:
        return None


def _build(client: Any, context: Path, tag: str) -> None:
    import docker.errors

    try:
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        log = "".join(str(chunk.get("stream") or chunk.get("error") or "") for chunk in exc.build_log)
        raise ImageError(f"building {tag}: {exc}\n{log[-3000:]}") from None


def build_standins(standins: Sequence[StandIn], docker_client: Any,
                   cache_dir: Path = IMAGE_CACHE, docker_host: Optional[str] = None) -> dict[str, float]:
    """See :func:`_build_standins`; holds ``cache_dir/build.lock`` (flock) meanwhile, so that two
    processes sharing the cache (a rehearsal and a test) never write one tarball together."""
    import fcntl

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_standins(standins, docker_client, Path(cache_dir), docker_host)


def _build_standins(standins: Sequence[StandIn], docker_client: Any,
                    cache_dir: Path, docker_host: Optional[str]) -> dict[str, float]:
    """Make every stand-in exist, under its reference, in the daemon of ``docker_client`` (a
    ``docker.DockerClient``; ``docker_host`` its ``unix://`` address, for ``docker save/load``).

    Cached: an image already there with the same recipe label is kept; else a ``docker save``
    tarball of the same set of recipes in ``cache_dir`` is loaded; else the base rootfs is
    imported (debootstrap once per recipe), each kind built on it with its .debs, each
    reference built on its kind, and the set saved for the next run. Returns timings in seconds
    (``load``, ``base``, ``kinds``, ``references``, ``save``). Raises ImageError.
    """
    timings: dict[str, float] = {}
    todo = [s for s in standins
            if (_image_labels(docker_client, s.reference) or {}).get(LABEL_RECIPE) != s.recipe]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One tarball for the whole set: the layers they share are stored once.
    set_tar = cache_dir / f"standins-{_sha(sorted(s.recipe for s in standins))[:16]}.tar"
    docker = [_docker_cli(), *(["-H", docker_host] if docker_host else [])]
    if not todo:
        if not set_tar.exists():
            timings["save"] = _save(docker, standins, set_tar, _kind_tags(docker_client, standins))
        return timings
    # The set's own tarball, else the newest older set: every image whose recipe did not change
    # (and every kind, saved with its tag) comes from it, and only the changed ones are built.
    saved = set_tar if set_tar.exists() else max(
        cache_dir.glob("standins-*.tar"), key=lambda p: p.stat().st_mtime, default=None)
    if saved is not None:
        started = time.monotonic()
        _run([*docker, "load", "-q", "-i", str(saved)], timeout=1800)
        timings["load"] = time.monotonic() - started
        todo = [s for s in todo
                if (_image_labels(docker_client, s.reference) or {}).get(LABEL_RECIPE) != s.recipe]
        if not todo:
            return timings
    started = time.monotonic()
    kinds = [KINDS[name] for name in sorted({s.kind for s in todo})
             if _image_labels(docker_client, kind_image(KINDS[name])) is None]
    for suite in sorted({kind.suite for kind in kinds}):
        base = base_image(suite)
        if _image_labels(docker_client, base) is None:
            tarball = build_base_rootfs(cache_dir, suite)
            docker_client.api.import_image_from_file(str(tarball), repository=base.split(":")[0],
                                                     tag=base.split(":")[1])
    timings["base"] = time.monotonic() - started
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="standin-status-") as tmp:
        for kind in kinds:
            status = Path(tmp) / f"status-{kind.suite}"
            if not status.exists():
                _run(["tar", "-xf", str(build_base_rootfs(cache_dir, kind.suite)), "-C", tmp,
                      "--strip-components=4", "./var/lib/dpkg/status"])
                (Path(tmp) / "status").rename(status)
            tag = kind_image(kind)
            with tempfile.TemporaryDirectory(prefix=f"standin-{kind.name}-") as ctx:
                context = Path(ctx)
                _download_debs(kind.packages, status, context / "debs", kind.suite, cache_dir)
                for name in kind.files:
                    (context / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(STANDINS_DIR / name, context / name)
                (context / "Dockerfile").write_text(_kind_dockerfile(kind))
                _build(docker_client, context, tag)
    timings["kinds"] = time.monotonic() - started
    started = time.monotonic()
    for standin in todo:
        with tempfile.TemporaryDirectory(prefix="standin-ref-") as ctx:
            (Path(ctx) / "Dockerfile").write_text(standin.dockerfile)
            _build(docker_client, Path(ctx), standin.reference)
    timings["references"] = time.monotonic() - started
    timings["save"] = _save(docker, standins, set_tar, _kind_tags(docker_client, standins))
    return timings


def _save(docker: list[str], standins: Sequence[StandIn], set_tar: Path,
          kinds: Sequence[str]) -> float:
    """``docker save`` of every stand-in and the ``kinds`` images (tags) they are built on into
    ``set_tar`` (older sets removed); seconds taken."""
    started = time.monotonic()
    partial = set_tar.with_suffix(f".tar.{os.getpid()}.partial")
    _run([*docker, "save", "-o", str(partial), *kinds, *[s.reference for s in standins]],
         timeout=1800)
    partial.rename(set_tar)
    for old in set_tar.parent.glob("standins-*.tar"):
        if old != set_tar:
            old.unlink()
    return time.monotonic() - started


def _kind_tags(docker_client: Any, standins: Sequence[StandIn]) -> list[str]:
    """The kind images of ``standins`` that the daemon holds under their tags."""
    tags = sorted({kind_image(KINDS[s.kind]) for s in standins})
    return [t for t in tags if _image_labels(docker_client, t) is not None]


def _docker_cli() -> str:
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise ImageError("the docker client is not installed (scripts/bootstrap.sh installs docker.io)")


# --- a test CA --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issued:
    """A server certificate (PEM) and its key (PEM, unencrypted) signed by a :class:`TestCA`."""

    cert_pem: bytes
    key_pem: bytes


class TestCA:
    """A certificate authority for rehearsals only (EC P-256, 10 years), kept in ``directory``
    (``ca.crt``, ``ca.key`` mode 0600) so that boxes and stand-ins agree across runs.

    ``issue(names)`` signs a server certificate for DNS names and IP addresses (``names``),
    valid one year, with serverAuth. Managed-database stand-ins use it for ``sslmode=verify-full``.
    """

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = Path(directory)
        crt, key = self.directory / "ca.crt", self.directory / "ca.key"
        if crt.exists() and key.exists():
            self._key = serialization.load_pem_private_key(key.read_bytes(), None)
            self._cert = x509.load_pem_x509_certificate(crt.read_bytes())
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform rehearsal test CA")])
        now = dt.datetime.now(dt.timezone.utc)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - dt.timedelta(days=1))
                      .not_valid_after(now + dt.timedelta(days=3650))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                                   crl_sign=True, content_commitment=False,
                                                   key_encipherment=False, data_encipherment=False,
                                                   key_agreement=False, encipher_only=False,
                                                   decipher_only=False), critical=True)
                      .sign(self._key, hashes.SHA256()))
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self._key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        crt.write_bytes(self.cert_pem)

    @property
    def cert_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, names: Sequence[str]) -> Issued:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        if not names:
            raise ValueError("a server certificate needs at least one name")
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self._cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self._key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM),
                      key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption()))


# --- the registry -----------------------------------------------------------------------------

class ServiceHost(Protocol):
    """What :meth:`Registry.start` needs of a lab (rehearsal.lab.Lab has it)."""

    service_address: str

    def spawn_service(self, name: str, argv: Sequence[str], env: Optional[dict] = None) -> Path: ...

    def netns_argv(self, argv: Sequence[str]) -> list[str]: ...


@dataclass(frozen=True)
class BoxPreparation:
    """What makes a box trust and resolve the rehearsal registry under every registry hostname.

    ``files``: absolute path in the box -> content (mode 0644, root-owned):
    ``/etc/docker/certs.d/<host>/ca.crt`` per host, and the CA under
    ``/usr/local/share/ca-certificates/`` (Docker Hub is verified against the system store, not
    certs.d). ``hosts_lines``: lines to append to the box's /etc/hosts. ``commands``: argvs to
    run as root after the files are written (``update-ca-certificates``); a dockerd already
    running must be restarted to see the new system store."""

    files: dict[str, bytes]
    hosts_lines: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]
    extra_hosts: dict[str, str] = field(default_factory=dict)
    """The same names as ``hosts_lines``, as name -> address for ``BoxSpec.extra_hosts``
    (``docker --add-host``: a container's /etc/hosts is Docker's, rewritten on restart)."""


class Registry:
    """Debian's ``docker-registry`` serving every stand-in on ``address:443`` over TLS.

    ``cache_dir``: holds ``ca/`` (the :class:`TestCA`) and ``registry/`` (the storage, kept across
    runs so a warm run pushes nothing). ``hosts``: registry hostnames to answer for, beyond
    :data:`REGISTRY_HOSTS` (add the hosts of the stack's references; :func:`ensure_standins` does).
    """

    def __init__(self, cache_dir: Path = IMAGE_CACHE, hosts: Iterable[str] = (),
                 storage: Optional[Path] = None):
        self.cache_dir = Path(cache_dir)
        self.hosts = tuple(dict.fromkeys([*REGISTRY_HOSTS, *hosts]))
        self.storage = Path(storage) if storage else self.cache_dir / "registry"
        self.ca = TestCA(self.cache_dir / "ca")
        self.address: Optional[str] = None
        self._lab: Optional[ServiceHost] = None
        self._workdir: Optional[Path] = None

    @property
    def endpoint(self) -> str:
        """``address:443``, for pushes from the namespace."""
        if self.address is None:
            raise ImageError("the registry is not started")
        return f"{self.address}:{REGISTRY_PORT}"

    def start(self, lab: ServiceHost, timeout: float = 30.0) -> None:
        """Spawn the registry in the lab's namespace on ``lab.service_address:443`` and wait
        until it answers ``/v2/`` over TLS. Raises ImageError with the log's tail."""
        registry_bin = _tool("docker-registry")
        self.address = lab.service_address
        self._lab = lab
        self.storage.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="rehearsal-registry-"))
        issued = self.ca.issue([*self.hosts, self.address])
        (self._workdir / "server.crt").write_bytes(issued.cert_pem + self.ca.cert_pem)
        key = self._workdir / "server.key"
        key.touch(mode=0o600)
        key.write_bytes(issued.key_pem)
        (self._workdir / "ca").mkdir()
        (self._workdir / "ca" / "ca.crt").write_bytes(self.ca.cert_pem)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True}},
            "http": {"addr": self.endpoint, "secret": base64.b64encode(os.urandom(24)).decode(),
                     "tls": {"certificate": str(self._workdir / "server.crt"), "key": str(key)}},
        }
        (self._workdir / "config.yml").write_text(json.dumps(config))  # YAML is a JSON superset
        log = lab.spawn_service("registry", [registry_bin, "serve", str(self._workdir / "config.yml")])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(lab.netns_argv([
                sys.executable, "-c", "import ssl, sys, urllib.request; urllib.request.urlopen("
                "sys.argv[1], context=ssl.create_default_context(cafile=sys.argv[2]), timeout=5)",
                f"https://{self.endpoint}/v2/", f"{self._workdir}/ca/ca.crt"]), capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        tail = Path(log).read_text(errors="replace")[-2000:] if log and Path(log).exists() else ""
        raise ImageError(f"the registry did not answer on {self.endpoint} within {timeout:.0f}s: {tail}")

    def stop(self) -> None:
        """Remove the registry's certificate files; the process itself is stopped by the lab
        that spawned it (lab.spawn_service registers it for teardown)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _skopeo(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        assert self._lab is not None and self._workdir is not None
        return subprocess.run(self._lab.netns_argv([_tool("skopeo"), *args]), capture_output=True,
                              timeout=timeout)

    def missing(self, standins: Sequence[StandIn]) -> list[StandIn]:
        """The stand-ins the registry does not hold with their current recipe (one ``skopeo
        inspect`` each, four at a time), in the order given."""
        from concurrent.futures import ThreadPoolExecutor

        def current(standin: StandIn) -> bool:
            _, path, tag = split_reference(standin.reference)
            proc = self._skopeo("inspect", "--cert-dir", str(self._workdir / "ca"),
                                f"docker://{self.endpoint}/{path}:{tag}", timeout=300)
            labels = (json.loads(proc.stdout).get("Labels") or {}) if proc.returncode == 0 else {}
            return labels.get(LABEL_RECIPE) == standin.recipe

        with ThreadPoolExecutor(max_workers=4) as pool:
            held = list(pool.map(current, standins))
        return [s for s, ok in zip(standins, held) if not ok]

    def push(self, standins: Sequence[StandIn], docker_host: str) -> None:
        """Copy each stand-in from the daemon at ``docker_host`` into the registry under its
        repository path (``skopeo copy`` run in the namespace; blobs already held are skipped)."""
        for standin in standins:
            _, path, tag = split_reference(standin.reference)
            proc = self._skopeo("copy", "--quiet", "--src-daemon-host", docker_host,
                                "--dest-cert-dir", str(self._workdir / "ca"),
                                f"docker-daemon:{standin.reference}",
                                f"docker://{self.endpoint}/{path}:{tag}", timeout=1800)
            if proc.returncode != 0:
                raise ImageError(f"pushing {standin.reference}: "
                                 + proc.stderr.decode(errors="replace")[-2000:])

    def box_preparation(self) -> BoxPreparation:
        """The files, /etc/hosts lines and commands that make a box pull every stack reference
        from this registry (see :class:`BoxPreparation`)."""
        if self.address is None:
            raise ImageError("the registry is not started")
        files = {f"/etc/docker/certs.d/{host}/ca.crt": self.ca.cert_pem for host in self.hosts}
        files["/usr/local/share/ca-certificates/platform-rehearsal-ca.crt"] = self.ca.cert_pem
        return BoxPreparation(files=files,
                              hosts_lines=(f"{self.address} {' '.join(self.hosts)}",),
                              commands=(("update-ca-certificates",),),
                              extra_hosts={host: self.address for host in self.hosts})


def ensure_standins(contracts: Sequence[ImageContract], lab: Any, registry: Registry,
                    docker_client: Any, cache_dir: Path = IMAGE_CACHE) -> tuple[list[StandIn], dict[str, float]]:
    """Plan the stand-ins, start ``registry`` in ``lab`` and make it hold every one: build (or
    load from cache) and push only what it lacks. Returns the stand-ins and timings (seconds:
    ``registry``, ``check``, plus :func:`build_standins`'s, and ``push``)."""
    standins = plan_standins(contracts, trust_pem=registry.ca.cert_pem)
    timings: dict[str, float] = {}
    started = time.monotonic()
    registry.hosts = tuple(dict.fromkeys([*registry.hosts,
                                          *(split_reference(s.reference)[0] for s in standins)]))
    registry.start(lab)
    timings["registry"] = time.monotonic() - started
    started = time.monotonic()
    lacking = registry.missing(standins)
    timings["check"] = time.monotonic() - started
    if lacking:
        timings.update(build_standins(lacking, docker_client, cache_dir, lab.harness_docker_host))
        started = time.monotonic()
        registry.push(lacking, lab.harness_docker_host)
        timings["push"] = time.monotonic() - started
    return standins, timings
