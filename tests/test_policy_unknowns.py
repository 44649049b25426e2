"""Policies under preview judge the fields they read: an unknown value elsewhere in a resource
(a container's image digest) no longer turns a mandatory policy into a "can't run" advisory,
and every advisory names the resource URN and the unknown field (policy/rules/unknowns.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from policy.offline import evaluate, has_mandatory
from policy.rules import POLICIES
from policy.rules.fixtures import container, doc, urn
from policy.rules.base import T_CONTAINER
from synth.engine import PROJECT_ROOT

pytestmark = pytest.mark.fast

TLS_OFF = "platform-connection-disallow-tls-disabled"
CURL_K = {"tests": ["CMD", "curl", "-fsk", "https://10.0.0.3/health"]}


def _policy(name):
    return [p for p in POLICIES if p.name == name]


def test_an_unknown_image_does_not_hide_a_curl_k_healthcheck():
    found = evaluate(doc(container(image="[unknown]", healthcheck=CURL_K)), {TLS_OFF: "mandatory"},
                     policies=_policy(TLS_OFF))
    assert [(v["level"], v["message"]) for v in found] == [
        ("mandatory", "healthcheck.tests disables TLS or its verification (certificate checks switched off)")]


def test_a_scan_reports_what_it_found_then_the_unknown_it_could_not_judge():
    envs = ["[unknown]", "DATABASE_URL=postgresql://u@db.example.com/x?sslmode=disable"]
    found = evaluate(doc(container(envs=envs)), {}, policies=_policy(TLS_OFF))
    assert [(v["level"], v["urn"] or v["message"].rsplit(": ", 1)[-1]) for v in found] == [
        ("mandatory", urn(T_CONTAINER, "c")),
        ("advisory", f"string value at .envs.0 of {urn(T_CONTAINER, 'c')} can't be known during preview")]
    assert found[0]["message"] == "envs[1] (DATABASE_URL) disables TLS or its verification (sslmode=disable)"


def test_a_field_the_policy_needs_still_stops_it_and_the_advisory_names_urn_and_field():
    found = evaluate(doc(container(image="[unknown]")), {}, policies=_policy("docker-image-disallow-unpinned-tag"))
    assert len(found) == 1 and found[0]["level"] == "advisory"
    assert f"string value at .image of {urn(T_CONTAINER, 'c')} can't be known during preview" in found[0]["message"]


def test_the_staging_preview_enforces_the_scanning_policies_and_names_a_urn_in_every_advisory(tmp_path, stack_document, write_stack):
    document = stack_document("staging")
    # A password as an argument now stops at the config boundary too (exit 2 at its key path,
    # tests/test_config_review_holes.py), so the preview runs on the committed file: the
    # plaintext-secrets rule itself is proven by its cases and tests/test_policy_parsers.py.
    path = write_stack(document, "staging")
    run = subprocess.run([sys.executable, "-m", "synth", "staging", "--stack-file", str(path), "--preview",
                          "--policy"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-2000:]
    assert "platform-resource-disallow-plaintext-secrets" in out
    cannot = [line for line in out.splitlines() if "can't run policy" in line]
    assert cannot and all(" of urn:pulumi:staging::" in line for line in cannot)
    # Before the fix: 1,838 advisories, 142 per TLS policy, every one stopped at the first unknown
    # (the image digest). Now a scanning policy is stopped only by an unknown it could have
    # judged (a script or env entry built from an address not yet allocated).
    for name in ("platform-connection-configure-postgres-verify-full", "platform-connection-configure-mongodb-tls",
                 "platform-connection-configure-redis-tls", TLS_OFF, "platform-resource-disallow-plaintext-secrets"):
        mine = [line for line in cannot if f"'{name}'" in line]
        assert mine and not [line for line in mine if " value at .image " in line or " value at .connection " in line]
        assert len(mine) <= 90, (name, len(mine))
    assert len(cannot) < 1500


def test_each_policy_gets_its_own_view_of_a_shared_resource():
    """The analyzer hands every stack policy the same PolicyResource objects: a scan's skips in
    one policy must not become the next policy's advisory."""
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

    from policy.rules.unknowns import UnknownFieldError, known_view, raise_skipped

    first = known_view(unknown_checking_proxy({"envs": [UNKNOWN_STRING_VALUE], "name": "x"}), "urn:a")
    assert first["name"] == "x" and sorted(first) == ["envs", "name"]
    list(first["envs"])
    with pytest.raises(UnknownFieldError) as raised:
        raise_skipped(first)
    assert raised.value.message == "string value at .envs.0 of urn:a can't be known during preview"
    second = known_view(first, "urn:a")
    assert dict(second)["name"] == "x"
    raise_skipped(second)
