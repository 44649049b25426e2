"""The shell every backup script shares: the prelude (strict mode, work directory, metrics
writer), the tools run on the host or from the job's image, restic with lock retries, the
backup stream, its failure trap and success metrics, retention, and each kind's dump command."""

from __future__ import annotations

import textwrap

from components.backupscripts.jobs import (ENV_DIR, MONGO_COUNTS_JS, MONGO_ENV, PG_ENV, REDIS_ENV, REDIS_KEYSPACE,
                                           ROW_COUNTS_SQL, STATE_ROOT, TEXTFILE_DIR, BackupJob)


def metric_labels(job: BackupJob) -> str:
    return f'job=\\"{job.job}\\"'


def tool_functions(job: BackupJob, tools: tuple[str, ...], env: tuple[str, ...],
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


def script_prelude(job: BackupJob, role: str, what: str, *, retry: bool = True) -> str:
    """Shebang, strict mode, repository checks, the job's own work directory and helpers."""
    return _common_text(job, role, what) + (_RESTIC_RETRY if retry else "")


def _common_text(job: BackupJob, role: str, what: str) -> str:
    # The header names the package as it was one module: hosts compare scripts by their text,
    # so a new path here would re-run every backup unit's install.
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


BACKUP_STREAM = textwrap.dedent("""\
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

INIT_REPOSITORY = textwrap.dedent("""\
    # The repository is created by the first run (format 2: compressed).
    restic cat config >/dev/null 2>&1 || restic init --repository-version 2 >/dev/null
    """)


def backup_failure_trap(labels: str, metric_file: str = "backup-$JOB.prom",
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


def backup_success_metrics(labels: str) -> str:
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


def retention_section(*paths: str, within: str = '"${RETENTION_DAYS}d"', extra: str = "",
               prune: bool = True) -> str:
    """``restic forget --keep-within`` per path (restic's ``--path`` filters match snapshots
    holding every path given, so one call per path), then prune. restic measures the window
    from the newest snapshot of each group, so a failing job never erodes what exists. The
    script sets RETENTION_DAYS."""
    lines = "".join(f"restic_retry forget --host \"$JOB\" --path {p} --group-by host,paths "
                    f"--keep-within {within}{extra}\n" for p in paths)
    return lines + ("restic_retry prune\n" if prune else "")


def dump_commands(job: BackupJob) -> str:
    """Tool functions plus ``dump`` and ``counts``, each writing to stdout."""
    if job.kind == "redis":
        return tool_functions(job, ("redis-cli",), REDIS_ENV, extra="") + textwrap.dedent("""\
            # A rediss:// source is verified against BACKUP_CA_CERT (the internal CA).
            REDIS_ARGS=(-h "$REDIS_HOST" -p "$REDIS_PORT" --user "$REDIS_USER" --no-auth-warning)
            if [ "$REDIS_TLS" = 1 ]; then
              REDIS_ARGS+=(--tls --cacert "${BACKUP_CA_CERT:?a rediss:// source needs BACKUP_CA_CERT}")
            fi
            dump() { redis-cli_ "${REDIS_ARGS[@]}" --rdb - 2>/dev/null; }
            """) + f"counts() {{ redis-cli_ \"${{REDIS_ARGS[@]}}\" INFO keyspace | {REDIS_KEYSPACE}; }}\n"
    if job.kind == "mongodb":
        return tool_functions(job, ("mongodump", "mongorestore", "mongosh"), MONGO_ENV) + textwrap.dedent(f"""\
            # mongodump reads the URI (and its password) from a config file on stdin; mongosh
            # connects from a script that reads it from the environment.
            dump() {{ printf '%s\\n' "$MONGO_TOOL_CONFIG" | mongodump_ --quiet --config=/dev/stdin --archive; }}
            counts() {{ mongosh_ --quiet --nodb --eval "db = connect(process.env.MONGO_URI); {MONGO_COUNTS_JS}"; }}
            """)
    return tool_functions(job, ("pg_dump", "psql"), PG_ENV) + textwrap.dedent(f"""\
        # Uncompressed: restic compresses, and its chunks only deduplicate across days when an
        # unchanged table region gives unchanged bytes (measured in benchmarks/backup_restore.py).
        dump() {{ pg_dump_ --format=custom --compress=0 --no-owner --no-privileges; }}
        counts() {{ psql_ --no-psqlrc --set=ON_ERROR_STOP=1 -At -c "{ROW_COUNTS_SQL}"; }}
        """)
