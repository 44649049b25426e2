"""The stand-in images a rehearsal builds, planned without side effects (``plan_standins``).

For every image reference of a stack, a local image under that same reference with the same
contract (``rehearsal/image_contracts.py``). Where Debian has the real server, the stand-in
*is* that server (Debian's package, started through an entrypoint with the official image's
contract); where it has none, the stand-in only answers the captured health check and is marked
``proven=False`` ("not proven: no server").

Kinds (:data:`KINDS`): postgres, redis, nginx, prometheus, alertmanager, node-exporter,
blackbox, squid (real Debian servers); app (a Node.js server answering the captured health path);
stub (MongoDB, MinIO, Grafana, cAdvisor: not proven). Every stand-in's version gap to the image
it stands in for is in its ``note``. Each image carries the hash of its recipe (everything it is
built from), which ``rehearsal/standin_build.py`` caches by.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from rehearsal.image_contracts import ImageContract, ImageError, http_targets, split_reference

STANDINS_DIR = Path(__file__).parent / "standins"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("ca-certificates", "wget", "netbase", "procps")
"""On top of debootstrap's minbase: wget for the stack's ``wget -q -O /dev/null`` health checks."""

LABEL_RECIPE = "org.platform-rehearsal.recipe"
LABEL_PROVEN = "org.platform-rehearsal.proven"
LABEL_KIND = "org.platform-rehearsal.kind"

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


def recipe_sha(*parts: Any) -> str:
    """sha256 hex of ``parts`` (bytes as they are, anything else as sorted JSON), each ended by NUL."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def base_recipe(suite: str = DEBIAN_SUITE) -> str:
    return recipe_sha("base", suite, DEBIAN_MIRROR, BASE_PACKAGES, 1)


def kind_dockerfile(kind: Kind) -> str:
    """The Dockerfile that builds ``kind`` on its base from the .debs in the context's ``debs/``."""
    # apt (not dpkg -i) orders the local .debs, Pre-Depends included; the build has no network.
    return (f"FROM {base_image(kind.suite)}\n{kind.pre}\nCOPY debs/ /tmp/debs/\n"
            "RUN apt-get install -y -qq --no-install-recommends /tmp/debs/*.deb >/dev/null && "
            "rm -rf /tmp/debs /var/log/*.log /var/log/apt /var/cache/debconf/*-old "
            "/var/lib/apt/lists/*\n"
            f"{kind.post}\n")


def kind_recipe(kind: Kind) -> str:
    files = [(name, (STANDINS_DIR / name).read_bytes()) for name in kind.files]
    return recipe_sha("kind", base_recipe(kind.suite), kind.name, kind.packages, kind_dockerfile(kind),
                [(n, hashlib.sha256(b).hexdigest()) for n, b in files])


def base_image(suite: str = DEBIAN_SUITE) -> str:
    return f"platform-rehearsal/base:{base_recipe(suite)[:16]}"


def kind_image(kind: Kind) -> str:
    return f"platform-rehearsal/{kind.name}:{kind_recipe(kind)[:16]}"


def _standin(reference: str, kind: Kind, proven: bool, note: str, setup: str) -> StandIn:
    recipe = recipe_sha("standin", reference, kind_recipe(kind), setup, proven)
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


def plan_standins(contracts: Sequence[ImageContract],
                  trust_pem: Optional[bytes] = None) -> list[StandIn]:
    """A :class:`StandIn` per contract (no side effect). ``trust_pem``: the lab's CA, trusted by the stand-ins of :data:`TRUSTING_KINDS`.
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
            targets = http_targets(contract.healthchecks)
            if not targets:
                errors.append(f"{contract.reference}: no stand-in: not a known upstream image "
                              f"(rehearsal.standin_plan.RULES) and no HTTP health check to answer "
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
    if errors:
        raise ImageError("stand-in images:\n  " + "\n  ".join(errors))
    return planned


