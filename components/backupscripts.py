"""Backup, restore-test and systemd unit files for off-site backups, as pure renderers.

A backup job dumps its source, records per-table row counts and SHA-256 checksums, encrypts
everything with rclone crypt (the key is a Pulumi secret) and uploads it to R2; it then prunes
backups older than the retention, only after its own upload succeeded. A weekly restore test fetches the newest
backup, verifies its checksums, restores it into a scratch database and compares row counts.
Both write node-exporter textfile metrics, so monitoring alerts on a stale backup or a failed
restore test.

Tools run on the host (``mode="host"``, what the tests drive) or from pinned images through
Docker (``mode="docker"``, what droplets use so the client matches the server's major version).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Literal

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
ENV_DIR = "/etc/platform-backup"
Mode = Literal["host", "docker"]

# Row counts of every user table, one "schema.table<TAB>count" line each, sorted.
ROW_COUNTS_SQL = (
    "SELECT n.nspname || '.' || c.relname || E'\\t' || "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)


@dataclass(frozen=True)
class BackupJob:
    job: str
    """Job name; also the folder in the bucket and the metric label."""
    kind: Literal["postgres", "mongodb", "redis", "minio"]
    retention_days: int
    max_age_hours: int = 26
    """The restore test fails when the newest backup is older than this."""
    mode: Mode = "docker"
    tool_image: str = "postgres:16-alpine"
    """Image whose pg_dump/pg_restore/psql match the server's major version (docker mode)."""
    mounts: tuple[str, ...] = ()
    """Host directories the tools need (the CA file of a verify-full URI), docker mode."""

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if self.kind == "mongodb" and self.mode != "docker":
            raise ValueError("mongodb backups run the mongo image's tools (docker mode)")
        if self.kind == "minio" and self.mode != "host":
            raise ValueError("minio mirrors run rclone on the host (host mode)")

    @property
    def extension(self) -> str:
        return {"postgres": "dump", "mongodb": "archive", "redis": "rdb", "minio": "manifest"}[self.kind]


MONGO_COUNTS_JS = ("db.getCollectionNames().sort().forEach(function (c) { "
                   "print(db.getName() + '.' + c + '\\t' + db.getCollection(c).countDocuments({})); })")


UNITS = {"postgres": "tables", "mongodb": "collections", "redis": "databases", "minio": "objects"}
TOOLS = {"postgres": ("pg_dump", "pg_restore", "psql"),
         "mongodb": ("mongodump", "mongorestore", "mongosh"),
         "redis": ("redis-cli",),
         "minio": ()}
# Keys per logical database, one "dbN<TAB>keys=..." line each (INFO keyspace, expiry dropped).
REDIS_KEYSPACE = "grep '^db' | cut -d, -f1 | tr ':' '\\t' | tr -d '\\r'"


def _tool_functions(job: BackupJob) -> str:
    """``<tool>_`` shell functions: the host's tool, or the same tool from the pinned image."""
    prefix = ""
    if job.mode == "docker":
        mounts = "".join(f" -v {m}:{m}:ro" for m in job.mounts)
        prefix = f'docker run --rm -i --network host -v "$WORK:$WORK"{mounts} {job.tool_image} '
    return "".join(f'{tool}_() {{ {prefix}{tool} "$@"; }}\n' for tool in TOOLS[job.kind])


def _common(job: BackupJob, what: str) -> str:
    return textwrap.dedent(f"""\
        #!/usr/bin/env bash
        # Rendered by components/backupscripts.py: {what} of {job.job} ({job.kind}).
        set -euo pipefail
        umask 077
        JOB="{job.job}"
        TEXTFILE_DIR="${{TEXTFILE_DIR:-{TEXTFILE_DIR}}}"
        : "${{BACKUP_PASSPHRASE:?set in {ENV_DIR}/{job.job}.env}}"
        : "${{BACKUP_BUCKET:?set in {ENV_DIR}/{job.job}.env}}"
        # rclone crypt over the R2 remote (RCLONE_CONFIG_R2_* come from the environment file):
        # names and contents are encrypted before they leave the host.
        export RCLONE_CONFIG_VAULT_TYPE=crypt
        export RCLONE_CONFIG_VAULT_REMOTE="r2:${{BACKUP_BUCKET}}/${{JOB}}"
        RCLONE_CONFIG_VAULT_PASSWORD="$(rclone obscure "$BACKUP_PASSPHRASE")"
        export RCLONE_CONFIG_VAULT_PASSWORD
        STARTED="$(date +%s)"
        WORK="$(mktemp -d)"

        # write_metrics NAME VALUE... -- atomically replace this job's metric file.
        write_metrics() {{
          local file="$1" tmp
          shift
          mkdir -p "$TEXTFILE_DIR"
          tmp="$(mktemp "$TEXTFILE_DIR/.$file.XXXXXX")"
          printf '%s\\n' "$@" >"$tmp"
          chmod 0644 "$tmp"
          mv -f "$tmp" "$TEXTFILE_DIR/$file"
        }}

        fail() {{
          echo "$JOB: $*" >&2
          exit 1
        }}
        """) + _tool_functions(job)


def _dump_and_count(job: BackupJob) -> str:
    if job.kind == "redis":
        # A rediss:// source is verified against BACKUP_CA_CERT (the internal CA).
        return ('TLS_ARGS=()\n'
                '[ -z "${BACKUP_CA_CERT:-}" ] || TLS_ARGS=(--tls --cacert "$BACKUP_CA_CERT")\n'
                'redis-cli_ -u "$BACKUP_SOURCE_URI" "${TLS_ARGS[@]}" --no-auth-warning --rdb "$WORK/$NAME.rdb" >/dev/null\n'
                'redis-cli_ -u "$BACKUP_SOURCE_URI" "${TLS_ARGS[@]}" --no-auth-warning INFO keyspace '
                f'| {REDIS_KEYSPACE} >"$WORK/$NAME.counts"')
    if job.kind == "mongodb":
        return ('mongodump_ --uri="$BACKUP_SOURCE_URI" --archive="$WORK/$NAME.archive" --gzip\n'
                f'mongosh_ --quiet "$BACKUP_SOURCE_URI" --eval "{MONGO_COUNTS_JS}" >"$WORK/$NAME.counts"')
    return ('pg_dump_ --format=custom --no-owner --no-privileges --dbname="$BACKUP_SOURCE_URI" \\\n'
            '  --file="$WORK/$NAME.dump"\n'
            'psql_ --no-psqlrc --set=ON_ERROR_STOP=1 -At --dbname="$BACKUP_SOURCE_URI" \\\n'
            f'  -c "{ROW_COUNTS_SQL}" >"$WORK/$NAME.counts"')


def _backup_failure_trap(labels: str) -> str:
    """On failure: the success metric drops to 0 and the last success time is kept."""
    return textwrap.dedent(f"""\
        on_exit() {{
          local status=$?
          rm -rf "$WORK"
          if [ "$status" -ne 0 ]; then
            write_metrics "backup-$JOB.prom" \\
              "platform_backup_success{{{labels}}} 0" \\
              "platform_backup_last_attempt_timestamp_seconds{{{labels}}} $(date +%s)" \\
              "platform_backup_last_success_timestamp_seconds{{{labels}}} ${{LAST_SUCCESS:-0}}"
          fi
          exit "$status"
        }}
        LAST_SUCCESS="$(sed -n 's/^platform_backup_last_success_timestamp_seconds{{[^}}]*}} //p' \\
          "$TEXTFILE_DIR/backup-$JOB.prom" 2>/dev/null || true)"
        trap on_exit EXIT
        """)


def _backup_success_metrics(labels: str) -> str:
    return textwrap.dedent(f"""\
        NOW="$(date +%s)"
        LAST_SUCCESS="$NOW"
        write_metrics "backup-$JOB.prom" \\
          "platform_backup_success{{{labels}}} 1" \\
          "platform_backup_last_attempt_timestamp_seconds{{{labels}}} $NOW" \\
          "platform_backup_last_success_timestamp_seconds{{{labels}}} $NOW" \\
          "platform_backup_last_size_bytes{{{labels}}} $SIZE" \\
          "platform_backup_last_duration_seconds{{{labels}}} $((NOW - STARTED))"
        """)


def _prune_by_stamp(folder: str) -> str:
    """Deletes the files in ``folder`` (a ``vault:`` path ending in ``:`` or ``/``) whose name
    stamp is older than CUTOFF."""
    listing = folder.rstrip("/")
    return textwrap.dedent(f"""\
        rclone lsf --files-only {listing} | sort >"$WORK.list"
        while IFS= read -r file; do
          stamp="${{file#"$JOB"-}}"
          stamp="${{stamp%%.*}}"
          if [[ "$stamp" < "$CUTOFF" ]]; then
            rclone deletefile "{folder}$file"
            echo "pruned $file"
          fi
        done <"$WORK.list"
        """)


def _with_metrics(text: str, labels: str) -> str:
    """Fills in the parts every backup script shares: failure trap, pruning, success metrics."""
    text = re.sub(r"@@PRUNE (\S+)@@\n", lambda m: _prune_by_stamp(m.group(1)), text)
    return (text.replace("@@FAILURE_TRAP@@\n", _backup_failure_trap(labels))
                .replace("@@SUCCESS_METRICS@@\n", _backup_success_metrics(labels)))


def render_backup_script(job: BackupJob) -> str:
    labels = f'job=\\"{job.job}\\"'
    if job.kind == "minio":
        return _common(job, "off-site mirror") + _S3_SOURCE + _with_metrics(_render_mirror_backup(job), labels)
    body = textwrap.dedent(f"""\
        : "${{BACKUP_SOURCE_URI:?set in {ENV_DIR}/{job.job}.env}}"
        RETENTION_DAYS={job.retention_days}

        @@FAILURE_TRAP@@

        STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
        NAME="$JOB-$STAMP"
        @@DUMP@@
        (cd "$WORK" && sha256sum "$NAME.{job.extension}" "$NAME.counts" >"$NAME.sha256")
        SIZE="$(stat -c %s "$WORK/$NAME.{job.extension}")"
        rclone copy --s3-no-check-bucket "$WORK" vault:

        # Retention by the timestamp in each name. Pruning runs only after this run's upload
        # succeeded, so a failing job never erodes the backups that exist.
        CUTOFF="$(date -u -d "-$RETENTION_DAYS days" +%Y%m%dT%H%M%SZ)"
        @@PRUNE vault:@@
        rm -f "$WORK.list"

        @@SUCCESS_METRICS@@
        echo "$JOB: uploaded $NAME ($SIZE bytes)"
        """).replace("@@DUMP@@", _dump_and_count(job))
    return _common(job, "off-site backup") + _with_metrics(body, labels)


def _scratch_server(job: BackupJob) -> str:
    """A throwaway server on loopback with its data on tmpfs: the test never touches the source."""
    if job.kind == "redis":
        # Started after the download, on the downloaded snapshot (see _restore_and_count).
        name = 'SCRATCH_CONTAINER="restore-test-$JOB-$$"\n' if job.mode == "docker" else ""
        return (name + 'SCRATCH_PORT="${SCRATCH_PORT:-56379}"\n'
                'RESTORE_SERVER_URI="redis://127.0.0.1:$SCRATCH_PORT"\n')
    if job.kind == "mongodb":
        return textwrap.dedent(f"""\
            SCRATCH_CONTAINER="restore-test-$JOB-$$"
            docker run -d --rm --name "$SCRATCH_CONTAINER" -p 127.0.0.1:57017:27017 \\
              --tmpfs /data/db {job.tool_image} >/dev/null
            RESTORE_SERVER_URI="mongodb://127.0.0.1:57017"
            for _ in $(seq 1 60); do
              mongosh_ --quiet "$RESTORE_SERVER_URI" --eval 'db.runCommand({{ping: 1}})' >/dev/null 2>&1 && break
              sleep 1
            done
            """)
    if job.mode == "host":
        return ""
    return textwrap.dedent(f"""\
        SCRATCH_CONTAINER="restore-test-$JOB-$$"
        docker run -d --rm --name "$SCRATCH_CONTAINER" -e POSTGRES_HOST_AUTH_METHOD=trust \\
          -p 127.0.0.1:55432:5432 --tmpfs /var/lib/postgresql/data {job.tool_image} >/dev/null
        RESTORE_SERVER_URI="postgresql://postgres@127.0.0.1:55432"
        for _ in $(seq 1 60); do
          psql_ --no-psqlrc -At --dbname="$RESTORE_SERVER_URI/postgres" -c 'SELECT 1' >/dev/null 2>&1 && break
          sleep 1
        done
        """)


def _restore_and_count(job: BackupJob) -> str:
    if job.kind == "redis":
        if job.mode == "docker":
            start = (f'docker run -d --rm --name "$SCRATCH_CONTAINER" -v "$WORK:/data" '
                     f'-p "127.0.0.1:$SCRATCH_PORT:6379" \\\n  {job.tool_image} redis-server --dir /data '
                     f'--dbfilename "$NAME.rdb" --appendonly no >/dev/null')
        else:
            start = ('SCRATCH_REDIS=1\nredis-server --bind 127.0.0.1 --port "$SCRATCH_PORT" --dir "$WORK" '
                     '--dbfilename "$NAME.rdb" --appendonly no --save "" \\\n  --daemonize yes '
                     '--logfile "$WORK/scratch.log" || fail "the scratch Redis did not start"')
        return "chmod 0755 \"$WORK\" && chmod 0644 \"$WORK/$NAME.rdb\"\n" + start + "\n" + textwrap.dedent(f"""\
            for _ in $(seq 1 30); do
              redis-cli_ -u "$RESTORE_SERVER_URI" PING 2>/dev/null | grep -q PONG && break
              sleep 1
            done
            redis-cli_ -u "$RESTORE_SERVER_URI" INFO keyspace | {REDIS_KEYSPACE} >"$WORK/restored.counts" \\
              || fail "the snapshot $NAME did not load"
            """)
    if job.kind == "mongodb":
        return textwrap.dedent(f"""\
            DB_NAME="${{BACKUP_SOURCE_URI##*/}}"
            DB_NAME="${{DB_NAME%%\\?*}}"
            mongorestore_ --uri="$RESTORE_SERVER_URI" --archive="$WORK/$NAME.archive" --gzip --drop \\
              || fail "mongorestore of $NAME failed"
            mongosh_ --quiet "$RESTORE_SERVER_URI/$DB_NAME" --eval "{MONGO_COUNTS_JS}" >"$WORK/restored.counts"
            """)
    return textwrap.dedent(f"""\
        psql_ --no-psqlrc -q --set=ON_ERROR_STOP=1 --dbname="$RESTORE_SERVER_URI/postgres" \\
          -c "CREATE DATABASE $SCRATCH_DB"
        DB_CREATED=1
        pg_restore_ --no-owner --no-privileges --exit-on-error \\
          --dbname="$RESTORE_SERVER_URI/$SCRATCH_DB" "$WORK/$NAME.dump" || fail "pg_restore of $NAME failed"
        psql_ --no-psqlrc --set=ON_ERROR_STOP=1 -At --dbname="$RESTORE_SERVER_URI/$SCRATCH_DB" \\
          -c "{ROW_COUNTS_SQL}" >"$WORK/restored.counts"
        """)


def _drop_scratch_database(job: BackupJob) -> str:
    if job.kind == "redis" and job.mode == "host":
        return textwrap.dedent("""\
            if [ -n "${SCRATCH_REDIS:-}" ]; then
              redis-cli_ -u "$RESTORE_SERVER_URI" shutdown nosave >/dev/null 2>&1 || true
            fi
            """)
    if job.kind != "postgres":
        return ""  # a scratch container or folder goes, and its data with it
    return textwrap.dedent("""\
        if [ "$DB_CREATED" -eq 1 ]; then
          psql_ --no-psqlrc -q --dbname="$RESTORE_SERVER_URI/postgres" \\
            -c "DROP DATABASE IF EXISTS $SCRATCH_DB" >/dev/null 2>&1 || true
        fi
        """)


def _restore_test_header(job: BackupJob, labels: str) -> str:
    """The restore test's exit trap: scratch database and container removed, the result written
    as metrics whatever happened."""
    header = textwrap.dedent(f"""\
        MAX_AGE_HOURS={job.max_age_hours}
        SCRATCH_DB="restore_test_$(date -u +%Y%m%d%H%M%S)_$$"
        DB_CREATED=0

        on_exit() {{
          local status=$?
        @@DROP@@
          if [ -n "${{SCRATCH_CONTAINER:-}}" ]; then
            docker rm -f "$SCRATCH_CONTAINER" >/dev/null 2>&1 || true
          fi
          rm -rf "$WORK"
          local now success=1
          now="$(date +%s)"
          [ "$status" -eq 0 ] || success=0
          write_metrics "restore-test-$JOB.prom" \\
            "platform_restore_test_success{{{labels}}} $success" \\
            "platform_restore_test_last_run_timestamp_seconds{{{labels}}} $now" \\
            "platform_restore_test_duration_seconds{{{labels}}} $((now - STARTED))"
          exit "$status"
        }}
        trap on_exit EXIT
        """).replace("@@DROP@@\n", textwrap.indent(_drop_scratch_database(job), "  "))
    if job.kind != "postgres":
        header = header.replace('SCRATCH_DB="restore_test_$(date -u +%Y%m%d%H%M%S)_$$"\nDB_CREATED=0\n', "")
    return header


def _newest(kind: str, list_command: str, ext: str) -> str:
    """Sets NAME to the newest backup and fails when there is none or it is too old."""
    return textwrap.dedent(f"""\
        NAME="$({list_command} | sort | tail -n 1 | sed 's/\\.{ext}$//')"
        [ -n "$NAME" ] || fail "no {kind} found in R2"
        STAMP="${{NAME#"$JOB"-}}"
        TAKEN="$(date -u -d "${{STAMP:0:4}}-${{STAMP:4:2}}-${{STAMP:6:2}} ${{STAMP:9:2}}:${{STAMP:11:2}}:${{STAMP:13:2}}" +%s)" \\
          || fail "cannot read the time of {kind} $NAME"
        AGE_HOURS=$(( ($(date +%s) - TAKEN) / 3600 ))
        [ "$AGE_HOURS" -le "$MAX_AGE_HOURS" ] || fail "newest {kind} $NAME is $AGE_HOURS hours old (limit $MAX_AGE_HOURS)"
        """)


def render_restore_test_script(job: BackupJob) -> str:
    labels = f'job=\\"{job.job}\\"'
    if job.kind == "minio":
        return _common(job, "weekly restore test") + _render_mirror_restore_test(job, labels)
    ext = job.extension
    header = _restore_test_header(job, labels)
    body = textwrap.dedent(f"""\
        : "${{RESTORE_SERVER_URI:?the URI of a scratch server, without a database}}"

        @@NEWEST@@

        for suffix in {ext} counts sha256; do
          rclone copyto "vault:$NAME.$suffix" "$WORK/$NAME.$suffix" || fail "$NAME.$suffix is missing"
        done
        (cd "$WORK" && sha256sum --quiet --strict -c "$NAME.sha256") || fail "checksum mismatch in $NAME"

        @@RESTORE@@
        diff -u "$WORK/$NAME.counts" "$WORK/restored.counts" || fail "counts differ after restoring $NAME"
        echo "$JOB: restored $NAME; $(wc -l <"$WORK/restored.counts") {UNITS[job.kind]} match"
        """).replace("@@RESTORE@@\n", _restore_and_count(job)).replace(
            "@@NEWEST@@\n", _newest("backup", f"rclone lsf --files-only --include '*.{ext}' vault:", ext))
    return _common(job, "weekly restore test") + header + _scratch_server(job) + body


# An object store's source is https://ACCESS_KEY:SECRET_KEY@host:port/bucket (keys without
# ':' or '@'); the runner's CA file, if any, comes in as RCLONE_CA_CERT.
_S3_SOURCE = textwrap.dedent("""\
    : "${BACKUP_SOURCE_URI:?set in the job environment file}"
    SOURCE_REST="${BACKUP_SOURCE_URI#*://}"
    SOURCE_KEYS="${SOURCE_REST%%@*}"
    SOURCE_HOSTPATH="${SOURCE_REST#*@}"
    export RCLONE_CONFIG_SRC_TYPE=s3 RCLONE_CONFIG_SRC_PROVIDER=Minio
    export RCLONE_CONFIG_SRC_ACCESS_KEY_ID="${SOURCE_KEYS%%:*}"
    export RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY="${SOURCE_KEYS#*:}"
    export RCLONE_CONFIG_SRC_ENDPOINT="${BACKUP_SOURCE_URI%%://*}://${SOURCE_HOSTPATH%%/*}"
    SOURCE_BUCKET="${SOURCE_HOSTPATH#*/}"
    """)


def _render_mirror_backup(job: BackupJob) -> str:
    """An incremental mirror: ``current/`` follows the bucket; what a run overwrites or deletes
    moves to ``changed/<stamp>/`` and is pruned after the retention. Each run uploads a
    manifest (path and size of every object) that the restore test checks against."""
    return textwrap.dedent(f"""\
        RETENTION_DAYS={job.retention_days}

        @@FAILURE_TRAP@@

        STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
        NAME="$JOB-$STAMP"
        rclone lsf -R --files-only --format ps --separator "$(printf '\\t')" "src:$SOURCE_BUCKET" \\
          | LC_ALL=C sort >"$WORK/$NAME.manifest"
        rclone sync --s3-no-check-bucket "src:$SOURCE_BUCKET" vault:current --backup-dir "vault:changed/$STAMP"
        (cd "$WORK" && sha256sum "$NAME.manifest" >"$NAME.sha256")
        rclone copy --s3-no-check-bucket "$WORK" vault:manifests
        SIZE="$(awk -F '\\t' '{{s += $2}} END {{print s + 0}}' "$WORK/$NAME.manifest")"

        # Retention: manifests and displaced objects older than RETENTION_DAYS, only after this
        # run's mirror succeeded.
        CUTOFF="$(date -u -d "-$RETENTION_DAYS days" +%Y%m%dT%H%M%SZ)"
        @@PRUNE vault:manifests/@@
        rclone lsf --dirs-only vault:changed 2>/dev/null | sort >"$WORK.list" || true
        while IFS= read -r dir; do
          if [[ "${{dir%/}}" < "$CUTOFF" ]]; then
            rclone purge "vault:changed/${{dir%/}}"
            echo "pruned changed/$dir"
          fi
        done <"$WORK.list"
        rm -f "$WORK.list"

        @@SUCCESS_METRICS@@
        echo "$JOB: mirrored $(wc -l <"$WORK/$NAME.manifest") objects ($SIZE bytes)"
        """)


def _render_mirror_restore_test(job: BackupJob, labels: str) -> str:
    """Restores ``current/`` into a scratch folder; every object of the newest manifest must
    come back with its size (rclone crypt authenticates each file, so corruption fails the copy)."""
    newest = _newest("mirror manifest", "rclone lsf --files-only --include '*.manifest' vault:manifests", "manifest")
    return _restore_test_header(job, labels) + newest + textwrap.dedent(f"""\
        for suffix in manifest sha256; do
          rclone copyto "vault:manifests/$NAME.$suffix" "$WORK/$NAME.$suffix" || fail "$NAME.$suffix is missing"
        done
        (cd "$WORK" && sha256sum --quiet --strict -c "$NAME.sha256") || fail "checksum mismatch in $NAME"

        mkdir -p "$WORK/restore"
        rclone copy vault:current "$WORK/restore" || fail "restoring the mirror failed"
        (cd "$WORK/restore" && find . -type f -printf '%P\\t%s\\n' | LC_ALL=C sort) >"$WORK/restored.manifest"
        # Objects written after the manifest may be there too; every manifest entry must be.
        MISSING="$(LC_ALL=C comm -23 "$WORK/$NAME.manifest" "$WORK/restored.manifest")"
        [ -z "$MISSING" ] || fail "objects missing or of another size after restoring $NAME: $MISSING"
        echo "$JOB: restored $(wc -l <"$WORK/restored.manifest") {UNITS[job.kind]}; all $(wc -l <"$WORK/$NAME.manifest") of $NAME match"
        """)


def render_units(job: BackupJob, *, backup_calendar: str, restore_calendar: str) -> dict[str, str]:
    """systemd units: the backup and the restore test, each a oneshot service and its timer."""
    units: dict[str, str] = {}
    for role, calendar, description in (
        ("backup", backup_calendar, f"Off-site backup of {job.job}"),
        ("restore-test", restore_calendar, f"Restore test of the newest {job.job} backup"),
    ):
        unit = f"platform-{role}-{job.job}"
        units[f"{unit}.service"] = textwrap.dedent(f"""\
            [Unit]
            Description={description}
            Wants=network-online.target
            After=network-online.target

            [Service]
            Type=oneshot
            EnvironmentFile={ENV_DIR}/{job.job}.env
            ExecStart=/usr/local/sbin/{unit}
            Nice=10
            IOSchedulingClass=idle
            PrivateTmp=true
            ProtectHome=true
            NoNewPrivileges=true
            """)
        units[f"{unit}.timer"] = textwrap.dedent(f"""\
            [Unit]
            Description=Schedule: {description}

            [Timer]
            OnCalendar={calendar}
            Persistent=true
            RandomizedDelaySec=10m

            [Install]
            WantedBy=timers.target
            """)
    return units
