"""What every restore test shares: its exit trap and metrics, the newest snapshot and its
age, the rotating ``restic check``, and a scratch server without a network port."""

from __future__ import annotations

import textwrap

from components.backupscripts.jobs import BackupJob


def restore_test_trap(job: BackupJob, labels: str, metric_file: str = "restore-test-$JOB.prom",
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


def newest_snapshot(path: str, what: str) -> str:
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
READ_CHECK = ('restic_retry check --read-data-subset="$(( 10#$(date +%V) % 4 + 1 ))/4" '
          '|| fail "restic check found damage in the repository"\n')


def scratch_server(job: BackupJob, engine: str, *, initdb: bool = True) -> str:
    """``scratch_start``/``scratch_stop`` and ``scratch_<tool>`` for a throwaway server that has
    no TCP port: a Unix socket in the work directory (host mode, run as the postgres user for
    PostgreSQL) or a container with ``--network none`` reached through ``docker exec``."""
    if job.mode == "docker":
        # Bounded by the job's limits (BackupJob.scratch_memory_mb, scratch_cpus): a restore test
        # next to the running datastore cannot take the host's memory. The tmpfs's pages count
        # against --memory; its size caps the data alone.
        size = f"size={job.scratch_memory_mb}m"
        limits = f"--memory {job.scratch_memory_mb}m --memory-swap {job.scratch_memory_mb}m --cpus {job.scratch_cpus:g}"
        data = {"postgres": f"--tmpfs /var/lib/postgresql/data:{size} -e POSTGRES_HOST_AUTH_METHOD=trust",
                "mongodb": f"--tmpfs /data/db:{size}", "redis": '-v "$WORK:/data"'}[engine]
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
        if engine == "redis":  # a snapshot it cannot load stops it: wait_ready gives up then
            functions += ("scratch_running() { [ \"$(docker inspect -f '{{.State.Running}}' \"$SCRATCH_CONTAINER\" "
                          "2>/dev/null)\" = true ]; }\n")
        return 'SCRATCH_CONTAINER=""\n' + functions + textwrap.dedent(f"""\
            scratch_start() {{
              SCRATCH_CONTAINER="restore-test-$JOB-$$"
              docker run -d --rm --name "$SCRATCH_CONTAINER" --network none {limits} {data} {job.tool_image}{command} >/dev/null
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


def wait_ready(engine: str, *, image_entrypoint: bool = False) -> str:
    """Up to 120 s (1 s apart) until the scratch server answers; for Redis, which exits when it
    cannot load the snapshot, no longer than it runs (``scratch_running``).

    ``image_entrypoint``: a PostgreSQL scratch container started by the postgres image's
    entrypoint on an empty data directory. The entrypoint runs initdb's temporary server on the
    Unix socket only and stops it before the real one starts, so a socket probe can pass in
    between and the restore then finds no server (rehearsal: six restore tests at once on
    Pencom's data node). The probe goes over TCP to the container's own loopback, where only the
    real server listens (``--network none`` keeps lo)."""
    postgres = "scratch_psql -h 127.0.0.1" if image_entrypoint else "scratch_psql"
    probe = {"postgres": f"{postgres} --no-psqlrc -At -d postgres -c 'SELECT 1'",
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
