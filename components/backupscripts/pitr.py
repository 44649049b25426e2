"""Point-in-time recovery of a self-hosted PostgreSQL cluster (``pitr``): WAL received over a
replication slot, shipped to restic at half the RPO, weekly base backups, and the PITR test;
into two alternating repositories (``generations``)."""

from __future__ import annotations

import textwrap

from components.backupscripts.jobs import BackupJob, PG_ENV, SLOT, ship_interval_seconds
from components.backupscripts.shell import (BACKUP_STREAM, INIT_REPOSITORY, backup_failure_trap,
                                            backup_success_metrics, metric_labels, retention_section,
                                            script_prelude, tool_functions)
from components.backupscripts.restore import restore_test_trap, scratch_server, wait_ready
from components.backupscripts.generations import GENERATIONS, LOCK_ACTIVE, SWITCH, lock_inactive


def _wal_tools(job: BackupJob) -> str:
    extra = f' -v "$WAL_DIR:$WAL_DIR"' if job.mode == "docker" else ""
    return textwrap.dedent("""\
        WAL_DIR="$STATE/wal"
        mkdir -p "$WAL_DIR"
        """) + tool_functions(job, ("pg_receivewal", "pg_basebackup"), PG_ENV, extra=extra)


def render_wal_receive_script(job: BackupJob) -> str:
    """The long-running WAL receiver (``platform-wal-receive-JOB.service``): creates the
    physical replication slot if missing, then streams WAL with ``--synchronous`` (each write
    flushed, so the local copy lags the server by under a second) until stopped. The slot makes
    the server keep WAL the receiver has not fetched yet."""
    script = script_prelude(job, "receive", "continuous WAL receiver", retry=False) + _wal_tools(job) + textwrap.dedent(f"""\
        pg_receivewal_ --create-slot --if-not-exists --slot={SLOT} --no-password
        echo "$JOB: receiving WAL into $WAL_DIR (started $(date -u -d "@$STARTED"))"
        pg_receivewal_ -D "$WAL_DIR" --slot={SLOT} --synchronous --no-loop --no-password
        """)
    return script


# ship_wal -- a stable view of the WAL directory into restic. restic reading $WAL_DIR itself
# met pg_receivewal renaming NAME.partial to NAME (a segment completed): it stored a snapshot
# without it and exited 3, under steady writes on most ships, and forgetting that snapshot took
# restic's exclusive lock, which waited up to 300 s while the weekly base backup streamed into
# the same repository. So restic reads a directory of the ship's own, $STATE/wal-ship/pitr-I
# (one per repository, the same path every ship: restic finds its parent snapshot there):
# hard links to the completed segments (no copy; the rename does not touch them) and a copy of
# the current .partial one (16 MiB; pg_receivewal goes on writing the original). The .partial
# is copied first and the completed segments linked after it, so a segment completing between
# the two is linked whole and none is missed. --ignore-ctime: linking a segment changes its
# ctime, not its content, and without it restic would read every segment again each ship.
# Nothing in that directory changes while restic reads it, so no exit is retried but a lock
# another host's run holds (as restic_retry does); any other failure fails at once.
_SHIP_WAL = textwrap.dedent("""\
    stage_wal() {
      local stage="$1" file
      rm -rf "$stage"
      mkdir -p "$stage"
      for file in "$WAL_DIR"/*.partial; do
        [ -e "$file" ] || continue
        cp "$file" "$stage/" 2>/dev/null || [ ! -e "$file" ] || fail "cannot copy $file into $stage"
      done
      # A segment the base backup drops meanwhile is no error (the archive has it).
      if ! find "$WAL_DIR" -maxdepth 1 -type f ! -name '*.partial' -print0 \\
          | LC_ALL=C xargs -0 -r cp -l -t "$stage" 2>"$WORK/stage.err"; then
        ! grep -v 'No such file or directory' "$WORK/stage.err" >&2 || fail "cannot link the WAL segments into $stage"
      fi
      for file in "$stage"/*.partial; do
        [ ! -e "${file%.partial}" ] || rm -f "$file"
      done
    }
    ship_wal() {
      local attempt status stage="$STATE/wal-ship/pitr-$ACTIVE"
      # One ship per repository at a time (systemd runs one anyway): the view is rebuilt by each.
      mkdir -p "$STATE/wal-ship"
      exec 7>"$stage.lock"
      flock -x 7
      for attempt in $(seq 1 30); do
        stage_wal "$stage"
        status=0
        restic backup --quiet --ignore-ctime --host "$JOB" --tag wal "$stage" 2>"$WORK/ship.err" || status=$?
        rm -rf "$stage"
        [ "$status" -ne 0 ] || return 0
        grep -q "already locked" "$WORK/ship.err" || { cat "$WORK/ship.err" >&2; fail "restic backup of $stage failed (exit $status)"; }
        echo "$JOB: repository locked (attempt $attempt), waiting" >&2
        sleep 10
      done
      cat "$WORK/ship.err" >&2
      return 1
    }
    """)


def render_wal_ship_script(job: BackupJob) -> str:
    """Ships a stable view of the WAL directory (completed segments hard-linked, the current
    ``.partial`` one copied; ``$STATE/wal-ship/pitr-I``, removed after) into the active
    repository, tag ``wal``, every ``ship_interval_seconds``; takes no exclusive restic lock.
    Writes the age of the newest archived WAL as a metric."""
    labels = metric_labels(job)
    interval = ship_interval_seconds(job.rpo_minutes)
    # A failed run still reports the RPO, the newest segment and the receiver's state: the
    # WALArchiveStalled alert compares them with the last success (components/prometheus.py).
    kept = (f'"platform_wal_archive_newest_segment_timestamp_seconds{{{labels}}} ${{NEWEST:-0}}"',
            f'"platform_wal_archive_rpo_seconds{{{labels}}} {job.rpo_minutes * 60}"',
            f'"platform_wal_receiver_up{{{labels}}} $RECEIVER_UP"')
    return (script_prelude(job, "ship", "WAL shipping", retry=False) + _wal_tools(job) + GENERATIONS
            + _SHIP_WAL + textwrap.dedent("""\
                NEWEST=""
                RECEIVER_UP=0
                ! systemctl is-active --quiet "platform-wal-receive-$JOB.service" || RECEIVER_UP=1
                """)
            + backup_failure_trap(labels, "wal-$JOB.prom", "platform_wal_archive", extra=kept)
            + textwrap.dedent(f"""\
                # Ship interval: {interval} s, for a declared RPO of {job.rpo_minutes} min.
                NEWEST="$(find "$WAL_DIR" -maxdepth 1 -type f -printf '%T@\\n' | sort -n | tail -n 1)"
                NEWEST="${{NEWEST%.*}}"
                [ -n "$NEWEST" ] || fail "no WAL received yet in $WAL_DIR (is platform-wal-receive-$JOB running?)"
                """) + LOCK_ACTIVE + INIT_REPOSITORY + textwrap.dedent(f"""\
                ship_wal
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


# WAL snapshots by their tag, grouped by it: those a ship stored from $STATE/wal before the
# ships read a view of their own are thinned with the rest, not kept as a group of their own.
_WAL_RETENTION = ('restic_retry forget --host "$JOB" --tag wal --group-by host,tags --keep-within 2d'
                  ' --keep-within-daily "$((RETENTION_DAYS + 7))d"\n')


def render_base_backup_script(job: BackupJob) -> str:
    """The weekly base backup: a new generation first (the inactive repository becomes the
    active one, components/backupscripts/generations.py), then ``pg_basebackup -Ft -D -`` (tar
    on stdout, WAL from the archive) streamed into it; local WAL older than the previous base
    backup (in either repository) is dropped, as the archive has it; then, under the exclusive
    lock of the repository just left (it waits for a ship still in flight to it), retention
    there: base backups and WAL for the PITR window plus one week, and prune."""
    labels = metric_labels(job)
    body = (textwrap.dedent("""\
        SIZE=0
        ADDED=0
        RUN="base-$(date -u +%Y%m%dT%H%M%SZ)"
        """) + SWITCH.replace("@@INIT@@\n", INIT_REPOSITORY) + textwrap.dedent("""\
        backup_stream "$JOB-base.tar" pg_basebackup_ -D - -Ft -X none --checkpoint=fast --no-password
        """) + lock_inactive(7, "PRUNED") + textwrap.dedent("""\
        # WAL shipped every run holds segments back to the previous base backup, so one WAL
        # snapshot after a target time restores it from the newest base backup before it.
        BASES="$(repository_snapshots --path "/$JOB-base.tar")"
        PREVIOUS="$(printf '%s\\n' "$BASES" | tail -n 2 | head -n 1 | cut -d' ' -f1)"
        if [ "$(printf '%s\\n' "$BASES" | grep -c .)" -ge 2 ]; then
          find "$WAL_DIR" -maxdepth 1 -type f ! -name '*.partial' ! -newermt "@$PREVIOUS" -delete
        fi
        # No ship to it is in flight (lock 7): a view a killed ship left holds no WAL longer.
        rm -rf "$STATE/wal-ship/pitr-$PRUNED"
        use_repository "$PRUNED"
        if repository_exists; then
        """) + textwrap.indent(f"RETENTION_DAYS={job.retention_days}\n" + retention_section(
            f"/{job.job}-base.tar", within='"$((RETENTION_DAYS + 7))d"', prune=False) + _WAL_RETENTION + "restic_retry prune\n", "  ")
        + textwrap.dedent("""\
        fi
        exec 7>&-
        maintenance_metrics "pitr-prune-$JOB.prom" platform_pitr_prune_last_success_timestamp_seconds "$PRUNED"
        """))
    return (script_prelude(job, "base-backup", "weekly base backup") + _wal_tools(job) + GENERATIONS
            + BACKUP_STREAM + backup_failure_trap(labels) + body + backup_success_metrics(labels)
            + 'echo "$JOB: stored base backup $RUN in pitr-$NEW ($SIZE bytes read, $ADDED bytes added); '
              'pruned pitr-$PRUNED"\n')


def render_pitr_test_script(job: BackupJob) -> str:
    """Point-in-time restore into a scratch instance: the newest base backup taken before
    ``PITR_TARGET_TIME`` (default: one hour ago), the newest WAL snapshot after it that still
    holds every segment from that base backup on (taken before the second base backup after
    the target, whose run drops older local WAL), recovery with
    ``recovery_target_time`` and ``restore_command`` reading the restored segments (the newest,
    still ``.partial``, one included). Passes when recovery stops at the target and the instance
    is promoted; prints ``PITR_PROBE_SQL``'s result (``probe: ...``) and the table count."""
    labels = metric_labels(job)
    scratch = scratch_server(job, "postgres", initdb=False)
    if job.mode == "docker":
        # The recovery replays WAL into a cluster on disk (a base backup can exceed the memory
        # bound), under the same --memory and --cpus.
        tmpfs = f"--tmpfs /var/lib/postgresql/data:size={job.scratch_memory_mb}m -e POSTGRES_HOST_AUTH_METHOD=trust"
        if tmpfs not in scratch:
            raise RuntimeError("scratch_server's PostgreSQL data option changed: update the PITR test's")
        scratch = scratch.replace(tmpfs, '-v "$WORK:$WORK" -e PGDATA="$WORK/pgdata"')
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
        # Both repositories are read under shared locks: no check or prune of either starts
        # meanwhile, nor a switch; ships take the active one's shared lock alongside.
        exec 8>"$STATE/repo-0.lock" 9>"$STATE/repo-1.lock"
        flock -s 8
        flock -s 9
        snapshots() {{ repository_snapshots "$@"; }}
        BASE="$(snapshots --path "/$JOB-base.tar" | awk -v t="$TARGET_EPOCH" '$1 <= t {{id = $2 " " $3}} END {{print id}}')"
        [ -n "$BASE" ] || fail "no base backup taken before $TARGET"
        read -r BASE BASE_REPOSITORY <<<"$BASE"
        # Recovery stops only at the first commit after the target, so the WAL snapshot is the
        # newest one that still holds every segment from BASE on: the base backup after the
        # next one drops local WAL older than BASE (render_base_backup_script), so a WAL
        # snapshot taken before that second base backup after the target is whole. Either may
        # be in either repository.
        LIMIT="$(snapshots --path "/$JOB-base.tar" | awk -v t="$TARGET_EPOCH" '$1 > t && ++n == 2 {{print $1; exit}}')"
        WAL="$(snapshots --tag wal | awk -v t="$TARGET_EPOCH" -v limit="$LIMIT" \
          '$1 >= t && (limit == "" || $1 < limit) {{id = $2 " " $3}} END {{print id}}')"
        [ -n "$WAL" ] || fail "no WAL shipped after $TARGET yet"
        read -r WAL WAL_REPOSITORY <<<"$WAL"
        NEWEST_WAL="$(snapshots --tag wal | tail -n 1 | cut -d' ' -f1)"
        [ $(( ($(date +%s) - NEWEST_WAL) / 3600 )) -le "$MAX_AGE_HOURS" ] \
          || fail "the newest shipped WAL is older than $MAX_AGE_HOURS hours"

        scratch_prepare
        use_repository "$BASE_REPOSITORY"
        restic dump "$BASE" "/$JOB-base.tar" | tar -x -C "$WORK/pgdata" || fail "base backup ${{BASE:0:8}} cannot be read"
        use_repository "$WAL_REPOSITORY"
        restic restore --quiet "$WAL" --target "$WORK/walrestore" >/dev/null || fail "WAL ${{WAL:0:8}} cannot be restored"
        # The segments, wherever the snapshot held them ($STATE/wal-ship/pitr-I; $STATE/wal before).
        mkdir -p "$WORK/wal"
        find "$WORK/walrestore" -type f -exec mv -t "$WORK/wal" {{}} +
        rm -rf "$WORK/walrestore"
        exec 8>&- 9>&-
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
        """) + wait_ready("postgres").replace("'SELECT 1'", "'SELECT NOT pg_is_in_recovery()' | grep -qx t") + textwrap.dedent(f"""\
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
        echo "$JOB: recovered to $TARGET from base ${{BASE:0:8}} (pitr-$BASE_REPOSITORY) and WAL ${{WAL:0:8}} (pitr-$WAL_REPOSITORY); $DATABASES databases"
        # The inactive repository's check, under its exclusive lock (it waits for a ship still in
        # flight to it; no ship ever waits for it). The slice rotates with that repository's
        # own checks (one every other generation), so every pack is read once in four.
        """) + lock_inactive(9, "CHECKED") + textwrap.dedent("""\
        if repository_exists; then
          restic_retry check --read-data-subset="$(( $(generation) / 2 % 4 + 1 ))/4" \\
            || fail "restic check found damage in repository pitr-$CHECKED"
          echo "$JOB: checked pitr-$CHECKED"
        else
          echo "$JOB: pitr-$CHECKED holds nothing yet; nothing to check"
        fi
        exec 9>&-
        maintenance_metrics "pitr-check-$JOB.prom" platform_pitr_check_last_success_timestamp_seconds "$CHECKED"
        """)
    return (script_prelude(job, "pitr-test", "point-in-time restore test") + GENERATIONS + scratch
            + restore_test_trap(job, labels, "pitr-test-$JOB.prom", "platform_pitr_test") + body)
