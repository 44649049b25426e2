"""Two alternating restic repositories per ``pitr`` job, so that a WAL ship never meets an
exclusive lock taken on its own host.

restic (0.14 in Debian 12, 0.16 in Ubuntu 24.04) locks a repository exclusively for ``check``
and ``prune`` (and ``forget``), and a ``backup`` then fails with "already locked". With one
repository, every WAL ship during the weekly check or a prune waited (30 x 10 s) and the
off-site copy lagged the declared RPO for as long as they ran.

So a ``pitr`` job has two repositories, ``$RESTIC_REPOSITORY/pitr-0`` and ``/pitr-1`` (same
bucket, same password and token). A *generation* counter in ``$STATE/generation`` (absent: 0)
names the ACTIVE one by its parity: WAL ships and base backups write there. Each weekly base
backup starts a new generation (the other repository becomes active), then applies retention
and prunes the one it left; the PITR test checks the inactive one. Why a generation and not the
ISO week: the switch is an event the base backup performs under the flocks below, so it waits
for a check or prune of the repository it activates; a switch at a clock boundary would
activate a repository whose check (started late, e.g. a ``Persistent=`` timer after a reboot)
was still running, and every ship would wait for it. It also needs no clock seam in tests.

Host flocks, ``$STATE/repo-I.lock`` per repository, serialize the rest:

- a ship takes the ACTIVE repository's lock *shared* and never waits (``flock -n``): an
  exclusive holder of the active repository cannot exist (see below), so a refusal means the
  generation just changed and the ship reads it again;
- ``check``, ``forget`` and ``prune`` run only under the repository's *exclusive* lock, taken
  only when the generation says it is inactive (read again after the lock is held): they wait
  for a ship still in flight to it after a switch, never the other way round;
- the switch takes the newly active repository's lock *exclusively* before it writes the new
  generation: it waits for a check or prune of that repository; ships meanwhile go on to the
  still active one.

Every WAL snapshot holds the segments back to the previous base backup (the local directory
keeps them), wherever that base backup is, so the PITR test lists both repositories (under
shared locks: no check or prune of either starts while it reads) and restores the base backup
and the WAL snapshot each from the repository that holds it.
"""

from __future__ import annotations

import textwrap

REPOSITORIES = ("pitr-0", "pitr-1")
"""The two repositories' paths below the job's ``RESTIC_REPOSITORY`` (the bucket)."""

GENERATIONS = textwrap.dedent("""\
    # Two repositories below the bucket; the generation's parity names the active one
    # (components/backupscripts/generations.py).
    BUCKET_REPOSITORY="$RESTIC_REPOSITORY"
    generation() {
      local n
      n="$(cat "$STATE/generation" 2>/dev/null || true)"
      case "$n" in ''|*[!0-9]*) n=0 ;; esac
      echo "$n"
    }
    # use_repository I -- restic's commands from here on work on repository I.
    use_repository() { export RESTIC_REPOSITORY="$BUCKET_REPOSITORY/pitr-$1"; }
    repository_exists() { restic cat config >/dev/null 2>&1; }
    # repository_snapshots FILTER... -- "epoch id repository" of every snapshot matching restic's
    # filters (--path P, --tag T) in both repositories, oldest first. --no-lock: listing needs
    # none, and so waits for no other host's exclusive lock.
    repository_snapshots() {
      local i
      for i in 0 1; do
        use_repository "$i"
        repository_exists || continue
        restic --no-lock snapshots --json --host "$JOB" "$@" \\
          | jq -r --arg i "$i" '.[] | "\\(.time) \\(.id) \\($i)"'
      done | while read -r time id i; do echo "$(date -d "$time" +%s) $id $i"; done | sort -n
    }
    # maintenance_metrics FILE NAME I -- NAME{job, repository} now for repository I; the other
    # repository's value is carried over (or now, when it has none yet: its first is due a
    # generation later).
    maintenance_metrics() {
      local file="$1" name="$2" done="$3" i value lines=()
      for i in 0 1; do
        value="$(sed -n "s/^$name{job=\\"$JOB\\",repository=\\"pitr-$i\\"} //p" "$TEXTFILE_DIR/$file" 2>/dev/null || true)"
        if [ "$i" = "$done" ] || [ -z "$value" ]; then value="$(date +%s)"; fi
        lines+=("$name{job=\\"$JOB\\",repository=\\"pitr-$i\\"} $value")
      done
      write_metrics "$file" "${lines[@]}"
    }
    """)

# The ship: the active repository's lock, shared, on fd 8 for the whole run, never waited for.
LOCK_ACTIVE = textwrap.dedent("""\
    # The active repository, locked shared for the whole ship and never waited for: a check or
    # prune locks a repository only while it is inactive, so a refusal means the generation
    # just changed; it is read again.
    for attempt in $(seq 1 100); do
      ACTIVE=$(( $(generation) % 2 ))
      exec 8>"$STATE/repo-$ACTIVE.lock"
      if flock -s -n 8 && [ $(( $(generation) % 2 )) -eq "$ACTIVE" ]; then break; fi
      exec 8>&-
      [ "$attempt" -lt 100 ] || fail "repository pitr-$ACTIVE stayed locked for 10 s"
      sleep 0.1
    done
    use_repository "$ACTIVE"
    """)

# The base backup's switch: the inactive repository becomes the active one (fd 9 keeps it
# locked shared for the base backup, as a ship does).
SWITCH = textwrap.dedent("""\
    # A new generation: the inactive repository becomes the active one. Its exclusive lock
    # first, so a check or prune of it finishes before anything ships there (ships go on to the
    # other meanwhile); locks a killed check or prune left in it are stale (same host, no such
    # process) and removed.
    GENERATION="$(generation)"
    NEW=$(( (GENERATION + 1) % 2 ))
    exec 9>"$STATE/repo-$NEW.lock"
    flock -x 9
    use_repository "$NEW"
    @@INIT@@
    restic unlock >/dev/null 2>&1 || true
    printf '%s\\n' "$((GENERATION + 1))" >"$STATE/generation.new"
    mv -f "$STATE/generation.new" "$STATE/generation"
    flock -s 9
    echo "$JOB: generation $((GENERATION + 1)): WAL and base backups go to pitr-$NEW"
    """)


def lock_inactive(fd: int, variable: str) -> str:
    """Sets ``variable`` to the inactive repository's index with its lock held exclusively on
    ``fd``: waits for a ship in flight to it (or a PITR test reading it), and takes it again
    when a switch made it active meanwhile; then removes the stale restic locks a killed run
    left in it (restic 0.14 refuses an exclusive lock beside any other, stale or not)."""
    return textwrap.dedent(f"""\
        while :; do
          {variable}=$(( ($(generation) + 1) % 2 ))
          exec {fd}>"$STATE/repo-${variable}.lock"
          flock -x {fd}
          [ $(( $(generation) % 2 )) -eq "${variable}" ] || break
          exec {fd}>&-
        done
        use_repository "${variable}"
        # Under this lock no restic run of this host holds the repository: what is left is stale.
        restic unlock >/dev/null 2>&1 || true
        """)
