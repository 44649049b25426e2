"""Backup, restore-test, WAL-archiving and systemd unit files for off-site backups, as pure renderers.

Every job stores into one restic repository on R2 (encrypted, content-addressed, deduplicated):

- ``postgres``/``mongodb``/``redis``: the dump streams from the tool straight into
  ``restic backup --stdin`` (no plaintext dump on disk), with a second snapshot of per-table
  (collection, keyspace) counts tagged with the same run; retention is ``restic forget
  --keep-within``. A weekly restore test restores the newest dump into a per-job scratch server
  that has no network port, compares the counts, and checks a rotating slice of the repository's
  data (``restic check --read-data-subset``).
- ``minio``: rclone syncs the bucket into the job's state directory (only changed objects cross
  the wire) and restic backs that directory up; the restore test restores it and requires every
  object of the run's manifest back with its size.
- ``pitr`` (a self-hosted PostgreSQL cluster): ``pg_receivewal`` streams WAL continuously over a
  physical replication slot into the job's state directory; a timer ships it to restic every
  ``ship_interval_seconds`` (half the declared RPO); ``pg_basebackup`` streams a weekly
  base backup into restic. The PITR test restores a base backup plus WAL into a scratch instance
  with ``recovery_target_time`` and requires the recovery to stop at that time.

No secret is ever an argument: connection settings come as environment variables parsed from the
source URI in Python (:func:`connection_environment`), passwords as ``PGPASSWORD``,
``REDISCLI_AUTH``, ``RESTIC_PASSWORD_FILE``, a mongo tools config on stdin. No path handed to the
Docker daemon lives in a private namespace: the work directory is the unit's
``StateDirectory=`` under /var/lib, never /tmp. No two jobs share a port: scratch servers listen
on a Unix socket in the job's directory (host mode) or run with ``--network none`` (docker mode).

Tools run on the host (``mode="host"``, what the tests drive) or from pinned images through
Docker (``mode="docker"``, so the client matches the server's major version); restic, rclone
and jq always run on the host.
"""

from __future__ import annotations

import json
import textwrap
import zlib
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
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "results.json"
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

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if len(self.job) > 50:
            # A scratch server's socket, /var/lib/platform-backup/JOB/restore-test/s/.s.PGSQL.5432,
            # must fit the 107 bytes of a Unix socket path.
            raise ValueError(f"job name {self.job!r} is longer than 50 characters")
        if self.rpo_minutes < 1:
            raise ValueError("rpo_minutes must be at least 1")
        if self.kind == "mongodb" and self.mode != "docker":
            raise ValueError("mongodb backups run the mongo image's tools (docker mode)")
        if self.kind == "minio" and self.mode != "host":
            raise ValueError("minio mirrors run rclone on the host (host mode)")

    @property
    def state_dir(self) -> str:
        return f"{STATE_ROOT}/{self.job}"


def _labels(job: BackupJob) -> str:
    return f'job=\\"{job.job}\\"'


def _tool_functions(job: BackupJob, tools: tuple[str, ...], env: tuple[str, ...],
                    extra: str = "") -> str:
    """``<tool>_`` shell functions: the host's tool, or the same tool from the pinned image with
    the connection variables forwarded by name (``-e NAME``: the value never is an argument)."""
    prefix = ""
    if job.mode == "docker":
        mounts = "".join(f" -v {m}:{m}:ro" for m in job.mounts)
        forward = "".join(f" -e {name}" for name in env)
        network = "host"
        if job.source_service:
            network = ('"container:$(docker ps -q --filter '
                       f'label=platform.service={job.source_service} | head -n 1)"')
        prefix = f"docker run --rm -i --network {network}{forward}{mounts}{extra} {job.tool_image} "
    return "".join(f'{tool}_() {{ {prefix}{tool} "$@"; }}\n' for tool in tools)


_RESTIC_RETRY = textwrap.dedent("""\
    # restic_retry ARGS... -- restic ARGS (output dropped), retried while another run on this
    # repository holds its lock (a WAL ship every few seconds, a prune): restic 0.14 has no
    # --retry-lock. Any other failure fails at once.
    restic_retry() {
      local attempt err=""
      for attempt in $(seq 1 30); do
        if err="$(restic "$@" 2>&1 >/dev/null)"; then return 0; fi
        case "$err" in
          *"already locked"*) echo "$JOB: repository locked (attempt $attempt), waiting" >&2; sleep 10 ;;
          *) printf '%s\\n' "$err" >&2; return 1 ;;
        esac
      done
      printf '%s\\n' "$err" >&2
      return 1
    }
    """)


def _common(job: BackupJob, role: str, what: str, *, retry: bool = True) -> str:
    """Shebang, strict mode, repository checks, the job's own work directory and helpers."""
    return _common_text(job, role, what) + (_RESTIC_RETRY if retry else "")


def _common_text(job: BackupJob, role: str, what: str) -> str:
    return textwrap.dedent(f"""\
        #!/usr/bin/env bash
        # Rendered by components/backupscripts.py: {what} of {job.job} ({job.kind}).
        set -euo pipefail
        umask 077
        JOB="{job.job}"
        TEXTFILE_DIR="${{TEXTFILE_DIR:-{TEXTFILE_DIR}}}"
        : "${{RESTIC_REPOSITORY:?set in {ENV_DIR}/{job.job}.env}}"
        : "${{RESTIC_PASSWORD_FILE:?set in {ENV_DIR}/{job.job}.env}}"
        # The unit's StateDirectory= (under /var/lib, so a path handed to the Docker daemon is
        # the path the daemon sees); each role works in its own subdirectory.
        STATE="${{STATE_DIRECTORY:-{STATE_ROOT}/$JOB}}"
        WORK="$STATE/{role}"
        export RESTIC_CACHE_DIR="$STATE/cache"
        STARTED="$(date +%s)"
        rm -rf "$WORK"
        mkdir -p "$WORK"

        # write_metrics FILE LINE... -- atomically replace one metric file. The directory is
        # node-exporter's (it runs as nobody), so it is created world-readable whatever the umask.
        write_metrics() {{
          local file="$1" tmp
          shift
          (umask 022 && mkdir -p "$TEXTFILE_DIR")
          chmod 0755 "$TEXTFILE_DIR"
          tmp="$(mktemp "$TEXTFILE_DIR/.$file.XXXXXX")"
          printf '%s\\n' "$@" >"$tmp"
          chmod 0644 "$tmp"
          mv -f "$tmp" "$TEXTFILE_DIR/$file"
        }}

        fail() {{
          echo "$JOB: $*" >&2
          exit 1
        }}

        # snapshot_field FIELD QUERY... -- FIELD of the newest snapshot matching restic's filters.
        snapshot_field() {{
          local field="$1"
          shift
          restic snapshots --json --host "$JOB" "$@" | jq -r "sort_by(.time) | last | .$field // empty"
        }}
        """)


_BACKUP_STREAM = textwrap.dedent("""\
    # backup_stream FILE COMMAND... -- COMMAND's stdout into the repository as /FILE. restic
    # --stdin stores what it read even when COMMAND failed, so such a snapshot is forgotten.
    backup_stream() {
      local file="$1" status=0 summary snapshot
      shift
      summary="$("$@" | restic backup --quiet --json --stdin --stdin-filename "$file" \\
        --host "$JOB" --tag "$RUN")" || status=$?
      snapshot="$(printf '%s\\n' "$summary" | jq -r 'select(.message_type == "summary") | .snapshot_id' | tail -n 1)"
      if [ "$status" -ne 0 ]; then
        [ -z "$snapshot" ] || restic forget --quiet "$snapshot" >/dev/null 2>&1 || true
        fail "$file: the dump or its upload failed"
      fi
      SIZE=$((SIZE + $(printf '%s\\n' "$summary" | jq -r 'select(.message_type == "summary") | .total_bytes_processed')))
      ADDED=$((ADDED + $(printf '%s\\n' "$summary" | jq -r 'select(.message_type == "summary") | .data_added')))
    }
    """)

_INIT_REPOSITORY = textwrap.dedent("""\
    # The repository is created by the first run (format 2: compressed).
    restic cat config >/dev/null 2>&1 || restic init --repository-version 2 >/dev/null
    """)


def _backup_failure_trap(labels: str, metric_file: str = "backup-$JOB.prom",
                         prefix: str = "platform_backup", extra: tuple[str, ...] = ()) -> str:
    """On failure: the success metric drops to 0 and the last success time is kept; ``extra``:
    more metric lines (shell words) a failed run must still report, e.g. what an alert compares
    the last success with."""
    more = "".join(f" \\\n      {line}" for line in extra)
    return textwrap.dedent(f"""\
        on_exit() {{
          local status=$?
          rm -rf "$WORK"
          if [ "$status" -ne 0 ]; then
            write_metrics "{metric_file}" \\
              "{prefix}_success{{{labels}}} 0" \\
              "{prefix}_last_attempt_timestamp_seconds{{{labels}}} $(date +%s)" \\
              "{prefix}_last_success_timestamp_seconds{{{labels}}} ${{LAST_SUCCESS:-0}}"@@MORE@@
          fi
          exit "$status"
        }}
        LAST_SUCCESS="$(sed -n 's/^{prefix}_last_success_timestamp_seconds{{[^}}]*}} //p' \\
          "$TEXTFILE_DIR/{metric_file}" 2>/dev/null || true)"
        trap on_exit EXIT
        """).replace("@@MORE@@", more)


def _backup_success_metrics(labels: str) -> str:
    return textwrap.dedent(f"""\
        NOW="$(date +%s)"
        write_metrics "backup-$JOB.prom" \\
          "platform_backup_success{{{labels}}} 1" \\
          "platform_backup_last_attempt_timestamp_seconds{{{labels}}} $NOW" \\
          "platform_backup_last_success_timestamp_seconds{{{labels}}} $NOW" \\
          "platform_backup_last_size_bytes{{{labels}}} $SIZE" \\
          "platform_backup_last_added_bytes{{{labels}}} $ADDED" \\
          "platform_backup_last_duration_seconds{{{labels}}} $((NOW - STARTED))"
        """)


def _retention(*paths: str, within: str = '"${RETENTION_DAYS}d"', extra: str = "",
               prune: bool = True) -> str:
    """``restic forget --keep-within`` per path (restic's ``--path`` filters match snapshots
    holding every path given, so one call per path), then prune. restic measures the window
    from the newest snapshot of each group, so a failing job never erodes what exists. The
    script sets RETENTION_DAYS."""
    lines = "".join(f"restic_retry forget --host \"$JOB\" --path {p} --group-by host,paths "
                    f"--keep-within {within}{extra}\n" for p in paths)
    return lines + ("restic_retry prune\n" if prune else "")


def _dump_commands(job: BackupJob) -> str:
    """Tool functions plus ``dump`` and ``counts``, each writing to stdout."""
    if job.kind == "redis":
        return _tool_functions(job, ("redis-cli",), REDIS_ENV, extra="") + textwrap.dedent("""\
            # A rediss:// source is verified against BACKUP_CA_CERT (the internal CA).
            REDIS_ARGS=(-h "$REDIS_HOST" -p "$REDIS_PORT" --user "$REDIS_USER" --no-auth-warning)
            if [ "$REDIS_TLS" = 1 ]; then
              REDIS_ARGS+=(--tls --cacert "${BACKUP_CA_CERT:?a rediss:// source needs BACKUP_CA_CERT}")
            fi
            dump() { redis-cli_ "${REDIS_ARGS[@]}" --rdb - 2>/dev/null; }
            """) + f"counts() {{ redis-cli_ \"${{REDIS_ARGS[@]}}\" INFO keyspace | {REDIS_KEYSPACE}; }}\n"
    if job.kind == "mongodb":
        return _tool_functions(job, ("mongodump", "mongorestore", "mongosh"), MONGO_ENV) + textwrap.dedent(f"""\
            # mongodump reads the URI (and its password) from a config file on stdin; mongosh
            # connects from a script that reads it from the environment.
            dump() {{ printf '%s\\n' "$MONGO_TOOL_CONFIG" | mongodump_ --quiet --config=/dev/stdin --archive; }}
            counts() {{ mongosh_ --quiet --nodb --eval "db = connect(process.env.MONGO_URI); {MONGO_COUNTS_JS}"; }}
            """)
    return _tool_functions(job, ("pg_dump", "psql"), PG_ENV) + textwrap.dedent(f"""\
        # Uncompressed: restic compresses, and its chunks only deduplicate across days when an
        # unchanged table region gives unchanged bytes (measured in benchmarks/backup_restore.py).
        dump() {{ pg_dump_ --format=custom --compress=0 --no-owner --no-privileges; }}
        counts() {{ psql_ --no-psqlrc --set=ON_ERROR_STOP=1 -At -c "{ROW_COUNTS_SQL}"; }}
        """)


def render_backup_script(job: BackupJob) -> str:
    """The daily backup: ``/JOB.dump`` and ``/JOB.counts`` streamed into restic, then retention."""
    labels = _labels(job)
    if job.kind == "minio":
        return _render_mirror_backup(job, labels)
    if job.kind == "pitr":
        return render_base_backup_script(job)
    body = f'counts_stored() {{ counts; echo "{COUNTS_END}"; }}\n' + textwrap.dedent(f"""\
        SIZE=0
        ADDED=0
        RUN="run-$(date -u +%Y%m%dT%H%M%SZ)"
        {_INIT_REPOSITORY.strip()}
        # The dump first: a run whose dump failed never stores counts, and the restore test
        # starts from the newest counts, so a partial dump restic kept is never picked.
        backup_stream "$JOB.dump" dump
        backup_stream "$JOB.counts" counts_stored
        """) + f"RETENTION_DAYS={job.retention_days}\n" + _retention(f"/{job.job}.dump", f"/{job.job}.counts")
    return (_common(job, "backup", "off-site backup") + _dump_commands(job) + _BACKUP_STREAM
            + _backup_failure_trap(labels) + body + _backup_success_metrics(labels)
            + 'echo "$JOB: stored $RUN ($SIZE bytes read, $ADDED bytes added)"\n')


def _restore_test_trap(job: BackupJob, labels: str, metric_file: str = "restore-test-$JOB.prom",
                       prefix: str = "platform_restore_test") -> str:
    """The restore test's exit trap: scratch server and work directory removed, the result
    written as metrics whatever happened."""
    return textwrap.dedent(f"""\
        MAX_AGE_HOURS={job.max_age_hours}
        on_exit() {{
          local status=$?
          scratch_stop
          rm -rf "$WORK"
          local now success=1
          now="$(date +%s)"
          [ "$status" -eq 0 ] || success=0
          write_metrics "{metric_file}" \\
            "{prefix}_success{{{labels}}} $success" \\
            "{prefix}_last_run_timestamp_seconds{{{labels}}} $now" \\
            "{prefix}_duration_seconds{{{labels}}} $((now - STARTED))"
          exit "$status"
        }}
        trap on_exit EXIT
        """)


def _newest(path: str, what: str) -> str:
    """Sets SNAPSHOT/RUN to the newest snapshot of ``path``; fails when none or it is too old."""
    return textwrap.dedent(f"""\
        SNAPSHOT="$(snapshot_field id --path "{path}")"
        [ -n "$SNAPSHOT" ] || fail "no {what} found in the repository"
        RUN="$(snapshot_field 'tags[0]' --path "{path}")"
        TAKEN="$(date -d "$(snapshot_field time --path "{path}")" +%s)"
        AGE_HOURS=$(( ($(date +%s) - TAKEN) / 3600 ))
        [ "$AGE_HOURS" -le "$MAX_AGE_HOURS" ] || fail "newest {what} ${{SNAPSHOT:0:8}} is $AGE_HOURS hours old (limit $MAX_AGE_HOURS)"
        """)


# A slice of the repository's data is read back and verified each week; the slice rotates with
# the ISO week, so every pack is read once every four weeks.
_CHECK = ('restic_retry check --read-data-subset="$(( 10#$(date +%V) % 4 + 1 ))/4" '
          '|| fail "restic check found damage in the repository"\n')


def _scratch(job: BackupJob, engine: str, *, initdb: bool = True) -> str:
    """``scratch_start``/``scratch_stop`` and ``scratch_<tool>`` for a throwaway server that has
    no TCP port: a Unix socket in the work directory (host mode, run as the postgres user for
    PostgreSQL) or a container with ``--network none`` reached through ``docker exec``."""
    if job.mode == "docker":
        data = {"postgres": "--tmpfs /var/lib/postgresql/data -e POSTGRES_HOST_AUTH_METHOD=trust",
                "mongodb": "--tmpfs /data/db", "redis": '-v "$WORK:/data"'}[engine]
        command = {"postgres": "", "mongodb": "",
                   "redis": ' redis-server --dir /data --dbfilename dump.rdb --appendonly no --save ""'}[engine]
        tools = {"postgres": ("psql", "pg_restore"), "mongodb": ("mongosh", "mongorestore"),
                 "redis": ("redis-cli",)}[engine]
        functions = "".join(f'scratch_{t.replace("-", "_")}() {{ docker exec -i "$SCRATCH_CONTAINER" {t} "$@"; }}\n'
                            for t in tools)
        psql_user = "scratch_psql() { docker exec -i -u postgres \"$SCRATCH_CONTAINER\" psql \"$@\"; }\n"
        if engine == "postgres":
            functions = psql_user + ('scratch_pg_restore() { docker exec -i -u postgres "$SCRATCH_CONTAINER" '
                                     'pg_restore "$@"; }\n')
        if engine == "redis":  # a snapshot it cannot load stops it: _wait_ready gives up then
            functions += ("scratch_running() { [ \"$(docker inspect -f '{{.State.Running}}' \"$SCRATCH_CONTAINER\" "
                          "2>/dev/null)\" = true ]; }\n")
        return 'SCRATCH_CONTAINER=""\n' + functions + textwrap.dedent(f"""\
            scratch_start() {{
              SCRATCH_CONTAINER="restore-test-$JOB-$$"
              docker run -d --rm --name "$SCRATCH_CONTAINER" --network none {data} {job.tool_image}{command} >/dev/null
            }}
            scratch_stop() {{
              [ -z "$SCRATCH_CONTAINER" ] || docker rm -f "$SCRATCH_CONTAINER" >/dev/null 2>&1 || true
            }}
            """)
    if engine == "redis":
        return textwrap.dedent("""\
            SCRATCH_CONTAINER=""
            scratch_redis_cli() { redis-cli -s "$WORK/redis.sock" "$@"; }
            # Redis exits when the snapshot does not load; its pid file outlives it.
            scratch_running() { [ ! -s "$WORK/redis.pid" ] || kill -0 "$(cat "$WORK/redis.pid")" 2>/dev/null; }
            scratch_start() {
              redis-server --port 0 --unixsocket "$WORK/redis.sock" --dir "$WORK" --dbfilename dump.rdb \\
                --appendonly no --save "" --daemonize yes --pidfile "$WORK/redis.pid" \\
                --logfile "$WORK/redis.log" || fail "the scratch Redis did not start"
              SCRATCH_CONTAINER=host
            }
            scratch_stop() {
              [ -z "$SCRATCH_CONTAINER" ] || scratch_redis_cli shutdown nosave >/dev/null 2>&1 || true
            }
            """)
    # PostgreSQL on the host: initdb refuses root, so the scratch cluster is the postgres user's.
    start = textwrap.dedent("""\
        scratch_start() {
          scratch_prepare
          as_postgres "$PG_BINDIR/initdb" -D "$WORK/pgdata" -U postgres -A trust --no-sync >/dev/null
          SCRATCH_CONTAINER=host
          scratch_pg_ctl start >/dev/null || { cat "$WORK/server.log" >&2; fail "the scratch PostgreSQL did not start"; }
        }
        """) if initdb else ""
    return textwrap.dedent("""\
        SCRATCH_CONTAINER=""
        PG_BINDIR="${PG_BINDIR:-$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1)}"
        # The source's PG* settings stay out of the scratch server's way.
        as_postgres() {
          local clean=(env -u PGHOST -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE -u PGOPTIONS)
          if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "${clean[@]}" "$@"; else "${clean[@]}" "$@"; fi
        }
        scratch_psql() { as_postgres "$PG_BINDIR/psql" -h "$WORK/s" -p 5432 -U postgres "$@"; }
        scratch_pg_restore() { as_postgres "$PG_BINDIR/pg_restore" -h "$WORK/s" -p 5432 -U postgres "$@"; }
        scratch_pg_ctl() {
          as_postgres "$PG_BINDIR/pg_ctl" -D "$WORK/pgdata" -l "$WORK/server.log" -w -t 600 \\
            -o "-p 5432 -c listen_addresses='' -k $WORK/s -c fsync=off" "$@"
        }
        scratch_prepare() {
          mkdir -p "$WORK/s" "$WORK/pgdata"
          chmod 0711 "$STATE" "$WORK"
          chmod 0700 "$WORK/pgdata"
          [ "$(id -u)" -ne 0 ] || chown -R postgres: "$WORK"
        }
        scratch_stop() {
          [ -z "$SCRATCH_CONTAINER" ] || scratch_pg_ctl -m immediate stop >/dev/null 2>&1 || true
        }
        """) + start


def _wait_ready(engine: str) -> str:
    """Up to 120 s (1 s apart) until the scratch server answers; for Redis, which exits when it
    cannot load the snapshot, no longer than it runs (``scratch_running``)."""
    probe = {"postgres": "scratch_psql --no-psqlrc -At -d postgres -c 'SELECT 1'",
             "mongodb": "scratch_mongosh --quiet --eval 'db.runCommand({ping: 1})'",
             "redis": "scratch_redis_cli PING | grep -q PONG"}[engine]
    gone = "  scratch_running || break\n" if engine == "redis" else ""
    return textwrap.dedent(f"""\
        for _ in $(seq 1 120); do
          {probe} >/dev/null 2>&1 && break
        """) + gone + textwrap.dedent("""\
          sleep 1
        done
        """)


def _restore_and_count(job: BackupJob) -> str:
    if job.kind == "redis":
        return textwrap.dedent("""\
            restic dump "$SNAPSHOT" "/$JOB.dump" >"$WORK/dump.rdb" || fail "the snapshot $RUN cannot be read"
            chmod 0755 "$WORK" && chmod 0644 "$WORK/dump.rdb"
            scratch_start
            """) + _wait_ready("redis") + textwrap.dedent(f"""\
            scratch_redis_cli INFO keyspace | {REDIS_KEYSPACE} >"$WORK/restored.counts" \\
              || fail "the snapshot $RUN did not load"
            """)
    if job.kind == "mongodb":
        return "scratch_start\n" + _wait_ready("mongodb") + textwrap.dedent(f"""\
            restic dump "$SNAPSHOT" "/$JOB.dump" | scratch_mongorestore --quiet --archive --drop \\
              || fail "mongorestore of $RUN failed"
            scratch_mongosh --quiet "mongodb://127.0.0.1/$MONGO_DATABASE" --eval "{MONGO_COUNTS_JS}" >"$WORK/restored.counts"
            """)
    return "scratch_start\n" + _wait_ready("postgres") + textwrap.dedent(f"""\
        scratch_psql --no-psqlrc -q --set=ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE restore_test"
        restic dump "$SNAPSHOT" "/$JOB.dump" | scratch_pg_restore --no-owner --no-privileges --exit-on-error \\
          --dbname=restore_test || fail "pg_restore of $RUN failed"
        scratch_psql --no-psqlrc --set=ON_ERROR_STOP=1 -At -d restore_test \\
          -c "{ROW_COUNTS_SQL}" >"$WORK/restored.counts"
        """)


def render_restore_test_script(job: BackupJob) -> str:
    """The weekly restore test: newest dump into a scratch server, counts compared, then a
    rotating quarter of the repository's data read back (``restic check``)."""
    labels = _labels(job)
    if job.kind == "minio":
        return _render_mirror_restore_test(job, labels)
    if job.kind == "pitr":
        return render_pitr_test_script(job)
    engine = job.kind
    env_check = 'MONGO_DATABASE="${MONGO_DATABASE:?set in the environment file}"\n' if engine == "mongodb" else ""
    body = _newest(f"/{job.job}.counts", "backup") + textwrap.dedent(f"""\
        restic dump "$SNAPSHOT" "/$JOB.counts" | sed '/^{COUNTS_END}$/d' >"$WORK/expected.counts"
        SNAPSHOT="$(snapshot_field id --path "/$JOB.dump" --tag "$RUN")"
        [ -n "$SNAPSHOT" ] || fail "the dump of $RUN is missing"
        """) + _restore_and_count(job) + textwrap.dedent(f"""\
        diff -u "$WORK/expected.counts" "$WORK/restored.counts" || fail "counts differ after restoring $RUN"
        {_CHECK.strip()}
        echo "$JOB: restored $RUN; $(wc -l <"$WORK/restored.counts") {UNITS[engine]} match"
        """)
    return (_common(job, "restore-test", "weekly restore test") + env_check + _scratch(job, engine)
            + _restore_test_trap(job, labels) + body)


def _render_mirror_backup(job: BackupJob, labels: str) -> str:
    """rclone syncs the bucket into ``$STATE/mirror`` (only changed objects are fetched), restic
    backs the directory up (only changed chunks are uploaded); the run's manifest (path and
    size of every object, from the source's listing) is stored beside it."""
    body = textwrap.dedent("""\
        : "${SOURCE_BUCKET:?set in the environment file}"
        SIZE=0
        ADDED=0
        RUN="run-$(date -u +%Y%m%dT%H%M%SZ)"
        MIRROR="$STATE/mirror"
        mkdir -p "$MIRROR"
        @@INIT@@
        rclone lsf -R --files-only --format ps --separator "$(printf '\\t')" "src:$SOURCE_BUCKET" \\
          | LC_ALL=C sort >"$WORK/manifest"
        rclone sync "src:$SOURCE_BUCKET" "$MIRROR"
        SUMMARY="$(restic backup --quiet --json --host "$JOB" --tag "$RUN" "$MIRROR")"
        ADDED=$((ADDED + $(printf '%s\\n' "$SUMMARY" | jq -r 'select(.message_type == "summary") | .data_added')))
        # The manifest last: the restore test starts from the newest one.
        backup_stream "$JOB.manifest" cat "$WORK/manifest"
        SIZE="$(awk -F '\\t' '{s += $2} END {print s + 0}' "$WORK/manifest")"
        """).replace("@@INIT@@\n", _INIT_REPOSITORY)
    return (_common(job, "backup", "off-site mirror") + _BACKUP_STREAM + _backup_failure_trap(labels)
            + body + f"RETENTION_DAYS={job.retention_days}\n"
            + _retention(f"/{job.job}.manifest", f"{job.state_dir}/mirror")
            + _backup_success_metrics(labels)
            + 'echo "$JOB: mirrored $(wc -l <"$WORK/manifest") objects ($SIZE bytes, $ADDED bytes added)"\n')


def _render_mirror_restore_test(job: BackupJob, labels: str) -> str:
    """Restores the newest mirror snapshot into the work directory; every object of that run's
    manifest must come back with its size (restic authenticates every blob it restores)."""
    body = _newest(f"/{job.job}.manifest", "mirror manifest") + textwrap.dedent(f"""\
        restic dump "$SNAPSHOT" "/$JOB.manifest" >"$WORK/manifest"
        TREE="$(snapshot_field id --path "$STATE/mirror" --tag "$RUN")"
        [ -n "$TREE" ] || fail "the mirror of $RUN is missing"
        restic restore --quiet "$TREE" --target "$WORK/restore" >/dev/null || fail "restoring the mirror failed"
        (cd "$WORK/restore$STATE/mirror" && find . -type f -printf '%P\\t%s\\n' | LC_ALL=C sort) >"$WORK/restored.manifest"
        MISSING="$(LC_ALL=C comm -23 "$WORK/manifest" "$WORK/restored.manifest")"
        [ -z "$MISSING" ] || fail "objects missing or of another size after restoring $RUN: $MISSING"
        {_CHECK.strip()}
        echo "$JOB: restored $(wc -l <"$WORK/restored.manifest") {UNITS['minio']}; all $(wc -l <"$WORK/manifest") of $RUN match"
        """)
    return (_common(job, "restore-test", "weekly restore test") + "scratch_stop() { :; }\n"
            + _restore_test_trap(job, labels) + body)


# --- point-in-time recovery (pitr) ------------------------------------------------------------

def _wal_tools(job: BackupJob) -> str:
    extra = f' -v "$WAL_DIR:$WAL_DIR"' if job.mode == "docker" else ""
    return textwrap.dedent("""\
        WAL_DIR="$STATE/wal"
        mkdir -p "$WAL_DIR"
        """) + _tool_functions(job, ("pg_receivewal", "pg_basebackup"), PG_ENV, extra=extra)


def render_wal_receive_script(job: BackupJob) -> str:
    """The long-running WAL receiver (``platform-wal-receive-JOB.service``): creates the
    physical replication slot if missing, then streams WAL with ``--synchronous`` (each write
    flushed, so the local copy lags the server by under a second) until stopped. The slot makes
    the server keep WAL the receiver has not fetched yet."""
    script = _common(job, "receive", "continuous WAL receiver", retry=False) + _wal_tools(job) + textwrap.dedent(f"""\
        pg_receivewal_ --create-slot --if-not-exists --slot={SLOT} --no-password
        echo "$JOB: receiving WAL into $WAL_DIR (started $(date -u -d "@$STARTED"))"
        pg_receivewal_ -D "$WAL_DIR" --slot={SLOT} --synchronous --no-loop --no-password
        """)
    return script


def render_wal_ship_script(job: BackupJob) -> str:
    """Ships the WAL directory (completed segments and the current ``.partial`` one) into restic,
    every ``ship_interval_seconds``; writes the age of the newest archived WAL as a metric."""
    labels = _labels(job)
    interval = ship_interval_seconds(job.rpo_minutes)
    # A failed run still reports the RPO, the newest segment and the receiver's state: the
    # WALArchiveStalled alert compares them with the last success (components/prometheus.py).
    kept = (f'"platform_wal_archive_newest_segment_timestamp_seconds{{{labels}}} ${{NEWEST:-0}}"',
            f'"platform_wal_archive_rpo_seconds{{{labels}}} {job.rpo_minutes * 60}"',
            f'"platform_wal_receiver_up{{{labels}}} $RECEIVER_UP"')
    return (_common(job, "ship", "WAL shipping") + _wal_tools(job)
            + textwrap.dedent("""\
                NEWEST=""
                RECEIVER_UP=0
                ! systemctl is-active --quiet "platform-wal-receive-$JOB.service" || RECEIVER_UP=1
                """)
            + _backup_failure_trap(labels, "wal-$JOB.prom", "platform_wal_archive", extra=kept)
            + textwrap.dedent(f"""\
        # Ship interval: {interval} s, for a declared RPO of {job.rpo_minutes} min.
        NEWEST="$(find "$WAL_DIR" -maxdepth 1 -type f -printf '%T@\\n' | sort -n | tail -n 1)"
        NEWEST="${{NEWEST%.*}}"
        [ -n "$NEWEST" ] || fail "no WAL received yet in $WAL_DIR (is platform-wal-receive-$JOB running?)"
        {_INIT_REPOSITORY.strip()}
        restic_retry backup --host "$JOB" --tag wal "$WAL_DIR"
        NOW="$(date +%s)"
        write_metrics "wal-$JOB.prom" \\
          "platform_wal_archive_success{{{labels}}} 1" \\
          "platform_wal_archive_last_attempt_timestamp_seconds{{{labels}}} $NOW" \\
          "platform_wal_archive_last_success_timestamp_seconds{{{labels}}} $NOW" \\
          "platform_wal_archive_newest_segment_timestamp_seconds{{{labels}}} $NEWEST" \\
          "platform_wal_archive_last_duration_seconds{{{labels}}} $((NOW - STARTED))" \\
          "platform_wal_archive_rpo_seconds{{{labels}}} {job.rpo_minutes * 60}" \\
          "platform_wal_receiver_up{{{labels}}} $RECEIVER_UP"
        """))


def render_base_backup_script(job: BackupJob) -> str:
    """The weekly base backup: ``pg_basebackup -Ft -D -`` (tar on stdout, WAL from the archive)
    streamed into restic; then local WAL older than the previous base backup is dropped (the
    archive has it), and retention: base backups and WAL for the PITR window plus one week."""
    labels = _labels(job)
    body = textwrap.dedent(f"""\
        SIZE=0
        ADDED=0
        RUN="base-$(date -u +%Y%m%dT%H%M%SZ)"
        {_INIT_REPOSITORY.strip()}
        backup_stream "$JOB-base.tar" pg_basebackup_ -D - -Ft -X none --checkpoint=fast --no-password
        # WAL shipped every run holds segments back to the previous base backup, so one WAL
        # snapshot after a target time restores it from the newest base backup before it.
        PREVIOUS="$(restic snapshots --json --host "$JOB" --path "/$JOB-base.tar" \\
          | jq -r 'sort_by(.time) | .[-2].time // empty')"
        if [ -n "$PREVIOUS" ]; then
          find "$WAL_DIR" -maxdepth 1 -type f ! -name '*.partial' ! -newermt "$PREVIOUS" -delete
        fi
        """) + f"RETENTION_DAYS={job.retention_days}\n" + _retention(
            f"/{job.job}-base.tar", within='"$((RETENTION_DAYS + 7))d"', prune=False) + _retention(
            f"{job.state_dir}/wal", within="2d", extra=' --keep-within-daily "$((RETENTION_DAYS + 7))d"')
    return (_common(job, "base-backup", "weekly base backup") + _wal_tools(job) + _BACKUP_STREAM
            + _backup_failure_trap(labels) + body + _backup_success_metrics(labels)
            + 'echo "$JOB: stored base backup $RUN ($SIZE bytes read, $ADDED bytes added)"\n')


def render_pitr_test_script(job: BackupJob) -> str:
    """Point-in-time restore into a scratch instance: the newest base backup taken before
    ``PITR_TARGET_TIME`` (default: one hour ago), the first WAL snapshot after it, recovery with
    ``recovery_target_time`` and ``restore_command`` reading the restored segments (the newest,
    still ``.partial``, one included). Passes when recovery stops at the target and the instance
    is promoted; prints ``PITR_PROBE_SQL``'s result (``probe: ...``) and the table count."""
    labels = _labels(job)
    scratch = _scratch(job, "postgres", initdb=False)
    if job.mode == "docker":
        scratch = scratch.replace("--tmpfs /var/lib/postgresql/data -e POSTGRES_HOST_AUTH_METHOD=trust",
                                  '-v "$WORK:$WORK" -e PGDATA="$WORK/pgdata"')
        scratch += textwrap.dedent(f"""\
            scratch_prepare() {{
              mkdir -p "$WORK/pgdata"
              docker run --rm -v "$WORK:$WORK" {job.tool_image} chown -R postgres: "$WORK" >/dev/null
            }}
            scratch_log() {{ docker logs "$SCRATCH_CONTAINER" 2>&1; }}
            """)
    else:
        scratch += textwrap.dedent("""\
            scratch_log() { cat "$WORK/server.log"; }
            scratch_start() {
              SCRATCH_CONTAINER=host
              scratch_pg_ctl start >/dev/null || { scratch_log >&2; fail "the scratch PostgreSQL did not recover"; }
            }
            """)
    body = textwrap.dedent(f"""\
        TARGET="${{PITR_TARGET_TIME:-$(date -u -d '-1 hour' '+%Y-%m-%d %H:%M:%S+00')}}"
        TARGET_EPOCH="$(date -d "$TARGET" +%s)" || fail "cannot read the target time $TARGET"
        # snapshots PATH -- "epoch id" of every snapshot of PATH, oldest first.
        snapshots() {{
          restic snapshots --json --host "$JOB" --path "$1" \\
            | jq -r 'sort_by(.time) | .[] | "\\(.time) \\(.id)"' \\
            | while read -r time id; do echo "$(date -d "$time" +%s) $id"; done
        }}
        BASE="$(snapshots "/$JOB-base.tar" | awk -v t="$TARGET_EPOCH" '$1 <= t {{id = $2}} END {{print id}}')"
        [ -n "$BASE" ] || fail "no base backup taken before $TARGET"
        WAL="$(snapshots "$STATE/wal" | awk -v t="$TARGET_EPOCH" '$1 >= t {{print $2; exit}}')"
        [ -n "$WAL" ] || fail "no WAL shipped after $TARGET yet"
        NEWEST_WAL="$(snapshots "$STATE/wal" | tail -n 1 | cut -d' ' -f1)"
        [ $(( ($(date +%s) - NEWEST_WAL) / 3600 )) -le "$MAX_AGE_HOURS" ] \
          || fail "the newest shipped WAL is older than $MAX_AGE_HOURS hours"

        scratch_prepare
        restic dump "$BASE" "/$JOB-base.tar" | tar -x -C "$WORK/pgdata" || fail "base backup ${{BASE:0:8}} cannot be read"
        restic restore --quiet "$WAL" --target "$WORK/walrestore" >/dev/null || fail "WAL ${{WAL:0:8}} cannot be restored"
        mv "$WORK/walrestore$STATE/wal" "$WORK/wal"
        rm -rf "$WORK/walrestore"
        # A segment still being written is archived as NAME.partial: recovery reads it as NAME.
        cat >"$WORK/restore-wal" <<'EOF'
        #!/bin/sh
        if [ -f "$1/$2" ]; then exec cp "$1/$2" "$3"; fi
        if [ -f "$1/$2.partial" ]; then exec cp "$1/$2.partial" "$3"; fi
        exit 1
        EOF
        chmod 0755 "$WORK/restore-wal"
        {{
          echo "restore_command = '$WORK/restore-wal $WORK/wal %f %p'"
          echo "recovery_target_time = '$TARGET'"
          echo "recovery_target_action = 'promote'"
          echo "archive_mode = 'off'"
          echo "hba_file = '$WORK/pg_hba.conf'"
          # The source's TLS files and addresses do not exist here; the scratch has no network.
          echo "ssl = 'off'"
          echo "listen_addresses = ''"
        }} >>"$WORK/pgdata/postgresql.auto.conf"
        echo "local all all trust" >"$WORK/pg_hba.conf"
        touch "$WORK/pgdata/recovery.signal"
        chmod -R go-rwx "$WORK/pgdata"
        chmod 0644 "$WORK/pg_hba.conf"
        scratch_prepare
        scratch_start
        """) + _wait_ready("postgres").replace("'SELECT 1'", "'SELECT NOT pg_is_in_recovery()' | grep -qx t") + textwrap.dedent(f"""\
        [ "$(scratch_psql --no-psqlrc -At -d postgres -c 'SELECT NOT pg_is_in_recovery()')" = t ] \\
          || {{ scratch_log >&2; fail "recovery to $TARGET did not finish"; }}
        # From a file: grep -q leaves at its first match, and under pipefail the writer's
        # SIGPIPE (docker logs) would fail a recovery that did stop.
        scratch_log >"$WORK/recovery.log" 2>&1 || true
        grep -q "recovery stopping before" "$WORK/recovery.log" \\
          || {{ cat "$WORK/recovery.log" >&2; fail "recovery did not stop at $TARGET (WAL ends before it)"; }}
        if [ -n "${{PITR_PROBE_SQL:-}}" ]; then
          echo "probe: $(scratch_psql --no-psqlrc -At -d "${{PITR_PROBE_DATABASE:-postgres}}" -c "$PITR_PROBE_SQL")"
        fi
        DATABASES="$(scratch_psql --no-psqlrc -At -d postgres -c "SELECT count(*) FROM pg_database WHERE NOT datistemplate")"
        {_CHECK.strip()}
        echo "$JOB: recovered to $TARGET from base ${{BASE:0:8}} and WAL ${{WAL:0:8}}; $DATABASES databases"
        """)
    return (_common(job, "pitr-test", "point-in-time restore test") + scratch
            + _restore_test_trap(job, labels, "pitr-test-$JOB.prom", "platform_pitr_test") + body)


# --- systemd units ---------------------------------------------------------------------------

def spread_calendar(job: str, hour: int, weekday: str = "") -> str:
    """A daily (or weekly, with ``weekday`` such as ``Sun``) OnCalendar at ``hour`` UTC whose
    minute is derived from the job name (CRC-32), so a host's jobs do not all start at once."""
    minute = zlib.crc32(job.encode()) % 60
    return f"{weekday + ' ' if weekday else ''}*-*-* {hour:02d}:{minute:02d}:00 UTC"


def _service(job: BackupJob, unit: str, description: str, *, long_running: bool = False) -> str:
    kind = ("Type=simple\nRestart=always\nRestartSec=10" if long_running
            else "Type=oneshot\nNice=10\nIOSchedulingClass=idle")
    return textwrap.dedent(f"""\
        [Unit]
        Description={description}
        Wants=network-online.target
        After=network-online.target

        [Service]
        @@KIND@@
        EnvironmentFile={ENV_DIR}/{job.job}.env
        ExecStart=/usr/local/sbin/{unit}
        # The job's own directory under /var/lib (not /tmp): paths in it mean the same to the
        # Docker daemon, and they survive only as long as the script keeps them.
        StateDirectory=platform-backup/{job.job}
        StateDirectoryMode=0700
        ProtectHome=true
        NoNewPrivileges=true
        """).replace("@@KIND@@", kind)


def _timer(description: str, calendar: str, *, persistent: bool = True, delay: str = "10m",
           accuracy: str = "1m") -> str:
    return textwrap.dedent(f"""\
        [Unit]
        Description=Schedule: {description}

        [Timer]
        OnCalendar={calendar}
        Persistent={"true" if persistent else "false"}
        RandomizedDelaySec={delay}
        AccuracySec={accuracy}

        [Install]
        WantedBy=timers.target
        """)


def render_units(job: BackupJob, *, backup_calendar: str, restore_calendar: str) -> dict[str, str]:
    """systemd units. Every job: the backup and the restore test, each a oneshot service and a
    timer. ``pitr`` jobs: the base backup (``backup_calendar``) and the PITR test
    (``restore_calendar``) instead, plus ``platform-wal-receive-JOB.service`` (long-running) and
    ``platform-wal-ship-JOB`` every ``ship_interval_seconds``."""
    roles = [("backup", backup_calendar, f"Off-site backup of {job.job}"),
             ("restore-test", restore_calendar, f"Restore test of the newest {job.job} backup")]
    if job.kind == "pitr":
        roles = [("base-backup", backup_calendar, f"Base backup of {job.job}"),
                 ("pitr-test", restore_calendar, f"Point-in-time restore test of {job.job}")]
    units: dict[str, str] = {}
    for role, calendar, description in roles:
        unit = f"platform-{role}-{job.job}"
        units[f"{unit}.service"] = _service(job, unit, description)
        units[f"{unit}.timer"] = _timer(description, calendar)
    if job.kind == "pitr":
        receive = f"platform-wal-receive-{job.job}"
        units[f"{receive}.service"] = _service(job, receive, f"Continuous WAL receiver of {job.job}",
                                               long_running=True).replace(
            "[Install]", "") + "\n[Install]\nWantedBy=multi-user.target\n"
        ship = f"platform-wal-ship-{job.job}"
        interval = ship_interval_seconds(job.rpo_minutes)
        units[f"{ship}.service"] = _service(job, ship, f"WAL shipping of {job.job}").replace(
            "Nice=10\nIOSchedulingClass=idle\n", "")
        # A monotonic timer, no random delay, one-second accuracy: the interval is half the RPO.
        units[f"{ship}.timer"] = textwrap.dedent(f"""\
            [Unit]
            Description=Schedule: WAL shipping of {job.job} (RPO {job.rpo_minutes} min)

            [Timer]
            OnActiveSec=30s
            OnUnitActiveSec={interval}s
            AccuracySec=1s

            [Install]
            WantedBy=timers.target
            """)
    return units


def scripts(job: BackupJob) -> dict[str, str]:
    """Every script a job installs, by its path under /usr/local/sbin."""
    if job.kind == "pitr":
        return {f"platform-base-backup-{job.job}": render_base_backup_script(job),
                f"platform-pitr-test-{job.job}": render_pitr_test_script(job),
                f"platform-wal-receive-{job.job}": render_wal_receive_script(job),
                f"platform-wal-ship-{job.job}": render_wal_ship_script(job)}
    return {f"platform-backup-{job.job}": render_backup_script(job),
            f"platform-restore-test-{job.job}": render_restore_test_script(job)}
