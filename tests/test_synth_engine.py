"""The capture records what the real engine would see: parents, dependencies, options, secrets."""

from __future__ import annotations

import json
import subprocess
import sys

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random
import pytest

from synth.engine import PROJECT_ROOT
from synth.mock_monitor import SynthMocks, UnansweredInvoke
from synth.values import SECRET_MASK

pytestmark = pytest.mark.fast


class _Probe(pulumi.ComponentResource):
    def __init__(self, name: str, protect: bool):
        super().__init__("platform:test:Probe", name, None)
        child = pulumi.ResourceOptions(parent=self)
        password = random.RandomPassword(f"{name}-password", length=24, special=False, opts=child)
        vpc = do.Vpc(f"{name}-vpc", region="fra1", ip_range="10.10.0.0/20", opts=child)
        self.cluster = do.DatabaseCluster(
            f"{name}-db", engine="pg", version="16", size="db-s-1vcpu-1gb", node_count=1,
            region="fra1", private_network_uuid=vpc.id,
            opts=pulumi.ResourceOptions(parent=self, protect=protect, retain_on_delete=protect,
                                        import_="existing-cluster-id" if protect else None),
        )
        do.DatabaseUser(f"{name}-user", cluster_id=self.cluster.id, name="app",
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[password]))
        do.DatabaseDb(f"{name}-app-db", cluster_id=self.cluster.id, name="app",
                      opts=pulumi.ResourceOptions(parent=self))
        pulumi.export("password", password.result)
        pulumi.export("ca", do.get_database_ca_output(cluster_id=self.cluster.id).certificate)
        self.register_outputs({})


def test_parents_dependencies_and_options_are_captured(run_component):
    state = run_component(lambda: _Probe("probe", protect=True))
    component = state.named("probe")
    cluster = state.named("probe-db")
    vpc = state.named("probe-vpc")
    user = state.named("probe-user")
    assert component["custom"] is False and cluster["custom"] is True
    assert cluster["parent"] == component["urn"]
    assert cluster["dependencies"] == [vpc["urn"]]
    assert set(user["dependencies"]) == {cluster["urn"], state.named("probe-password")["urn"]}
    assert cluster["protect"] and cluster["retain_on_delete"]
    assert cluster["import_id"] == "existing-cluster-id"
    assert not vpc["protect"] and vpc["import_id"] is None
    assert cluster["inputs"]["privateNetworkUuid"] == "probe-vpc-id"


def test_unprotected_run_captures_false_options(run_component):
    state = run_component(lambda: _Probe("probe", protect=False))
    assert state.named("probe-db")["protect"] is False
    assert state.named("probe-db")["retain_on_delete"] is False


def test_generated_secrets_stay_secret_in_outputs(run_component):
    state = run_component(lambda: _Probe("probe", protect=False))
    assert state.outputs["password"] == SECRET_MASK
    assert "BEGIN CERTIFICATE" in state.outputs["ca"]


def test_secret_inputs_are_masked_and_listed(run_component):
    def build():
        do.DatabaseUser("u", cluster_id="c", name=pulumi.Output.secret("hidden-name"))

    state = run_component(build)
    user = state.named("u")
    assert user["inputs"]["name"] == SECRET_MASK
    assert user["secret_inputs"] == ["name"]
    assert "hidden-name" not in json.dumps(state.document)


def test_unanswered_invoke_names_the_token(run_component):
    def build():
        do.get_droplet_output(name="nothing")

    with pytest.raises(UnansweredInvoke, match="digitalocean:index/getDroplet:getDroplet"):
        run_component(build)


def test_invoke_answers_can_be_overridden_per_test(run_component):
    mocks = SynthMocks(invoke_answers={
        "digitalocean:index/getDatabaseCa:getDatabaseCa": lambda a: {"certificate": "OVERRIDE"},
    })
    state = run_component(lambda: _Probe("probe", protect=False), mocks=mocks)
    assert state.outputs["ca"] == "OVERRIDE"


def test_runs_do_not_leak_state_between_them(run_component):
    first = run_component(lambda: _Probe("one", protect=False))
    second = run_component(lambda: _Probe("two", protect=False))
    assert {r["name"] for r in second.resources}.isdisjoint({r["name"] for r in first.resources})


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_cli_writes_the_documented_json_shape(stack, tmp_path):
    out = tmp_path / "state.json"
    md = tmp_path / "state.md"
    result = subprocess.run([sys.executable, "-m", "synth", stack, "--json", str(out),
                             "--markdown", str(md)], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["project"] == "platform" and document["stack"] == stack
    keys = {"urn", "type", "name", "custom", "parent", "provider", "inputs", "secret_inputs",
            "dependencies", "protect", "retain_on_delete", "delete_before_replace",
            "ignore_changes", "import_id"}
    for resource in document["resources"]:
        assert keys <= set(resource)
    assert document["outputs"]["environment"] == stack
    assert f"stack {stack}" in result.stdout
    assert md.read_text().startswith(f"# Desired state of stack `{stack}`")


def test_secret_digests_belong_to_their_own_resource_and_runs_are_identical():
    """Registrations arrive on several threads; each digest must be filed under its resource
    (a diff would otherwise report secrets changing that did not)."""
    import json

    from synth.run import synth_stack

    first, second = synth_stack("prod"), synth_stack("prod")
    for resource in first["resources"]:
        assert set(resource.get("secret_digests", {})) == set(resource["secret_inputs"]), resource["name"]
    # The whole document, invokes included, so two synths of one commit diff to nothing.
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_a_secret_config_value_passed_to_an_invoke_is_masked_in_the_capture():
    """The SDK sends invoke arguments unwrapped, so a secret config value (the SSH CA's key
    handed to tls.get_public_key) would reach the capture, and the PR preview, in clear."""
    import pulumi_tls as tls

    from synth.engine import run_program

    def build():
        key = pulumi.Config("platform").require_secret("ca")
        pulumi.export("pub", tls.get_public_key_output(private_key_openssh=key).public_key_openssh)
        tls.get_public_key_output(private_key_openssh="not-a-secret-key")

    capture = run_program(build, stack="test", config={"platform:ca": "very-secret-ca-key"},
                          secret_keys=["platform:ca"])
    document = json.dumps(capture.to_json(reveal=True))
    assert "very-secret-ca-key" not in document
    args = sorted(i["args"]["privateKeyOpenssh"] for i in capture.invokes)
    assert args == sorted([SECRET_MASK, "not-a-secret-key"])
