"""``MinioBucket``: a private, versioned MinIO bucket with one IAM user per consuming service,
each limited by policy to that service's prefixes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_minio as minio
import pulumi_random as random


@dataclass(frozen=True)
class MinioConsumer:
    service: str
    """Service name; its IAM user is ``<bucket>-<service>``."""
    prefixes: Sequence[str]
    """Key prefixes it may use, e.g. ``CERTIFICATES/``."""
    write: bool = True
    """Read-write, or read-only."""


def bucket_policy(bucket: str) -> str:
    """Deny every request that does not arrive over TLS; nothing is granted anonymously."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": {"AWS": ["*"]},
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": ["false"]}},
        }],
    }, sort_keys=True)


def consumer_policy(bucket: str, consumer: MinioConsumer) -> str:
    """Object access under the consumer's prefixes only, and listing only of those prefixes."""
    if not consumer.prefixes:
        raise ValueError(f"{consumer.service}: a consumer needs at least one prefix")
    for prefix in consumer.prefixes:
        if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix:
            raise ValueError(f"{consumer.service}: prefix {prefix!r} must look like NAME/")
    actions = ["s3:GetObject"] + (["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
                                  if consumer.write else [])
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": actions,
             "Resource": [f"arn:aws:s3:::{bucket}/{p}*" for p in consumer.prefixes]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"],
             "Condition": {"StringLike": {"s3:prefix": [f"{p}*" for p in consumer.prefixes]}}},
        ],
    }, sort_keys=True)


@dataclass(frozen=True)
class MinioBucketArgs:
    bucket: str
    consumers: Sequence[MinioConsumer]
    provider: minio.Provider
    """MinIO provider (reaches the server through an SSH tunnel from the operator's machine)."""
    noncurrent_version_days: int = 30
    protect: bool = False


class MinioBucket(pulumi.ComponentResource):
    """Children: ``{name}-bucket``, ``{name}-versioning``, ``{name}-lifecycle``, ``{name}-policy``,
    and per consumer ``{name}-<service>-secret``, ``-user``, ``-access``, ``-attach``.
    ``credentials[service]`` is ``(access key, secret key)``, the secret as a Pulumi secret."""

    def __init__(self, name: str, args: MinioBucketArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("platform:components:MinioBucket", name, None, opts)
        provided = pulumi.ResourceOptions(parent=self, provider=args.provider)
        self.bucket = minio.S3Bucket(f"{name}-bucket", bucket=args.bucket, acl="private", force_destroy=False,
                                     opts=pulumi.ResourceOptions.merge(provided, pulumi.ResourceOptions(
                                         protect=args.protect, retain_on_delete=args.protect)))
        minio.S3BucketVersioning(f"{name}-versioning", bucket=self.bucket.bucket,
                                 versioning_configuration={"status": "Enabled"}, opts=provided)
        minio.IlmPolicy(f"{name}-lifecycle", bucket=self.bucket.bucket, rules=[
            {"id": "expire-old-versions", "status": "Enabled",
             "noncurrent_version_expiration_days": args.noncurrent_version_days}], opts=provided)
        minio.S3BucketPolicy(f"{name}-policy", bucket=self.bucket.bucket, policy=bucket_policy(args.bucket),
                             opts=provided)
        self.credentials: dict[str, tuple[pulumi.Output[str], pulumi.Output[str]]] = {}
        for consumer in args.consumers:
            prefix = f"{name}-{consumer.service}"
            secret = random.RandomPassword(f"{prefix}-secret", length=40, special=False,
                                           opts=pulumi.ResourceOptions(parent=self))
            user = minio.IamUser(f"{prefix}-user", name=f"{args.bucket}-{consumer.service}",
                                 secret=secret.result, opts=provided)
            policy = minio.IamPolicy(f"{prefix}-access", name=f"{args.bucket}-{consumer.service}",
                                     policy=consumer_policy(args.bucket, consumer), opts=provided)
            minio.IamUserPolicyAttachment(f"{prefix}-attach", user_name=user.name, policy_name=policy.name,
                                          opts=provided)
            self.credentials[consumer.service] = (user.name, pulumi.Output.secret(secret.result))
        self.register_outputs({"bucket": self.bucket.bucket})
