"""What a backup job is (``BackupJob``), where its files live, how its source URI becomes
environment variables (``connection_environment``), and its RPO arithmetic: the values every
backup script and unit is rendered from."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit


TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
ENV_DIR = "/etc/platform-backup"
STATE_ROOT = "/var/lib/platform-backup"
Mode = Literal["host", "docker"]
Kind = Literal["postgres", "mongodb", "redis", "minio", "pitr"]
SLOT = "platform_wal"
WAL_ROLE = "platform_wal"

# Row counts of every user table, one "schema.table<TAB>count" line each, sorted.
ROW_COUNTS_SQL = (
    "SELECT n.nspname || '.' || c.relname || E'\\t' || "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)
MONGO_COUNTS_JS = ("db.getCollectionNames().sort().forEach(function (c) { "
                   "print(db.getName() + '.' + c + '\\t' + db.getCollection(c).countDocuments({})); })")
# Keys per logical database, one "dbN<TAB>keys=..." line each (INFO keyspace, expiry dropped).
# sed, not grep: an empty Redis has no db line, and grep's "no match" fails the pipeline.
REDIS_KEYSPACE = "sed -n '/^db/p' | cut -d, -f1 | tr ':' '\\t' | tr -d '\\r'"
# The last line of every stored counts file: an empty datastore (no table, no key, no
# collection) still stores a non-empty file, which restic requires of --stdin ("no data read").
COUNTS_END = "# end of counts"
UNITS = {"postgres": "tables", "mongodb": "collections", "redis": "databases", "minio": "objects"}

# libpq's URI query parameters and the environment variables that carry them (PostgreSQL docs,
# "Connection Strings" and "Environment Variables"); anything else is refused.
_PG_PARAMETERS = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
                  "sslkey": "PGSSLKEY", "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT",
                  "application_name": "PGAPPNAME", "options": "PGOPTIONS",
                  "target_session_attrs": "PGTARGETSESSIONATTRS", "channel_binding": "PGCHANNELBINDING"}
PG_ENV = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", *sorted(_PG_PARAMETERS.values()))
REDIS_ENV = ("REDISCLI_AUTH",)
MONGO_ENV = ("MONGO_URI",)


def connection_environment(kind: Kind, uri: str) -> dict[str, str]:
    """The environment variables a job reads its source from, parsed from ``uri`` with
    ``urllib.parse`` (percent-decoding user, password and query values).

    - postgres/pitr: ``postgresql://user:password@host:port/db?sslmode=..`` -> ``PGHOST``,
      ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` and one ``PG*`` per libpq parameter.
    - redis: ``redis[s]://[user]:password@host:port[/db]`` -> ``REDIS_HOST``, ``REDIS_PORT``,
      ``REDIS_USER``, ``REDISCLI_AUTH`` (redis-cli reads the password from it), ``REDIS_TLS``.
    - mongodb: the URI is parsed by the mongo tools themselves; ``MONGO_URI``, ``MONGO_DATABASE``
      (the path) and ``MONGO_TOOL_CONFIG`` (a JSON/YAML config mongodump reads on stdin).
    - minio: ``http[s]://ACCESS:SECRET@host:port/bucket`` -> rclone's ``RCLONE_CONFIG_SRC_*``
      and ``SOURCE_BUCKET``.

    Raises ValueError on another scheme, a missing host or an unknown query parameter (the
    message never contains the URI, which carries a password).
    """
    parts = urlsplit(uri)
    if not parts.hostname:
        raise ValueError(f"the {kind} source URI has no host")
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    if kind in ("postgres", "pitr"):
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"a {kind} source URI starts with postgresql://")
        env = {"PGHOST": parts.hostname, "PGPORT": str(parts.port or 5432), "PGUSER": user,
               "PGPASSWORD": password, "PGDATABASE": unquote(parts.path.lstrip("/")) or "postgres"}
        for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
            if key not in _PG_PARAMETERS:
                raise ValueError(f"the {kind} source URI has the parameter {key!r}, which the "
                                 f"backup does not pass on; known: {', '.join(sorted(_PG_PARAMETERS))}")
            env[_PG_PARAMETERS[key]] = value
        return {k: v for k, v in env.items() if v}
    if kind == "redis":
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("a redis source URI starts with redis:// or rediss://")
        return {"REDIS_HOST": parts.hostname, "REDIS_PORT": str(parts.port or 6379),
                "REDIS_USER": user or "default", "REDISCLI_AUTH": password,
                "REDIS_TLS": "1" if parts.scheme == "rediss" else "0"}
    if kind == "mongodb":
        if parts.scheme not in ("mongodb", "mongodb+srv"):
            raise ValueError("a mongodb source URI starts with mongodb:// or mongodb+srv://")
        return {"MONGO_URI": uri, "MONGO_DATABASE": unquote(parts.path.lstrip("/")),
                "MONGO_TOOL_CONFIG": json.dumps({"uri": uri})}
    if parts.scheme not in ("http", "https"):
        raise ValueError("a minio source URI starts with http:// or https://")
    bucket = unquote(parts.path.strip("/"))
    if not bucket or "/" in bucket:
        raise ValueError("a minio source URI names exactly one bucket as its path")
    port = f":{parts.port}" if parts.port else ""
    return {"RCLONE_CONFIG_SRC_TYPE": "s3", "RCLONE_CONFIG_SRC_PROVIDER": "Minio",
            "RCLONE_CONFIG_SRC_ACCESS_KEY_ID": user, "RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY": password,
            "RCLONE_CONFIG_SRC_ENDPOINT": f"{parts.scheme}://{parts.hostname}{port}",
            "SOURCE_BUCKET": bucket}


def _measured_restore_seconds() -> dict[str, float]:
    """Restore times per kind last measured by ``benchmarks/`` (``benchmarks/results.json``,
    committed with the README's figures); empty when never measured."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results.json"
    if not path.exists():
        return {}
    return {kind: float(seconds) for kind, seconds in json.loads(path.read_text())["restore_seconds"].items()}


MEASURED_RESTORE_SECONDS = _measured_restore_seconds()


def replication_role_sql(password: str) -> str:
    """psql statements (idempotent) for the WAL receiver's role: REPLICATION and LOGIN only.
    Appended to a cluster's init SQL (run with psql, which reads it from a file)."""
    literal = "'" + password.replace("'", "''") + "'"
    return (f"SELECT 'CREATE ROLE {WAL_ROLE} LOGIN REPLICATION' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{WAL_ROLE}')\\gexec\n"
            f"ALTER ROLE {WAL_ROLE} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"PASSWORD '{password}';\n")


def ship_interval_seconds(rpo_minutes: int) -> int:
    """How often WAL is shipped to R2 for a declared RPO: every half of it, so that a ship run
    that takes up to the other half (its duration is the metric
    ``platform_wal_archive_last_duration_seconds``; measured in benchmarks/pitr.py) still lands
    within the RPO. ``pg_receivewal --synchronous`` keeps the local copy within a second of the
    server, so the local side adds nothing measurable."""
    return rpo_minutes * 60 // 2


def effective_rpo_minutes(kind: Kind, rpo_minutes: int) -> float:
    """The worst-case data loss the schedule gives, in minutes: for ``pitr`` one ship interval
    plus one ship run bounded by that interval; for a daily dump 24 h plus its randomized delay
    (10 min)."""
    if kind == "pitr":
        return 2 * ship_interval_seconds(rpo_minutes) / 60
    return 24 * 60 + 10


SCRATCH_MEMORY_MB = 1024
"""The scratch server's memory limit (MiB) when the stack does not run the datastore itself (a
managed database restored on the runner): a quarter of the 4 GiB runner that is the smallest
the products use."""
SCRATCH_CPUS = 1.0


@dataclass(frozen=True)
class BackupJob:
    job: str
    """Job name; also the restic host name, the state directory and the metric label."""
    kind: Kind
    retention_days: int
    """Days kept (``restic forget --keep-within``); for ``pitr`` the point-in-time window."""
    max_age_hours: int = 26
    """The restore test fails when the newest backup is older than this."""
    mode: Mode = "docker"
    tool_image: str = "postgres:16-alpine"
    """Image whose tools match the server's major version (docker mode)."""
    mounts: tuple[str, ...] = ()
    """Host directories the tools need (the CA file of a verify-full URI), docker mode."""
    rpo_minutes: int = 5
    """Declared RPO (``pitr``): sets the WAL ship interval."""
    source_service: str = ""
    """docker mode: run the tools in the network namespace of the container labelled
    ``platform.service=<this>``, so ``127.0.0.1`` in the source URI is the server itself: the
    replication the image's pg_hba admits only on loopback, and a server published on the host's
    private address only, where the host's own loopback answers nothing. Empty: the host's network."""
    scratch_memory_mb: int = SCRATCH_MEMORY_MB
    """docker mode: the restore test's scratch server's memory limit (``docker run --memory``) in
    MiB: its datastore's own ``memory_mb`` where the stack runs it, else ``SCRATCH_MEMORY_MB``.
    The scratch data lives on a tmpfs whose pages count against it, so the tmpfs is capped at
    this size too: a restore that does not fit fails the restore test (alerted), never the host."""
    scratch_cpus: float = SCRATCH_CPUS
    """docker mode: its CPU limit (``docker run --cpus``): the datastore's own ``cpus``, else
    ``SCRATCH_CPUS``."""

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if len(self.job) > 50:
            # A scratch server's socket, /var/lib/platform-backup/JOB/restore-test/s/.s.PGSQL.5432,
            # must fit the 107 bytes of a Unix socket path.
            raise ValueError(f"job name {self.job!r} is longer than 50 characters")
        if self.rpo_minutes < 1:
            raise ValueError("rpo_minutes must be at least 1")
        if self.scratch_memory_mb < 64 or self.scratch_cpus <= 0:
            raise ValueError("scratch_memory_mb must be at least 64 and scratch_cpus above 0")
        if self.kind == "mongodb" and self.mode != "docker":
            raise ValueError("mongodb backups run the mongo image's tools (docker mode)")
        if self.kind == "minio" and self.mode != "host":
            raise ValueError("minio mirrors run rclone on the host (host mode)")

    @property
    def state_dir(self) -> str:
        return f"{STATE_ROOT}/{self.job}"
