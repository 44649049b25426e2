"""What every R2 bucket of the program shares: a token that reaches its objects alone (and
its S3 credentials), the lifecycle rule that aborts stale uploads, and an age lock rule."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

DAY = 86400

BUCKET_WRITE_PERMISSION = "Workers R2 Storage Bucket Item Write"
"""The permission group that reads, writes and deletes one bucket's objects, and nothing else
(https://developers.cloudflare.com/r2/api/tokens/#permissions): a bucket lock still refuses
the deletes."""


def s3_secret_from_token(token_value: str) -> str:
    """R2's S3 secret access key is the SHA-256 of the API token's value
    (https://developers.cloudflare.com/r2/api/tokens/)."""
    return hashlib.sha256(token_value.encode()).hexdigest()


@dataclass(frozen=True)
class BucketCredentials:
    token: cloudflare.AccountToken
    access_key_id: pulumi.Output[str]
    """The token's id."""
    secret_access_key: pulumi.Output[str]
    """A secret: ``s3_secret_from_token`` of the token's value."""


def bucket_token(resource_name: str, account_id: str, bucket: cloudflare.R2Bucket, token_name: str,
                 parent: pulumi.Resource) -> BucketCredentials:
    """An account token ``token_name`` (resource ``resource_name``, under ``parent``) allowed
    :data:`BUCKET_WRITE_PERMISSION` on ``bucket`` alone, its value a secret output."""
    permission = cloudflare.get_account_api_token_permission_groups_list_output(
        account_id=account_id, name=BUCKET_WRITE_PERMISSION)
    resource_key = bucket.name.apply(lambda name: f"com.cloudflare.edge.r2.bucket.{account_id}_default_{name}")
    token = cloudflare.AccountToken(
        resource_name, account_id=account_id, name=token_name,
        policies=[cloudflare.AccountTokenPolicyArgs(
            effect="allow",
            permission_groups=[cloudflare.AccountTokenPolicyPermissionGroupArgs(
                id=permission.results.apply(lambda groups: groups[0].id))],
            resources=resource_key.apply(lambda key: json.dumps({key: "*"})),
        )],
        opts=pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["value"]))
    return BucketCredentials(token=token, access_key_id=token.id,
                             secret_access_key=pulumi.Output.secret(token.value.apply(s3_secret_from_token)))


def abort_incomplete_uploads() -> cloudflare.R2BucketLifecycleRuleArgs:
    """A lifecycle rule that aborts multipart uploads left unfinished for a day (an upload cut
    off halfway is billed storage nobody can read)."""
    return cloudflare.R2BucketLifecycleRuleArgs(
        id="abort-incomplete-uploads", enabled=True,
        conditions=cloudflare.R2BucketLifecycleRuleConditionsArgs(prefix=""),
        abort_multipart_uploads_transition=cloudflare.R2BucketLifecycleRuleAbortMultipartUploadsTransitionArgs(
            condition=cloudflare.R2BucketLifecycleRuleAbortMultipartUploadsTransitionConditionArgs(
                type="Age", max_age=DAY)))


def age_lock_rule(rule_id: str, prefix: str, days: int) -> cloudflare.R2BucketLockRuleArgs:
    """A bucket lock rule: objects under ``prefix`` ("" for every object) cannot be deleted or
    overwritten until they are ``days`` days old (https://developers.cloudflare.com/r2/buckets/bucket-locks/)."""
    return cloudflare.R2BucketLockRuleArgs(
        id=rule_id, enabled=True, prefix=prefix,
        condition=cloudflare.R2BucketLockRuleConditionArgs(type="Age", max_age_seconds=days * DAY))
