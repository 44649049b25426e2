"""Every product's off-site backups wired the same way: one ``R2Backup`` per job, named and
scheduled from the product's ``backup`` settings (``shared_config.BackupConfig``)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import pulumi

from components.backup import R2Backup, R2BackupArgs
from components.backupscripts import BackupJob
from components.remote import SshTarget
from stacks.shared_config import BackupConfig
from stacks.wiring import backup_bucket_name, backup_job_name


def provision_backup(stack: str, label: str, backup: BackupConfig, *, kind: str, tool_image: str,
                     runner: SshTarget, runner_ready: Sequence[pulumi.Resource], mounts: Sequence[str],
                     source_name: str, source_uri: pulumi.Input[str], protect: bool,
                     opts: pulumi.ResourceOptions, bucket_per_job: bool = True, mode: str = "docker",
                     cluster_rpo: Optional[int] = None, rpo_minutes: Optional[int] = None,
                     source_service: str = "", environment: Optional[Mapping[str, str]] = None,
                     scratch_limits: Optional[tuple[int, float]] = None) -> R2Backup:
    """The backup job ``<stack>-<label>`` (``wiring.backup_job_name``) run on ``runner`` into the
    R2 bucket ``<backup.bucket>-<label>`` (``bucket_per_job``) or ``backup.bucket``.

    ``cluster_rpo`` (minutes) sets the WAL ship interval of a ``pitr`` job (default 5);
    ``rpo_minutes`` is the RPO the job is checked against (None: the schedule's);
    ``scratch_limits`` is the datastore's own (memory_mb, cpus), which bound the restore test's
    scratch server (None: a managed database's, ``SCRATCH_MEMORY_MB``/``SCRATCH_CPUS``). Raises what
    ``BackupJob`` and ``R2BackupArgs`` raise on bad values."""
    job = backup_job_name(stack, label)
    return R2Backup(f"{job}-backup", R2BackupArgs(
        job=BackupJob(job=job, kind=kind, retention_days=backup.retention_days, mode=mode, tool_image=tool_image,
                      mounts=tuple(mounts), rpo_minutes=5 if cluster_rpo is None else cluster_rpo,
                      source_service=source_service,
                      **(dict(zip(("scratch_memory_mb", "scratch_cpus"), scratch_limits)) if scratch_limits else {})),
        rpo_minutes=rpo_minutes, source_name=source_name, source_uri=source_uri,
        account_id=backup.cloudflare_account_id,
        bucket_name=backup_bucket_name(backup.bucket, label) if bucket_per_job else backup.bucket,
        location=backup.location, lock_days=backup.lock_days, runner=runner, runner_ready=runner_ready,
        protect=protect, environment=dict(environment or {}),
        backup_calendar=backup.schedule, restore_calendar=backup.restore_test_schedule,
    ), opts=opts)
