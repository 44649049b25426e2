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
  with ``recovery_target_time`` and requires the recovery to stop at that time. Two
  repositories alternate (``generations``): ships write to the active one, ``check`` and
  ``prune`` run on the other, so no ship waits for restic's exclusive lock.

No secret is ever an argument: connection settings come as environment variables parsed from the
source URI in Python (:func:`connection_environment`), passwords as ``PGPASSWORD``,
``REDISCLI_AUTH``, ``RESTIC_PASSWORD_FILE``, a mongo tools config on stdin. No path handed to the
Docker daemon lives in a private namespace: the work directory is the unit's
``StateDirectory=`` under /var/lib, never /tmp. No two jobs share a port: scratch servers listen
on a Unix socket in the job's directory (host mode) or run with ``--network none`` (docker mode).

Tools run on the host (``mode="host"``, what the tests drive) or from pinned images through
Docker (``mode="docker"``, so the client matches the server's major version); restic, rclone
and jq always run on the host.

The package: ``jobs`` (the job and its values), ``shell`` (what every script shares),
``dumps``, ``restore`` and ``pitr`` (the scripts by kind), ``generations`` (a pitr job's two
repositories and their host locks), ``units`` (systemd); ``scripts``
below names every script a job installs.
"""

from __future__ import annotations

from components.backupscripts.dumps import render_backup_script, render_restore_test_script
from components.backupscripts.jobs import (COUNTS_END, ENV_DIR, MEASURED_RESTORE_SECONDS, MONGO_ENV, PG_ENV,
                                           REDIS_ENV, SLOT, STATE_ROOT, TEXTFILE_DIR, UNITS, WAL_ROLE, BackupJob,
                                           Kind, Mode, connection_environment, effective_rpo_minutes,
                                           replication_role_sql, ship_interval_seconds)
from components.backupscripts.pitr import (render_base_backup_script, render_pitr_test_script,
                                           render_wal_receive_script, render_wal_ship_script)
from components.backupscripts.units import render_units, spread_calendar

__all__ = ["COUNTS_END", "ENV_DIR", "MEASURED_RESTORE_SECONDS", "MONGO_ENV", "PG_ENV", "REDIS_ENV", "SLOT",
           "STATE_ROOT", "TEXTFILE_DIR", "UNITS", "WAL_ROLE", "BackupJob", "Kind", "Mode", "connection_environment",
           "effective_rpo_minutes", "render_backup_script", "render_base_backup_script", "render_pitr_test_script",
           "render_restore_test_script", "render_units", "render_wal_receive_script", "render_wal_ship_script",
           "replication_role_sql", "scripts", "ship_interval_seconds", "spread_calendar"]


def scripts(job: BackupJob) -> dict[str, str]:
    """Every script a job installs, by its path under /usr/local/sbin."""
    if job.kind == "pitr":
        return {f"platform-base-backup-{job.job}": render_base_backup_script(job),
                f"platform-pitr-test-{job.job}": render_pitr_test_script(job),
                f"platform-wal-receive-{job.job}": render_wal_receive_script(job),
                f"platform-wal-ship-{job.job}": render_wal_ship_script(job)}
    return {f"platform-backup-{job.job}": render_backup_script(job),
            f"platform-restore-test-{job.job}": render_restore_test_script(job)}
