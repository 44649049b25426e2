"""The synth is no kinder than the real engine: preview mode with unknown outputs, only outputs
the providers have, provider-shaped invented values, unique URNs, no Pulumi URN as a provider
input, schema conformance of both committed stacks in both modes, and no side effects."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pulumi
import pulumi_digitalocean as do
import pulumi_random as random
import pytest

from synth.engine import PROJECT_ROOT, run_program
from synth.mock_monitor import DuplicateUrn, MockDataError, PulumiUrnInput, SynthMocks
from synth.run import synth_capture
from tests.conftest import capture_once

pytestmark = pytest.mark.fast

COMMAND = "command:remote:Command"

def _stack_capture(stack: str, preview: bool):
    return capture_once(stack, preview=preview)  # one synth per stack and mode per session


def _unknown_scripts(capture) -> list[str]:
    document = capture.to_json(reveal=True)
    return sorted(r["name"] for r in document["resources"] if r["type"] == COMMAND
                  and "[unknown]" in repr((r["inputs"].get("stdin"), r["inputs"].get("create"))))


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_committed_stacks_conform_in_both_modes(stack, preview):
    capture = _stack_capture(stack, preview)  # raises on a duplicate URN or a urn:pulumi: input
    assert capture.duplicate_urns == [] and capture.pulumi_urn_inputs == []
    assert capture.schema_findings() == []
    assert capture.to_json().get("preview", False) is preview
    resources = capture.to_json()["resources"]
    assert len(resources) > 100


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_preview_leaves_scripts_built_from_new_resources_unknown(stack):
    unknown = _unknown_scripts(_stack_capture(stack, True))
    assert _unknown_scripts(_stack_capture(stack, False)) == []
    # The file deliveries of certificates and keys, every backup's credentials and every
    # datastore init depend on resources that do not exist before the first up. Pencom's
    # admin-session log scripts deliver the session CA (and the collector's certificate and
    # key) that the program's own tls resources create; every management endpoint's WireGuard
    # script, its generated key; every session archive's install, its bucket token.
    delivery = re.compile(r"-(files|secrets)-|-session-(shipping|collector)$|-setup-wireguard$|-session-archive-install$")
    assert {n for n in unknown if delivery.search(n)} and {n for n in unknown if n.endswith("-backup-credentials")}
    assert all(delivery.search(n) or n.endswith(("-backup-credentials", "-init")) for n in unknown), unknown
    # A service's plain config is its own resource: known, so a preview shows its diff.
    assert f"kro-{stack}-files-prometheus" not in unknown and f"kro-{stack}-files-alertmanager" not in unknown
    if stack == "staging":
        # the two point-in-time jobs add their credentials, Pencom's four session-log scripts
        # their TLS material, its mutual-TLS terminator and three sidecars their secrets (a
        # certificate travels with its key, so their nginx.conf stays known, as V-EdFinance's
        # pg_hba.conf does), the four management endpoints (KRO, GIV's ops droplet, Pencom's
        # edge, V-EdFinance) their keys, the four session archives their tokens
        assert len(unknown) == 57
        assert sorted(n for n in unknown if n.endswith("-session-archive-install")) == [
            f"{p}-{stack}-session-archive-install" for p in ("giv", "kro", "pencom", "vedfinance")]
        assert f"vedfinance-{stack}-files-postgres" not in unknown
        assert f"pencom-{stack}-app-files-mtls-gateway" not in unknown


def test_readme_count_of_unknown_scripts_is_in_the_preview_json():
    """The README's figure is checkable from ``--json``: the scripts are secret (masked), so the
    document counts unknowns on the revealed inputs, by name only."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    match = re.search(r"in staging, (\d+) of the (\d+) remote-command scripts", readme)
    assert match, "README lost the sentence on unknown scripts in preview"
    capture = _stack_capture("staging", True)
    document = capture.to_json()
    commands = document["preview_unknowns"]["by_type"][COMMAND]
    assert (commands["inputs"]["stdin"], commands["resources"]) == (int(match[1]), int(match[2]))
    assert commands["inputs"]["stdin"] == len(_unknown_scripts(capture))
    unknown_urns = {urn for urn, names in document["preview_unknowns"]["resources"].items()
                    if "stdin" in names}
    assert {r["name"] for r in document["resources"] if r["urn"] in unknown_urns} == set(
        _unknown_scripts(capture))
    # Names and counts only: no secret value leaks through the summary.
    assert "[secret]" not in repr(document["preview_unknowns"])
    assert "preview_unknowns" not in _stack_capture("staging", False).to_json()


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_containers_show_their_image(stack):
    document = _stack_capture(stack, False).to_json()
    images = {r["urn"]: r["inputs"]["name"] for r in document["resources"]
              if r["type"] == "docker:index/remoteImage:RemoteImage"}
    containers = [r for r in document["resources"] if r["type"] == "docker:index/container:Container"]
    assert containers
    for container in containers:
        assert container["inputs"]["image"] in images.values(), container["name"]
        assert set(images) & set(container["dependencies"]), container["name"]


def test_preview_is_a_dry_run_and_skips_applies_on_new_resources():
    seen: dict = {"dry_run": [], "applied": []}

    def build():
        seen["dry_run"].append(pulumi.runtime.is_dry_run())
        vpc = do.Vpc("net", region="fra1", ip_range="10.10.0.0/20")
        adopted = do.Vpc("old", region="fra1", opts=pulumi.ResourceOptions(import_="vpc-uuid"))
        vpc.vpc_urn.apply(lambda urn: seen["applied"].append(("new", urn)))
        adopted.vpc_urn.apply(lambda urn: seen["applied"].append(("adopted", urn)))
        pulumi.export("region", vpc.region)
        pulumi.export("id", vpc.id)

    preview = run_program(build, stack="test", config={}, secret_keys=[], preview=True)
    assert seen == {"dry_run": [True], "applied": [("adopted", "do:vpc:vpc-uuid")]}
    assert preview.outputs == {"region": "fra1", "id": "[unknown]"}

    seen.update(dry_run=[], applied=[])
    up = run_program(build, stack="test", config={}, secret_keys=[])
    assert seen["dry_run"] == [False]
    assert sorted(seen["applied"]) == [("adopted", "do:vpc:vpc-uuid"), ("new", "do:vpc:net-id")]
    assert up.outputs == {"region": "fra1", "id": "net-id"}


def test_invented_urns_have_digitaloceans_shape():
    def build():
        droplet = do.Droplet("web", image="ubuntu-24-04-x64", region="fra1", size="s-1vcpu-1gb")
        ip = do.ReservedIp("web-ip", region="fra1")
        do.ProjectResources("project", project="p", resources=[droplet.droplet_urn, ip.reserved_ip_urn])

    capture = run_program(build, stack="test", config={}, secret_keys=[])
    resources = next(r for r in capture.resources if r["name"] == "project")["inputs"]["resources"]
    droplet_urn, ip_urn = resources
    assert droplet_urn.startswith("do:droplet:") and droplet_urn.split(":")[2].isdigit()
    assert ip_urn.startswith("do:reservedip:203.0.113.")


def test_a_pulumi_urn_as_a_provider_input_is_an_error():
    def build():
        ip = do.ReservedIp("web-ip", region="fra1")
        do.ProjectResources("project", project="p", resources=[ip.urn])

    with pytest.raises(PulumiUrnInput, match=r"ProjectResources::project: resources\[0\]"):
        run_program(build, stack="test", config={}, secret_keys=[])


def test_mock_data_may_answer_only_outputs_the_sdk_has():
    mocks = SynthMocks(resource_outputs={"digitalocean:index/vpc:Vpc": lambda n, i: {"urn": "do:vpc:x"}})
    with pytest.raises(MockDataError, match="answers urn for digitalocean:index/vpc:Vpc.*vpcUrn"):
        run_program(lambda: do.Vpc("net", region="fra1"), stack="test", config={}, secret_keys=[],
                    mocks=mocks)


class _Box(pulumi.ComponentResource):
    def __init__(self, name: str):
        super().__init__("platform:test:Box", name, None)
        random.RandomPassword("secret", length=16, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})


def test_a_duplicate_urn_names_both_registrations():
    # URNs carry the parent's type, not its name: two boxes' children collide.
    with pytest.raises(DuplicateUrn) as error:
        run_program(lambda: [_Box("a"), _Box("b")], stack="test", config={}, secret_keys=[])
    message = str(error.value)
    assert "platform:test:Box$random:index/randomPassword:RandomPassword::secret" in message
    assert "platform:test:Box::a" in message and "platform:test:Box::b" in message


def _synth_file(document: dict, write_stack, preview: bool = False):
    path = write_stack(document, "staging")
    return synth_capture("staging", stack_file=path, preview=preview)


def test_two_read_waivers_for_one_service_are_refused(stack_document, write_stack):
    from stacks.errors import ConfigError

    document = stack_document("staging")
    waivers = document["config"]["platform:pencom"]["read_waivers"]
    second = {**copy.deepcopy(waivers[0]), "name": "second-waiver", "env": "SECOND_DATABASE_URL"}
    waivers.append(second)
    with pytest.raises((DuplicateUrn, ConfigError)) as error:
        _synth_file(document, write_stack)
    assert "external-gateway" in str(error.value)


def test_a_service_named_like_a_monitoring_container_is_refused(stack_document, write_stack):
    from stacks.errors import ConfigError

    document = stack_document("staging")
    services = document["config"]["platform:pencom"]["edge_services"]
    services.append({**copy.deepcopy(services[0]), "name": "grafana"})
    with pytest.raises((DuplicateUrn, ConfigError)) as error:
        _synth_file(document, write_stack)
    assert "grafana" in str(error.value)


def test_init_script_names_are_checked_in_preview_too(stack_document, write_stack):
    document = stack_document("staging")
    document["config"]["platform:vedfinance"]["extensions"] = ["vector; DROP DATABASE x"]
    with pytest.raises(Exception, match="vector; DROP DATABASE x"):
        _synth_file(document, write_stack, preview=True)


# Caches that other tests write while this one runs beside them (pytest-xdist), not the synth.
TEST_CACHES = {"__pycache__", ".pytest_cache", ".hypothesis"}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not TEST_CACHES & set(p.parts)}


def test_a_synth_writes_nothing_but_its_targets(tmp_path):
    workdir, tmpdir, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    for d in (workdir, tmpdir, out):
        d.mkdir()
    project_before = _tree(PROJECT_ROOT)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(PROJECT_ROOT),
           "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "synth", "staging", "--preview", "--json", str(out / "s.json"),
         "--markdown", str(out / "s.md")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["s.json", "s.md"]
    written = json.loads((out / "s.json").read_text())
    assert written["preview_unknowns"]["by_type"][COMMAND]["inputs"]["stdin"] > 0
    assert list(workdir.iterdir()) == [] and list(tmpdir.iterdir()) == []
    assert _tree(PROJECT_ROOT) == project_before
