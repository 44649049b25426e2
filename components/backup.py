"""``R2Backup``: an off-site, encrypted, restore-tested backup of one datastore to Cloudflare R2."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_cloudflare as cloudflare
import pulumi_random as random

from components import hostsetup
from components.backupscripts.generations import REPOSITORIES
from components.backupscripts import (ENV_DIR, MEASURED_RESTORE_SECONDS, STATE_ROOT, TEXTFILE_DIR,
                                      BackupJob, connection_environment, effective_rpo_minutes,
                                      render_units, scripts, spread_calendar)
from components.r2 import abort_incomplete_uploads, age_lock_rule, bucket_token
from components.remote import SshTarget, run_script



# Debian packages every job needs on its runner (restic stores, jq reads restic's JSON), and
# those a host-mode job adds (rclone reads MinIO).
BASE_TOOLS = "restic jq"
HOST_TOOLS = {"postgres": " postgresql-client", "redis": " redis-tools", "mongodb": "",
              "minio": " rclone", "pitr": " postgresql-client"}
# restic deletes its lock files, and prune rewrites index files: only these prefixes can be
# locked. WAL snapshots are thinned after two days, so a pitr job locks the keys alone, of its
# two repositories (components/backupscripts/generations.py).
LOCKED_PREFIXES = {"default": ("config", "keys/", "data/", "snapshots/"),
                   "pitr": tuple(f"{r}/{p}" for r in REPOSITORIES for p in ("config", "keys/"))}


@dataclass(frozen=True)
class R2BackupArgs:
    job: BackupJob
    """What to back up and how (kind, retention, tools)."""
    source_name: str
    """Name of the resource backed up (the cluster or container); the policy pack matches it."""
    source_uri: pulumi.Input[str]
    """Secret connection URI the runner dumps from."""
    account_id: str
    """Cloudflare account that owns the bucket."""
    bucket_name: str
    """R2 bucket; one per job keeps each token's reach to one datastore."""
    runner: SshTarget
    """Host that runs the backup and restore test (over SSH, as the deploy user with sudo)."""
    location: str = "weur"
    """R2 location hint."""
    lock_days: Optional[int] = None
    """Bucket lock: objects cannot be deleted or overwritten for this many days."""
    backup_calendar: Optional[str] = None
    """systemd OnCalendar of the backup; default daily (a ``pitr`` job's base backup: Saturdays)
    at 03:MM UTC, the minute derived from the job name (``spread_calendar``) so one host's jobs
    do not start together."""
    restore_calendar: Optional[str] = None
    """systemd OnCalendar of the restore test; default Sundays at 05:MM UTC (spread likewise)."""
    runner_ready: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """What must exist on the runner first (host setup, files such as a CA)."""
    protect: bool = False
    """Protect the bucket and retain it if removed from the program (prod)."""
    rpo_minutes: Optional[int] = None
    """Declared RPO of the datastore (``pitr`` jobs ship WAL for it); None for a daily dump."""
    measured_restore_seconds: Optional[float] = None
    """Last measured restore time, reported next to the RPO; default the figure
    ``benchmarks/`` measured for this kind (``benchmarks/results.json``)."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """More variables for the job's environment file: ``HTTPS_PROXY`` on an egress-locked
    runner, ``BACKUP_CA_CERT`` (Redis) or ``RCLONE_CA_CERT`` (MinIO) for a TLS source."""


class R2Backup(pulumi.ComponentResource):
    """Children: ``{name}-bucket``, ``{name}-lifecycle``, ``{name}-lock``, ``{name}-token``,
    ``{name}-passphrase``, ``{name}-install``, ``{name}-credentials``.

    The encryption passphrase is generated and kept only in Pulumi state (as a secret) and on the
    runner: export it to your password manager (`pulumi stack output --show-secrets`), or a lost
    state makes the backups unreadable.
    """

    def __init__(self, name: str, args: R2BackupArgs, opts: Optional[pulumi.ResourceOptions] = None):
        job = args.job
        # Spread by the job's name without the stack's, so prod and staging run alike.
        key = job.job.replace(pulumi.get_stack(), "")
        # A PITR job's backup is its weekly base backup; the configured schedule is the dumps'.
        args = replace(
            args,
            backup_calendar=(spread_calendar(key, 3, "Sat") if job.kind == "pitr"
                             else args.backup_calendar or spread_calendar(key, 3)),
            restore_calendar=args.restore_calendar or spread_calendar(key, 5, "Sun"))
        self._facts = {
            "source": args.source_name,
            "kind": job.kind,
            "retentionDays": job.retention_days,
            "restoreTest": True,
            "schedule": args.backup_calendar,
            "restoreSchedule": args.restore_calendar,
            # RPO/RTO in the plan: what the config declares, what the schedule gives, and the
            # last restore time measured by benchmarks/ (None when not measured).
            "rpoMinutesDeclared": args.rpo_minutes,
            "rpoMinutesEffective": effective_rpo_minutes(job.kind, job.rpo_minutes),
            "restoreSecondsMeasured": (args.measured_restore_seconds
                                       if args.measured_restore_seconds is not None
                                       else MEASURED_RESTORE_SECONDS.get(job.kind)),
        }
        super().__init__("platform:components:R2Backup", name, dict(self._facts), opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = cloudflare.R2Bucket(
            f"{name}-bucket", account_id=args.account_id, name=args.bucket_name,
            location=args.location,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect,
                                        retain_on_delete=args.protect))
        cloudflare.R2BucketLifecycle(
            f"{name}-lifecycle", account_id=args.account_id, bucket_name=self.bucket.name,
            rules=[
                # No age-based expiry: a restic repository's config, keys and still-referenced
                # packs are old objects; retention is restic forget --keep-within.
                abort_incomplete_uploads(),
            ],
            opts=child)
        if args.lock_days:
            cloudflare.R2BucketLock(
                f"{name}-lock", account_id=args.account_id, bucket_name=self.bucket.name,
                rules=[age_lock_rule(f"retain-{prefix.strip('/').replace('/', '-')}", prefix, args.lock_days)
                       for prefix in LOCKED_PREFIXES["pitr" if job.kind == "pitr" else "default"]],
                opts=child)

        credentials = bucket_token(f"{name}-token", args.account_id, self.bucket,
                                   f"r2-backup-{args.bucket_name}", parent=self)
        self.token = credentials.token
        self.access_key_id = credentials.access_key_id
        self.secret_access_key = credentials.secret_access_key
        # The restic repository password (generated; kept in Pulumi state and on the runner).
        self.passphrase = random.RandomPassword(f"{name}-passphrase", length=48, special=False,
                                                opts=child)

        job_name = job.job
        units = render_units(job, backup_calendar=args.backup_calendar,
                             restore_calendar=args.restore_calendar)
        tools = BASE_TOOLS + (HOST_TOOLS[job.kind] if job.mode == "host" else "")
        sections = [
            f"ensure_packages {tools}",
            # node-exporter (nobody) reads the metrics: the directory is created world-readable
            # here, before any job runs under its umask 077.
            f"install -d -m 0755 /var/lib/prometheus {TEXTFILE_DIR}",
            f"install -d -m 0700 {STATE_ROOT}",
        ]
        # The WAL receiver runs for good, so its script (which names the tool image) and its unit
        # are committed together and restart it when either changed; a timer's job reads its
        # files at its next run.
        receiver = f"platform-wal-receive-{job_name}"
        if f"{receiver}.service" in units:
            sections.append("receiver_changed=()")
        for script_name, text in sorted(scripts(job).items()):
            path = f"/usr/local/sbin/{script_name}"
            sections.append(hostsetup.staged_file(path, "0750", "root:root", text, record="receiver_changed")
                            if script_name == receiver else hostsetup.deliver_file(path, "0750", "root:root", text))
        for unit, text in sorted(units.items()):
            path = f"/etc/systemd/system/{unit}"
            sections.append(hostsetup.staged_file(path, "0644", "root:root", text, record="receiver_changed")
                            if unit == f"{receiver}.service" else
                            hostsetup.deliver_file(path, "0644", "root:root", text, on_change="systemctl daemon-reload"))
        if f"{receiver}.service" in units:
            sections.append(hostsetup.commit_staged(
                ":", "systemctl daemon-reload && " + hostsetup.unit_apply("try-restart", f"{receiver}.service"),
                record="receiver_changed", when="true"))
        sections += [f"ensure_service_enabled {unit}" for unit in sorted(units)
                     if unit.endswith(".timer") or unit.startswith("platform-wal-receive-")]
        endpoint = f"https://{args.account_id}.r2.cloudflarestorage.com"

        def env_file(values: list[str]) -> str:
            uri, key_id, secret, passphrase, bucket = values
            password_file = f"{ENV_DIR}/{job_name}.restic-password"
            lines = {
                **connection_environment(job.kind, uri),
                "RESTIC_REPOSITORY": f"s3:{endpoint}/{bucket}",
                "RESTIC_PASSWORD_FILE": password_file,
                "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
                **args.environment,
            }
            content = "".join(f"{k}={_systemd_quote(v)}\n" for k, v in lines.items())
            return hostsetup.script(
                f"install -d -m 0700 {ENV_DIR}",
                hostsetup.deliver_file(f"{ENV_DIR}/{job_name}.env", "0600", "root:root", content,
                                       on_change=restart_receivers),
                hostsetup.deliver_file(password_file, "0600", "root:root", passphrase + "\n",
                                       on_change=restart_receivers))

        # A long-running WAL receiver reads the credentials at its start: a new value restarts
        # it (a timer's job reads them at its next run).
        receivers = sorted(u for u in units if u.startswith("platform-wal-receive-"))
        restart_receivers = " && ".join(hostsetup.unit_apply("try-restart", u) for u in receivers)
        credentials_script = pulumi.Output.secret(pulumi.Output.all(
            args.source_uri, self.access_key_id, self.secret_access_key, self.passphrase.result,
            self.bucket.name).apply(env_file))
        # The credentials first: the install starts the WAL receiver, whose unit fails to start
        # without its EnvironmentFile ("Failed to load environment files", seen on the rehearsal).
        credentials = run_script(f"{name}-credentials", args.runner, credentials_script, parent=self,
                                 depends_on=list(args.runner_ready))
        run_script(f"{name}-install", args.runner, hostsetup.script(*sections),
                   parent=self, depends_on=[credentials])
        # The plan facts again as outputs: `pulumi preview` hands stack policies a component's
        # registered outputs, not its inputs (backup coverage, retention and RPO policies).
        self.register_outputs({"bucket": self.bucket.name, "access_key_id": self.access_key_id,
                               "passphrase": self.passphrase.result, **self._facts})


def _systemd_quote(value: str) -> str:
    """An EnvironmentFile value in double quotes, so spaces and specials survive."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
