"""MinioBucket: private, versioned, TLS-only, and each service's user limited to its prefixes."""

from __future__ import annotations

import json

import pulumi
import pulumi_minio as minio
import pytest

from components.minio_bucket import MinioBucket, MinioBucketArgs, MinioConsumer, consumer_policy
from policy.offline import evaluate

pytestmark = pytest.mark.fast

CONSUMERS = [MinioConsumer("compliance", ["CERTIFICATES/", "PFC_UPLOADS/"]),
             MinioConsumer("core", ["EMPLOYER_CODE_REQUEST_DOCUMENT/", "TUTORIAL_VIDEOS/", "TUTORIAL_THUMBNAILS/"]),
             MinioConsumer("notifications", ["CERTIFICATES/"], write=False)]


@pytest.fixture(scope="module")
def state():
    from synth.engine import run_program
    from synth.state import State

    def build():
        provider = minio.Provider("minio", minio_server="127.0.0.1:19000", minio_user="admin",
                                  minio_password=pulumi.Output.secret("p"), minio_ssl=True)
        MinioBucket("pencom-docs", MinioBucketArgs(bucket="pencom-documents", consumers=CONSUMERS,
                                                   provider=provider, protect=True))

    return State(run_program(build, stack="prod", config={}, secret_keys=[]).to_json())


def test_bucket_is_private_versioned_protected_and_tls_only(state):
    bucket = state.named("pencom-docs-bucket")
    assert bucket["inputs"]["acl"] == "private" and bucket["inputs"]["forceDestroy"] is False
    assert bucket["protect"] and bucket["retain_on_delete"]
    assert state.named("pencom-docs-versioning")["inputs"]["versioningConfiguration"] == {"status": "Enabled"}
    policy = json.loads(state.named("pencom-docs-policy")["inputs"]["policy"])
    statement = policy["Statement"][0]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": ["false"]}}
    # The program runs as stack prod; the policies that depend on it are told so.
    mandatory = [v for v in evaluate(state.document, {"all": {"production": True}}) if v["level"] == "mandatory"
                 and "protect" not in v["policy"] and "backup" not in v["policy"]]
    assert mandatory == []


def test_one_user_per_service_limited_to_its_prefixes(state):
    users = {u["inputs"]["name"] for u in state.of_type("minio:index/iamUser:IamUser")}
    assert users == {"pencom-documents-compliance", "pencom-documents-core", "pencom-documents-notifications"}
    for consumer in CONSUMERS:
        policy = json.loads(state.named(f"pencom-docs-{consumer.service}-access")["inputs"]["policy"])
        objects = policy["Statement"][0]["Resource"]
        assert objects == [f"arn:aws:s3:::pencom-documents/{p}*" for p in consumer.prefixes]
        assert ("s3:PutObject" in policy["Statement"][0]["Action"]) is consumer.write
        assert policy["Statement"][1]["Condition"]["StringLike"]["s3:prefix"] == [f"{p}*" for p in consumer.prefixes]
    assert all(u["secret_inputs"] == ["secret"] for u in state.of_type("minio:index/iamUser:IamUser"))


@pytest.mark.parametrize("prefix", ["", "CERTIFICATES", "/CERTIFICATES/", "*/"])
def test_prefixes_are_checked(prefix):
    with pytest.raises(ValueError):
        consumer_policy("b", MinioConsumer("x", [prefix] if prefix else []))
