"""``SessionArchive``: a product's admin-session records kept off the host that collects them, in
an R2 bucket under a bucket lock (``hostsetup.session_archive`` has the host's side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_cloudflare as cloudflare

from components import hostsetup
from components.hostsetup.session_archive import render_archive_environment, session_archive_section
from components.r2 import DAY, abort_incomplete_uploads, age_lock_rule, bucket_token
from components.remote import SshTarget, run_script



@dataclass(frozen=True)
class SessionArchiveArgs:
    account_id: str
    """Cloudflare account that owns the bucket (32 hex characters)."""
    bucket_name: str
    """The R2 bucket, the archive's alone: its token reaches nothing else."""
    host: SshTarget
    """The host holding the product's session records (its collector, or its only host)."""
    prefix: str
    """Object key prefix: the host's name (``<prefix>/<YYYYMMDDTHHMM>Z.log``)."""
    retention_days: int
    """Days each object is locked (no delete, no overwrite, by anyone) and then kept one more
    day before the lifecycle rule deletes it."""
    location: str = "weur"
    """R2 location hint."""
    host_ready: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """What must exist on the host first (its setup, which installs rsyslog)."""
    protect: bool = False
    """Protect the bucket, its lock and its lifecycle, and retain the bucket if removed from the
    program (prod)."""

    def __post_init__(self) -> None:
        if not 1 <= self.retention_days <= 3650:
            raise ValueError(f"retention_days is {self.retention_days}: between 1 and 3650 days")


class SessionArchive(pulumi.ComponentResource):
    """Children: ``{name}-bucket``, ``{name}-lock`` (one rule: every object, ``Age``
    ``retention_days``), ``{name}-lifecycle`` (delete a day after the lock ends; abort
    unfinished uploads after a day), ``{name}-token`` (object read and write on this bucket
    only) and ``{name}-install`` (rsyslog's spool, the uploader and its timer, the token in a
    0600 EnvironmentFile; a secret script).

    Cloudflare's bucket lock (https://developers.cloudflare.com/r2/buckets/bucket-locks/)
    refuses deleting or overwriting a locked object, whatever the token, so a host that is
    compromised cannot erase what it has uploaded."""

    def __init__(self, name: str, args: SessionArchiveArgs, opts: Optional[pulumi.ResourceOptions] = None):
        facts = {"bucket": args.bucket_name, "lockDays": args.retention_days, "prefix": args.prefix}
        super().__init__("platform:components:SessionArchive", name, dict(facts), opts)
        # In prod the lock and the lifecycle are protected like the bucket: deleting the lock
        # resource would lift the lock (a token with bucket-configuration rights can).
        child = pulumi.ResourceOptions(parent=self, protect=args.protect)
        self.bucket = cloudflare.R2Bucket(
            f"{name}-bucket", account_id=args.account_id, name=args.bucket_name, location=args.location,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect))
        cloudflare.R2BucketLock(
            f"{name}-lock", account_id=args.account_id, bucket_name=self.bucket.name,
            rules=[age_lock_rule("retain-sessions", "", args.retention_days)],
            opts=child)
        cloudflare.R2BucketLifecycle(
            f"{name}-lifecycle", account_id=args.account_id, bucket_name=self.bucket.name,
            rules=[
                cloudflare.R2BucketLifecycleRuleArgs(
                    id="expire-after-lock", enabled=True,
                    conditions=cloudflare.R2BucketLifecycleRuleConditionsArgs(prefix=""),
                    delete_objects_transition=cloudflare.R2BucketLifecycleRuleDeleteObjectsTransitionArgs(
                        condition=cloudflare.R2BucketLifecycleRuleDeleteObjectsTransitionConditionArgs(
                            type="Age", max_age=(args.retention_days + 1) * DAY))),
                abort_incomplete_uploads(),
            ],
            opts=child)
        credentials = bucket_token(f"{name}-token", args.account_id, self.bucket,
                                   f"r2-sessions-{args.bucket_name}", parent=self)
        endpoint = f"https://{args.account_id}.r2.cloudflarestorage.com"
        install = pulumi.Output.secret(pulumi.Output.all(
            self.bucket.name, credentials.access_key_id, credentials.secret_access_key).apply(
            lambda values: hostsetup.script(session_archive_section(render_archive_environment(
                endpoint, values[0], args.prefix, values[1], values[2])))))
        run_script(f"{name}-install", args.host, install, parent=self, depends_on=list(args.host_ready))
        self.register_outputs({**facts, "bucket": self.bucket.name})
