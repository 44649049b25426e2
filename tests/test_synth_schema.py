"""Provider-schema conformance: the schema derived from the installed SDKs, the checks made with
it on captured inputs, and a cross-check of the derivation against published schemas."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pulumi
import pulumi_digitalocean as do
import pulumi_docker as docker
import pytest

from synth import sdkschema
from synth.engine import run_program
from tests.conftest import capture_once

pytestmark = pytest.mark.fast

SHARED_SCHEMAS = Path("/work/shared/provider-schemas")


def _capture(build):
    return run_program(build, stack="test", config={}, secret_keys=[])


def test_a_wrong_nested_key_is_caught():
    def build():
        do.App("app", spec={"name": "app", "region": "fra",
                            "services": [{"name": "api", "instance_count": 1,
                                          "healthcheck": {"http_pth": "/health"}}]})

    findings = _capture(build).schema_findings()
    assert any("spec.services[0].healthCheck" in f or "spec.services[0].healthcheck" in f
               for f in findings), findings
    assert any("unknown property" in f for f in findings), findings


def test_a_wrong_enum_value_is_caught():
    # The typed SDK class refuses the value itself; a resource registered by token (as a
    # component or another language's SDK could) reaches the engine with it.
    def build():
        pulumi.CustomResource("command:remote:Command", "cmd", {
            "connection": {"host": "192.0.2.1"}, "create": "true", "logging": "everything"})

    findings = _capture(build).schema_findings()
    assert findings == [
        "urn:pulumi:test::platform::pulumi:pulumi:Stack$command:remote:Command::cmd: logging: \"everything\" is not an "
        "allowed value (one of 'stdout', 'stderr', 'stdoutAndStderr', 'none')"]


def test_a_missing_required_input_is_caught():
    # The SDK refuses a plain None; an output that resolves to nothing (as an output the
    # provider does not have would) passes it, and the engine receives no image.
    def build():
        docker.Container("c", image=pulumi.Output.from_input(None))

    findings = _capture(build).schema_findings()
    assert findings == [
        "urn:pulumi:test::platform::pulumi:pulumi:Stack$docker:index/container:Container::c: image: required input of "
        "ContainerArgs is missing"]


def test_a_wrong_type_and_an_unknown_name_are_caught():
    findings = sdkschema.check_resource("digitalocean:index/vpc:Vpc",
                                        {"region": 3, "ipRange": "10.0.0.0/20", "cidr": "x"})
    assert findings == [
        "cidr: unknown property of VpcArgs (known: description, ipRange, name, region)",
        "region: expected a string, got 3"]


def test_provider_configuration_is_decoded_and_checked():
    good = {"host": "ssh://deploy@192.0.2.1", "sshOpts": json.dumps(["-o", "Port=22"])}
    assert sdkschema.check_resource("pulumi:providers:docker", good) == []
    bad = {"host": "ssh://deploy@192.0.2.1", "sshOpts": json.dumps([22])}
    assert sdkschema.check_resource("pulumi:providers:docker", bad) == [
        "sshOpts[0]: expected a string, got 22"]


def test_invoke_arguments_are_checked():
    assert sdkschema.check_invoke("digitalocean:index/getDatabaseCa:getDatabaseCa",
                                  {"clusterId": "abc"}) == []
    assert sdkschema.check_invoke("digitalocean:index/getDatabaseCa:getDatabaseCa",
                                  {"clusterID": "abc"}) == [
        "clusterID: unknown property of getDatabaseCa (known: clusterId)"]
    assert sdkschema.check_invoke("digitalocean:index/getNothing:getNothing", {}) == [
        "digitalocean:index/getNothing:getNothing: no installed provider SDK defines this function"]


def test_unknown_and_secret_values_pass_and_open_enums_accept_strings():
    assert sdkschema.check_resource("digitalocean:index/vpc:Vpc", {"region": "[unknown]"}) == []
    assert sdkschema.check_resource("digitalocean:index/vpc:Vpc", {"region": "[secret]"}) == []
    # Droplet sizes are a string or the enum: a size newer than the SDK's list is allowed.
    assert sdkschema.check_resource("digitalocean:index/droplet:Droplet",
                                    {"image": "ubuntu-24-04-x64", "name": "d", "region": "fra1",
                                     "size": "s-99vcpu-new"}) == []


def test_outputs_are_the_sdk_getters():
    assert "vpcUrn" in sdkschema.output_names("digitalocean:index/vpc:Vpc")
    assert "reservedIpUrn" in sdkschema.output_names("digitalocean:index/reservedIp:ReservedIp")
    assert "urn" not in sdkschema.output_names("digitalocean:index/vpc:Vpc")
    assert "imageId" in sdkschema.output_names("docker:index/remoteImage:RemoteImage")
    assert sdkschema.output_names("platform:components:DropletStack") is None


# --- cross-check against the providers' schemas (only where /work/shared is present) ---------

def _schema_files() -> dict[str, dict]:
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip("no /work/shared/provider-schemas on this machine (the program never needs it)")
    schemas = {}
    for path in sorted((SHARED_SCHEMAS / "sdk-derived").glob("*.schema.json.gz")):
        with gzip.open(path, "rt") as handle:
            document = json.load(handle)
        schemas[document["name"]] = document
    return schemas


def _shape(spec: dict, types: dict) -> str:
    """A published schema property as a comparable string."""
    if "oneOf" in spec:
        return "|".join(sorted(_shape(s, types) for s in spec["oneOf"]))
    ref = spec.get("$ref", "")
    if ref.startswith("#/types/"):
        target = types[ref[len("#/types/"):]]
        if target.get("x-documentedValues"):
            # Values read from cloudflare's docs, not an SDK enum (see the schemas' README).
            return "string"
        if "enum" in target:
            return "enum(" + ",".join(sorted(str(e["value"]) for e in target["enum"])) + ")"
        return "object:" + ref.rsplit(":", 1)[-1]
    if ref in ("pulumi.json#/Any", "pulumi.json#/Json"):
        return "any"
    if ref.startswith("pulumi.json#/"):
        return "asset"
    kind = spec.get("type")
    if kind == "array":
        return f"array<{_shape(spec['items'], types)}>"
    if kind == "object":
        return f"map<{_shape(spec.get('additionalProperties', {'$ref': 'pulumi.json#/Any'}), types)}>"
    return kind or "any"


def _ours(type_: sdkschema.Type) -> str:
    if type_.kind == "union":
        return "|".join(sorted(_ours(o) for o in type_.options))
    if type_.kind == "enum":
        return "enum(" + ",".join(sorted(str(v) for v in type_.values)) + ")"
    if type_.kind == "object":
        return "object:" + type_.cls.__name__
    if type_.kind in ("array", "map"):
        return f"{type_.kind}<{_ours(type_.item)}>"
    return {"resource": "string"}.get(type_.kind, type_.kind)


def _compare(ours: sdkschema.ObjectSchema, published: dict, types: dict, where: str,
             seen: set, problems: list) -> None:
    properties = published.get("inputProperties", published.get("properties", {}))
    required = set(published.get("requiredInputs", published.get("required", [])))
    if set(ours.properties) != set(properties):
        problems.append(f"{where}: names differ: {sorted(set(ours.properties) ^ set(properties))}")
    if ours.required != required:
        problems.append(f"{where}: required differ: {sorted(ours.required ^ required)}")
    for name in sorted(set(ours.properties) & set(properties)):
        mine, theirs = _ours(ours.properties[name]), _shape(properties[name], types)
        if mine != theirs:
            problems.append(f"{where}.{name}: {mine} != {theirs}")
        stack = [(ours.properties[name], properties[name])]
        while stack:
            type_, spec = stack.pop()
            if type_.kind in ("array", "map"):
                stack.append((type_.item, spec.get("items") or spec.get("additionalProperties") or {}))
            elif type_.kind == "object" and type_.cls not in seen:
                seen.add(type_.cls)
                ref = spec.get("$ref", "")[len("#/types/"):]
                if ref in types:
                    _compare(sdkschema.object_schema(type_.cls), types[ref], types,
                             f"{where}.{name}", seen, problems)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_derivation_matches_the_shared_schemas_for_every_type_the_stacks_use(stack, tmp_path):
    schemas = _schema_files()
    capture = capture_once(stack)
    problems: list[str] = []
    seen: set = set()
    tokens = sorted({r["type"] for r in capture.resources if r["custom"]})
    for token in tokens:
        package = token.split(":")[2] if token.startswith("pulumi:providers:") else token.split(":")[0]
        document = schemas[package]
        published = document["provider"] if token.startswith("pulumi:providers:") else document["resources"][token]
        ours = sdkschema.resource_schema(token)
        _compare(ours, published, document["types"], token, seen, problems)
    for token in sorted({i["token"] for i in capture.invokes}):
        document = schemas[token.split(":")[0]]
        ours = sdkschema.invoke_schema(token).arguments
        _compare(ours, document["functions"][token]["inputs"], document["types"], token, seen, problems)
    assert problems == [], "\n".join(problems)
    assert len(tokens) > 20
