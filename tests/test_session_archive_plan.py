"""The admin-session archive in the synthesized stacks: one per product, on the host that holds
its session records, locked for the backups' retention, its token scoped to its bucket, its
credentials never a plain input; and the lab's emulation of its lock."""

from __future__ import annotations

import json

import pytest

from tests.conftest import synth_once

pytestmark = pytest.mark.fast

ARCHIVE = "platform:components:SessionArchive"
COMMAND = "command:remote:Command"


def _by_type(state: dict, type_: str) -> list[dict]:
    return [r for r in state["resources"] if r["type"] == type_]


@pytest.mark.parametrize("stack, products", [("staging", {"kro", "giv", "pencom", "vedfinance"}),
                                             ("prod", {"kro", "giv", "pencom"})])
def test_every_product_archives_its_sessions_from_the_host_that_holds_them(stack, products):
    state = synth_once(stack)
    archives = {r["name"]: r for r in _by_type(state, ARCHIVE)}
    assert sorted(name.split("-")[0] for name in archives) == sorted(products), sorted(archives)
    hosts = {r["inputs"]["prefix"] for r in archives.values()}
    # Pencom's collector is its edge; every other product has one SSH host.
    assert any(h.endswith("-edge") and h.startswith("pencom-") for h in hosts), hosts
    installs = {r["name"]: r for r in _by_type(state, COMMAND) if r["name"].endswith("-session-archive-install")}
    assert len(installs) == len(products)
    for install in installs.values():
        assert install["inputs"]["stdin"] == "[secret]", "the install script holds the token's secret"
        assert install["inputs"]["create"] == "sudo -n bash -s", "the script is stdin, never an argument"


def test_the_lock_covers_every_object_for_the_retention_and_the_token_one_bucket():
    state = synth_once("prod")
    locks = {r["name"]: r["inputs"] for r in _by_type(state, "cloudflare:index/r2BucketLock:R2BucketLock")
             if r["name"].endswith("-session-archive-lock")}
    archives = {r["name"]: r["inputs"] for r in _by_type(state, ARCHIVE)}
    assert len(locks) == len(archives) == 3
    for name, inputs in archives.items():
        rule, = locks[f"{name}-lock"]["rules"]
        assert rule["enabled"] and rule["prefix"] == "" and rule["condition"]["type"] == "Age"
        assert rule["condition"]["maxAgeSeconds"] == inputs["lockDays"] * 86400 and inputs["lockDays"] >= 30
    buckets = {r["name"]: r for r in _by_type(state, "cloudflare:index/r2Bucket:R2Bucket")
               if r["name"].endswith("-session-archive-bucket")}
    assert len(buckets) == 3 and all(b["protect"] and b["retain_on_delete"] for b in buckets.values())
    # Deleting the lock resource would lift the lock: in prod it is protected like the bucket.
    guarded = [r for r in state["resources"] if r["name"].endswith(("-session-archive-lock", "-session-archive-lifecycle"))]
    assert len(guarded) == 6 and all(r["protect"] for r in guarded)
    assert not any(r["protect"] for r in synth_once("staging")["resources"] if "-session-archive-" in r["name"])
    tokens = [r for r in _by_type(state, "cloudflare:index/accountToken:AccountToken")
              if r["name"].endswith("-session-archive-token")]
    assert len(tokens) == 3
    for token in tokens:
        policy, = token["inputs"]["policies"]
        resources = json.loads(policy["resources"])
        assert len(resources) == 1 and next(iter(resources)).endswith(token["inputs"]["name"].removeprefix("r2-sessions-"))


def test_the_revealed_install_writes_the_credentials_to_a_0600_file_not_an_argument():
    state = synth_once("staging", reveal_secrets=True)
    install = next(r for r in _by_type(state, COMMAND) if r["name"] == "kro-staging-session-archive-install")
    script = install["inputs"]["stdin"]
    assert "put_file /etc/platform/session-archive/rclone.env 0600 root:root" in script, script[:2000]
    assert "RCLONE_CONFIG_ARCHIVE_SECRET_ACCESS_KEY=" in script
    assert "--s3-secret-access-key" not in script and "rclone config create" not in script


def test_the_lab_locks_each_whole_bucket_lock_and_no_restic_bucket():
    from rehearsal.services import locked_buckets

    state = synth_once("staging")
    locked = dict(locked_buckets(state))
    archives = {r["inputs"]["bucket"]: r["inputs"]["lockDays"] for r in _by_type(state, ARCHIVE)}
    assert locked == archives


@pytest.mark.parametrize("product, key", [("vedfinance", "databases"), ("pencom", "databases")])
def test_a_database_named_sessions_is_refused_before_its_bucket_meets_the_archives(product, key, stack_document,
                                                                                    write_stack):
    import subprocess
    import sys

    from synth.engine import PROJECT_ROOT

    document = stack_document("staging")
    document["config"][f"platform:{product}"][key][0]["name"] = "sessions"
    run = subprocess.run([sys.executable, "-m", "synth", "staging", "--stack-file", str(write_stack(document, "staging"))],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"platform:{product}.{key}[0] (sessions).name: its backup bucket would be <backup.bucket>-sessions" \
        in run.stderr, run.stderr[-2000:]
