"""Bucket, policy-document, key and token policies (Spaces, MinIO, R2, Cloudflare)."""

from __future__ import annotations

import json

from policy.parsers.iam import statements
from policy.rules.base import (ADVISORY, CRITICAL, HIGH, MANDATORY, MEDIUM, MISSING_PRODUCTION,
                               PRODUCTION_PROPERTY, T_CF_ACCOUNT_TOKEN, T_CF_API_TOKEN,
                               T_MINIO_BUCKET, T_MINIO_IAM_POLICY, T_MINIO_POLICY,
                               T_MINIO_VERSIONING, T_R2, T_R2_LIFECYCLE, T_R2_LOCK,
                               T_R2_MANAGED_DOMAIN, T_SPACES, T_SPACES_CORS, T_SPACES_KEY,
                               T_SPACES_POLICY, Case, by_type, items, mapping, production,
                               resource_policy, stack_policy)
from policy.rules.fixtures import doc, res, urn


def _check_bucket_private(props, args):
    if args.resource_type == T_SPACES and props.get("acl", "private") != "private":
        yield f"Spaces bucket {props.get('name')} has acl {props.get('acl')}; buckets are private"
    if args.resource_type == T_MINIO_BUCKET and props.get("acl", "private") != "private":
        yield f"MinIO bucket {props.get('bucket')} has acl {props.get('acl')}; buckets are private"
    if args.resource_type == T_R2_MANAGED_DOMAIN and props.get("enabled"):
        yield "the R2 bucket's public r2.dev URL is enabled; keep backups private"


resource_policy(
    "platform-bucket-disallow-public-access", "Spaces, MinIO and R2 buckets are private (no public ACL, no r2.dev URL).",
    level=MANDATORY, severity=CRITICAL, category="storage",
    sources=["Checkov CKV_DIO_3", "Trivy AVD-DIG-0006 (digitalocean-spaces-acl-no-public-read)"],
    fix="Set acl private; disable the r2.dev managed domain.",
    types=[T_SPACES, T_MINIO_BUCKET, T_R2_MANAGED_DOMAIN], check=_check_bucket_private,
    cases=Case(doc(res(T_SPACES, "b", {"name": "media", "acl": "private"}), res(T_MINIO_BUCKET, "m", {"bucket": "docs", "acl": "private"})),
               [(doc(res(T_SPACES, "b", {"name": "media", "acl": "public-read"}), res(T_R2_MANAGED_DOMAIN, "r", {"enabled": True})),
                 ["Spaces bucket media has acl public-read; buckets are private",
                  "the R2 bucket's public r2.dev URL is enabled; keep backups private"])]))


def _document(props, key="policy"):
    try:
        return statements(props.get(key)), None
    except (ValueError, TypeError) as error:
        return [], f"the policy document does not parse ({error}); write it as IAM JSON"


def _check_any_principal(props, args):
    found, problem = _document(props)
    if problem:
        yield problem
    for statement in found:
        if statement.effect == "Allow" and statement.any_principal:
            yield (f"bucket policy statement {statement.sid or '(no Sid)'} allows "
                   f"{', '.join(sorted(statement.actions))} to any principal")


DENY_HTTP = {"Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": {"AWS": ["*"]}, "Action": ["s3:*"],
             "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"], "Condition": {"Bool": {"aws:SecureTransport": ["false"]}}}


def _policy(*statements_):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements_)})


resource_policy(
    "platform-bucketpolicy-disallow-any-principal", "Spaces and MinIO bucket policies grant nothing to any principal, in any syntax.",
    level=MANDATORY, severity=CRITICAL, category="storage",
    sources=["Checkov CKV_AWS_70 (S3 bucket policy allows everyone)", "Trivy AVD-DIG-0006"],
    fix="Grant to named users through IAM policies; keep Deny statements (deny plain HTTP) as they are.",
    types=[T_MINIO_POLICY, T_SPACES_POLICY], check=_check_any_principal,
    cases=Case(doc(res(T_MINIO_POLICY, "p", {"bucket": "b", "policy": _policy(DENY_HTTP)})),
               [(doc(res(T_MINIO_POLICY, "p", {"bucket": "b", "policy": _policy(
                   {"Sid": "A", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
                   {"Sid": "B", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::b"},
                   {"Sid": "C", "Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"})})),
                 ["bucket policy statement A allows s3:getobject to any principal",
                  "bucket policy statement B allows s3:listbucket to any principal",
                  "bucket policy statement C allows s3:putobject to any principal"])]))


def _check_iam_wildcards(props, args):
    found, problem = _document(props)
    if problem:
        yield problem
    for statement in found:
        if statement.effect == "Allow" and statement.allows("s3:deletebucket") and statement.covers_all_buckets():
            yield (f"IAM policy {props.get('name')} allows {', '.join(sorted(statement.actions))} on every "
                   "bucket; grant the actions the user needs on its own bucket and prefixes")
        elif statement.effect == "Allow" and any(a.startswith("admin:") for a in statement.actions):
            yield f"IAM policy {props.get('name')} grants MinIO admin actions"


resource_policy(
    "minio-iampolicy-disallow-full-access-all-buckets", "MinIO IAM policies never grant s3:* (or *) on every bucket, nor admin actions.",
    level=MANDATORY, severity=CRITICAL, category="storage",
    sources=["Checkov CKV_AWS_62 / CKV_AWS_63 (no * actions)", "CIS AWS Foundations 1.16 (no full */* admin policies)"],
    fix="List the s3 actions on arn:aws:s3:::<bucket>/<prefix>/* the user needs.",
    types=[T_MINIO_IAM_POLICY], check=_check_iam_wildcards,
    cases=Case(doc(res(T_MINIO_IAM_POLICY, "p", {"name": "svc", "policy": _policy(
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": ["arn:aws:s3:::b/SVC/*"]})})),
               [(doc(res(T_MINIO_IAM_POLICY, "p", {"name": "svc", "policy": _policy(
                   {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::*"},
                   {"Effect": "Allow", "Action": ["admin:*"], "Resource": ["arn:aws:s3:::*"]})})),
                 ["IAM policy svc allows s3:* on every bucket; grant the actions the user needs on its own bucket and prefixes",
                  "IAM policy svc grants MinIO admin actions"]),
                (doc(res(T_MINIO_IAM_POLICY, "p", {"name": "svc", "policy": _policy(
                    {"Effect": "Allow", "Action": "*", "Resource": "*"})})),
                 ["IAM policy svc allows * on every bucket; grant the actions the user needs on its own bucket and prefixes"])]))


def _check_spaces_key(props, args):
    grants = items(props.get("grants"))
    if not grants:
        yield f"Spaces key {props.get('name')} has no grants, which means full access to every bucket"
    for grant in grants:
        grant = mapping(grant)
        if str(grant.get("permission")) == "fullaccess":
            yield f"Spaces key {props.get('name')} has fullaccess on {grant.get('bucket') or 'every bucket'}; grant read or readwrite"
        elif not grant.get("bucket") or grant.get("bucket") == "*":
            yield f"Spaces key {props.get('name')} is granted {grant.get('permission')} on every bucket; name the bucket"


resource_policy(
    "digitalocean-spaceskey-disallow-full-access", "Spaces keys are granted read or readwrite on named buckets, never full access or every bucket.",
    level=MANDATORY, severity=HIGH, category="storage",
    sources=["DigitalOcean docs: Spaces access keys (per-bucket permissions)", "CIS Controls v8 6.8 (least privilege)"],
    fix="Give the key one grant per bucket it needs, permission read or readwrite.",
    types=[T_SPACES_KEY], check=_check_spaces_key,
    cases=Case(doc(res(T_SPACES_KEY, "k", {"name": "media", "grants": [{"bucket": "media", "permission": "readwrite"}]})),
               [(doc(res(T_SPACES_KEY, "k", {"name": "media", "grants": [{"bucket": "", "permission": "fullaccess"}]})),
                 ["Spaces key media has fullaccess on every bucket; grant read or readwrite"]),
                (doc(res(T_SPACES_KEY, "k", {"name": "media", "grants": [{"bucket": "*", "permission": "read"}]})),
                 ["Spaces key media is granted read on every bucket; name the bucket"])]))


def _token_resources(value):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if hasattr(value, "items") else None


def _check_token_scope(props, args):
    for policy in items(props.get("policies")):
        resources = _token_resources(mapping(policy).get("resources"))
        if resources is None:
            yield f"token {props.get('name')} has a policy whose resources are not a JSON object"
            continue
        for key, value in resources.items():
            key = str(key)
            if key.startswith("com.cloudflare.api.account.") and not isinstance(value, str) or \
                    key.startswith("com.cloudflare.api.account.") and value == "*":
                yield f"token {props.get('name')} is scoped to the whole account ({key}); scope it to one bucket or zone"
            elif key.endswith("*") or key == "*":
                yield f"token {props.get('name')} is scoped to all resources ({key}); scope it to one bucket or zone"


BUCKET_KEY = "com.cloudflare.edge.r2.bucket.abc_default_backups"
resource_policy(
    "cloudflare-token-disallow-account-wide-scope", "Cloudflare tokens are scoped to named buckets or zones, never a whole account or all resources.",
    level=MANDATORY, severity=HIGH, category="storage",
    sources=["Cloudflare docs: API token permissions (resource scoping)", "CIS Controls v8 6.8"],
    fix="Scope the token's policy to com.cloudflare.edge.r2.bucket.<account>_default_<bucket>.",
    types=[T_CF_ACCOUNT_TOKEN, T_CF_API_TOKEN], check=_check_token_scope,
    cases=Case(doc(res(T_CF_ACCOUNT_TOKEN, "t", {"name": "r2", "policies": [{"resources": json.dumps({BUCKET_KEY: "*"})}]})),
               [(doc(res(T_CF_ACCOUNT_TOKEN, "t", {"name": "r2", "policies": [
                   {"resources": json.dumps({"com.cloudflare.api.account.abc": "*"})},
                   {"resources": {"com.cloudflare.edge.r2.bucket.*": "*"}}]})),
                 ["token r2 is scoped to the whole account (com.cloudflare.api.account.abc); scope it to one bucket or zone",
                  "token r2 is scoped to all resources (com.cloudflare.edge.r2.bucket.*); scope it to one bucket or zone"])]))


def _check_force_destroy(props, args):
    if props.get("forceDestroy"):
        yield f"bucket {props.get('name') or props.get('bucket')} sets force_destroy; a delete would erase its objects"


resource_policy(
    "platform-bucket-disallow-force-destroy", "Buckets never set force_destroy, so deleting one cannot erase its objects.",
    level=MANDATORY, severity=HIGH, category="storage",
    sources=["Trivy AVD-DIG-0009 (digitalocean-spaces-disable-force-destroy)"],
    fix="Remove force_destroy.",
    types=[T_SPACES, T_MINIO_BUCKET], check=_check_force_destroy,
    cases=Case(doc(res(T_SPACES, "b", {"name": "media"})),
               [(doc(res(T_SPACES, "b", {"name": "media", "forceDestroy": True})), ["bucket media sets force_destroy; a delete would erase its objects"])]))


def _check_spaces_versioning(props, args):
    if not mapping(props.get("versioning")).get("enabled"):
        yield f"Spaces bucket {props.get('name')} is not versioned"


resource_policy(
    "digitalocean-spacesbucket-enable-versioning", "Spaces buckets keep object versions.",
    level=MANDATORY, severity=MEDIUM, category="storage",
    sources=["Checkov CKV_DIO_1", "Trivy AVD-DIG-0007 (digitalocean-spaces-versioning-enabled)"],
    fix="Set versioning.enabled.",
    types=[T_SPACES], check=_check_spaces_versioning,
    cases=Case(doc(res(T_SPACES, "b", {"name": "media", "versioning": {"enabled": True}})),
               [(doc(res(T_SPACES, "b", {"name": "media"})), ["Spaces bucket media is not versioned"])]))


def _check_cors(props, args):
    for rule in items(props.get("corsRules")):
        origins = [str(o) for o in items(mapping(rule).get("allowedOrigins"))]
        if any("*" in o for o in origins):
            yield f"Spaces bucket {props.get('bucket')} allows CORS from {', '.join(o for o in origins if '*' in o)}; list the sites' origins"
        elif any(o.startswith("http://") for o in origins):
            yield f"Spaces bucket {props.get('bucket')} allows CORS from a plain-HTTP origin"


resource_policy(
    "digitalocean-spacesbucket-configure-cors-origins", "Spaces CORS rules allow named HTTPS origins only.",
    level=MANDATORY, severity=MEDIUM, category="storage",
    sources=["OWASP HTML5 Security Cheat Sheet: CORS (no wildcard origins)"],
    fix="List the static sites' https:// origins.",
    types=[T_SPACES_CORS], check=_check_cors,
    cases=Case(doc(res(T_SPACES_CORS, "c", {"bucket": "media", "corsRules": [{"allowedOrigins": ["https://www.example.com"]}]})),
               [(doc(res(T_SPACES_CORS, "c", {"bucket": "media", "corsRules": [{"allowedOrigins": ["*"]}]})),
                 ["Spaces bucket media allows CORS from *; list the sites' origins"])]))


def _check_minio_versioning(args):
    versioned = {d.urn for v in by_type(args, T_MINIO_VERSIONING)
                 if mapping(v.props.get("versioningConfiguration")).get("status") == "Enabled"
                 for d in v.dependencies if d.resource_type == T_MINIO_BUCKET}
    for bucket in by_type(args, T_MINIO_BUCKET):
        if bucket.urn not in versioned:
            yield f"MinIO bucket {bucket.props.get('bucket') or bucket.name} is not versioned", bucket.urn


stack_policy(
    "minio-s3bucket-enable-versioning", "MinIO buckets keep object versions.",
    level=MANDATORY, severity=MEDIUM, category="storage",
    sources=["MinIO docs: bucket versioning", "Checkov CKV_AWS_21 (S3 versioning)"],
    fix="Add an S3BucketVersioning with status Enabled that depends on the bucket.",
    check=_check_minio_versioning,
    cases=Case(doc(res(T_MINIO_BUCKET, "certs", {"bucket": "certificates"}),
                   res(T_MINIO_VERSIONING, "certs-versioning", {"bucket": "certificates", "versioningConfiguration": {"status": "Enabled"}},
                       deps=[urn(T_MINIO_BUCKET, "certs")])),
               [(doc(res(T_MINIO_BUCKET, "certs", {"bucket": "certificates"})), ["MinIO bucket certificates is not versioned"])]))


def _bucket_of(resource):
    return str(resource.props.get("bucketName") or resource.props.get("name") or "")


def _check_r2_lifecycle(args):
    covered = set()
    for lifecycle in by_type(args, T_R2_LIFECYCLE):
        rules = [mapping(r) for r in items(lifecycle.props.get("rules"))]
        if any(r.get("enabled") and (r.get("deleteObjectsTransition") or r.get("abortMultipartUploadsTransition")) for r in rules):
            covered.add(_bucket_of(lifecycle))
    for bucket in by_type(args, T_R2):
        if _bucket_of(bucket) not in covered:
            yield f"R2 bucket {_bucket_of(bucket)} has no lifecycle rules; expire old backups and abort stale uploads", bucket.urn


stack_policy(
    "cloudflare-r2bucket-enable-lifecycle", "Every R2 bucket has enabled lifecycle rules (expiry, aborted uploads).",
    level=MANDATORY, severity=MEDIUM, category="storage",
    sources=["Cloudflare R2 docs: object lifecycles", "Checkov CKV2_AWS_61 (S3 lifecycle configuration)"],
    fix="Add an R2BucketLifecycle for the bucket (R2Backup does).",
    check=_check_r2_lifecycle,
    cases=Case(doc(res(T_R2, "b", {"name": "backups"}),
                   res(T_R2_LIFECYCLE, "l", {"bucketName": "backups", "rules": [{"enabled": True, "deleteObjectsTransition": {"condition": {"maxAge": 1}}}]})),
               [(doc(res(T_R2, "b", {"name": "backups"}),
                     res(T_R2_LIFECYCLE, "l", {"bucketName": "backups", "rules": [{"enabled": False, "deleteObjectsTransition": {}}]})),
                 ["R2 bucket backups has no lifecycle rules; expire old backups and abort stale uploads"])]))


def _check_r2_lock(args):
    if production(args.get_config() or {}) is None:
        yield MISSING_PRODUCTION, None
        return
    if not production(args.get_config()):
        return
    locked = {_bucket_of(lock) for lock in by_type(args, T_R2_LOCK)}
    for bucket in by_type(args, T_R2):
        if _bucket_of(bucket) not in locked:
            yield f"production R2 bucket {_bucket_of(bucket)} has no bucket lock; a leaked token could delete its backups", bucket.urn


stack_policy(
    "cloudflare-r2bucket-enable-lock-in-production", "Production R2 backup buckets have a bucket lock.",
    level=ADVISORY, severity=MEDIUM, category="storage",
    sources=["Cloudflare R2 docs: bucket locks", "Kredete backup rules (backups isolated from production credentials)"],
    fix="Set the R2Backup's lock days in production.",
    check=_check_r2_lock, config={"production": PRODUCTION_PROPERTY},
    cases=Case(doc(res(T_R2, "b", {"name": "backups"}), res(T_R2_LOCK, "l", {"bucketName": "backups"})),
               [(doc(res(T_R2, "b", {"name": "backups"})),
                 ["production R2 bucket backups has no bucket lock; a leaked token could delete its backups"])],
               config={"production": True}))
