"""The dump kinds' scripts (``postgres``, ``mongodb``, ``redis``) and the bucket mirror
(``minio``): the daily backup and the weekly restore test."""

from __future__ import annotations

import textwrap

from components.backupscripts.jobs import (COUNTS_END, MONGO_COUNTS_JS, REDIS_KEYSPACE, ROW_COUNTS_SQL, UNITS,
                                           BackupJob)
from components.backupscripts.shell import (BACKUP_STREAM, INIT_REPOSITORY, backup_failure_trap,
                                            backup_success_metrics, dump_commands, metric_labels,
                                            retention_section, script_prelude)
from components.backupscripts.restore import (READ_CHECK, newest_snapshot, restore_test_trap, scratch_server,
                                              wait_ready)
from components.backupscripts.pitr import render_base_backup_script, render_pitr_test_script


def render_backup_script(job: BackupJob) -> str:
    """The daily backup: ``/JOB.dump`` and ``/JOB.counts`` streamed into restic, then retention."""
    labels = metric_labels(job)
    if job.kind == "minio":
        return _render_mirror_backup(job, labels)
    if job.kind == "pitr":
        return render_base_backup_script(job)
    body = f'counts_stored() {{ counts; echo "{COUNTS_END}"; }}\n' + textwrap.dedent(f"""\
        SIZE=0
        ADDED=0
        RUN="run-$(date -u +%Y%m%dT%H%M%SZ)"
        {INIT_REPOSITORY.strip()}
        # The dump first: a run whose dump failed never stores counts, and the restore test
        # starts from the newest counts, so a partial dump restic kept is never picked.
        backup_stream "$JOB.dump" dump
        backup_stream "$JOB.counts" counts_stored
        """) + f"RETENTION_DAYS={job.retention_days}\n" + retention_section(f"/{job.job}.dump", f"/{job.job}.counts")
    return (script_prelude(job, "backup", "off-site backup") + dump_commands(job) + BACKUP_STREAM
            + backup_failure_trap(labels) + body + backup_success_metrics(labels)
            + 'echo "$JOB: stored $RUN ($SIZE bytes read, $ADDED bytes added)"\n')


def _restore_and_count(job: BackupJob) -> str:
    if job.kind == "redis":
        return textwrap.dedent("""\
            restic dump "$SNAPSHOT" "/$JOB.dump" >"$WORK/dump.rdb" || fail "the snapshot $RUN cannot be read"
            chmod 0755 "$WORK" && chmod 0644 "$WORK/dump.rdb"
            scratch_start
            """) + wait_ready("redis") + textwrap.dedent(f"""\
            scratch_redis_cli INFO keyspace | {REDIS_KEYSPACE} >"$WORK/restored.counts" \\
              || fail "the snapshot $RUN did not load"
            """)
    if job.kind == "mongodb":
        return "scratch_start\n" + wait_ready("mongodb") + textwrap.dedent(f"""\
            restic dump "$SNAPSHOT" "/$JOB.dump" | scratch_mongorestore --quiet --archive --drop \\
              || fail "mongorestore of $RUN failed"
            scratch_mongosh --quiet "mongodb://127.0.0.1/$MONGO_DATABASE" --eval "{MONGO_COUNTS_JS}" >"$WORK/restored.counts"
            """)
    return "scratch_start\n" + wait_ready("postgres", image_entrypoint=job.mode == "docker") + textwrap.dedent(f"""\
        scratch_psql --no-psqlrc -q --set=ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE restore_test"
        restic dump "$SNAPSHOT" "/$JOB.dump" | scratch_pg_restore --no-owner --no-privileges --exit-on-error \\
          --dbname=restore_test || fail "pg_restore of $RUN failed"
        scratch_psql --no-psqlrc --set=ON_ERROR_STOP=1 -At -d restore_test \\
          -c "{ROW_COUNTS_SQL}" >"$WORK/restored.counts"
        """)


def render_restore_test_script(job: BackupJob) -> str:
    """The weekly restore test: newest dump into a scratch server, counts compared, then a
    rotating quarter of the repository's data read back (``restic check``)."""
    labels = metric_labels(job)
    if job.kind == "minio":
        return _render_mirror_restore_test(job, labels)
    if job.kind == "pitr":
        return render_pitr_test_script(job)
    engine = job.kind
    env_check = 'MONGO_DATABASE="${MONGO_DATABASE:?set in the environment file}"\n' if engine == "mongodb" else ""
    body = newest_snapshot(f"/{job.job}.counts", "backup") + textwrap.dedent(f"""\
        restic dump "$SNAPSHOT" "/$JOB.counts" | sed '/^{COUNTS_END}$/d' >"$WORK/expected.counts"
        SNAPSHOT="$(snapshot_field id --path "/$JOB.dump" --tag "$RUN")"
        [ -n "$SNAPSHOT" ] || fail "the dump of $RUN is missing"
        """) + _restore_and_count(job) + textwrap.dedent(f"""\
        diff -u "$WORK/expected.counts" "$WORK/restored.counts" || fail "counts differ after restoring $RUN"
        {READ_CHECK.strip()}
        echo "$JOB: restored $RUN; $(wc -l <"$WORK/restored.counts") {UNITS[engine]} match"
        """)
    return (script_prelude(job, "restore-test", "weekly restore test") + env_check + scratch_server(job, engine)
            + restore_test_trap(job, labels) + body)


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
        """).replace("@@INIT@@\n", INIT_REPOSITORY)
    return (script_prelude(job, "backup", "off-site mirror") + BACKUP_STREAM + backup_failure_trap(labels)
            + body + f"RETENTION_DAYS={job.retention_days}\n"
            + retention_section(f"/{job.job}.manifest", f"{job.state_dir}/mirror")
            + backup_success_metrics(labels)
            + 'echo "$JOB: mirrored $(wc -l <"$WORK/manifest") objects ($SIZE bytes, $ADDED bytes added)"\n')


def _render_mirror_restore_test(job: BackupJob, labels: str) -> str:
    """Restores the newest mirror snapshot into the work directory; every object of that run's
    manifest must come back with its size (restic authenticates every blob it restores)."""
    body = newest_snapshot(f"/{job.job}.manifest", "mirror manifest") + textwrap.dedent(f"""\
        restic dump "$SNAPSHOT" "/$JOB.manifest" >"$WORK/manifest"
        TREE="$(snapshot_field id --path "$STATE/mirror" --tag "$RUN")"
        [ -n "$TREE" ] || fail "the mirror of $RUN is missing"
        restic restore --quiet "$TREE" --target "$WORK/restore" >/dev/null || fail "restoring the mirror failed"
        (cd "$WORK/restore$STATE/mirror" && find . -type f -printf '%P\\t%s\\n' | LC_ALL=C sort) >"$WORK/restored.manifest"
        MISSING="$(LC_ALL=C comm -23 "$WORK/manifest" "$WORK/restored.manifest")"
        [ -z "$MISSING" ] || fail "objects missing or of another size after restoring $RUN: $MISSING"
        {READ_CHECK.strip()}
        echo "$JOB: restored $(wc -l <"$WORK/restored.manifest") {UNITS['minio']}; all $(wc -l <"$WORK/manifest") of $RUN match"
        """)
    return (script_prelude(job, "restore-test", "weekly restore test") + "scratch_stop() { :; }\n"
            + restore_test_trap(job, labels) + body)
