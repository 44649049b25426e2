"""An R2 API token that reaches one bucket's objects, and its S3 credentials."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

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
