"""Component shape: a component creates its children in its constructor and registers its
outputs last; nothing is added under it afterwards, by itself or by a stack (a Docker host's
containers, files and inits are its ``Workload``; a cluster's trusted sources, its args)."""

from __future__ import annotations

import pulumi
import pytest

from components import tiers
from components.containers import ContainerSpec, HealthCheck
from components.dockerhost import DatastoreInit, Workload
from components.internal_ca import ClientRequest, InternalCa, ServerRequest
from components.onprem import OnPremVps, OnPremVpsArgs

pytestmark = pytest.mark.fast


class Late(list):
    """Names of resources registered under a component after its ``register_outputs``;
    ``seen`` counts every child registered, so a watch that saw nothing cannot pass."""

    seen = 0


@pytest.fixture
def late_children(monkeypatch) -> Late:
    """Names of resources registered under a component after its ``register_outputs``."""
    late = Late()
    done: set[int] = set()
    register_outputs = pulumi.ComponentResource.register_outputs
    resource_init = pulumi.Resource.__init__

    def record_outputs(self, outputs):
        done.add(id(self))
        return register_outputs(self, outputs)

    def record_child(self, t, name, custom, props=None, opts=None, *args, **kwargs):
        if opts is not None and opts.parent is not None:
            late.seen += 1
            if id(opts.parent) in done:
                late.append(name)
        return resource_init(self, t, name, custom, props, opts, *args, **kwargs)

    monkeypatch.setattr(pulumi.ComponentResource, "register_outputs", record_outputs)
    monkeypatch.setattr(pulumi.Resource, "__init__", record_child)
    return late


def test_the_watch_sees_a_late_child(run_component, late_children):
    def build():
        parent = pulumi.ComponentResource("test:index:Parent", "parent")
        parent.register_outputs({})
        pulumi.ComponentResource("test:index:Child", "late", opts=pulumi.ResourceOptions(parent=parent))

    run_component(build)
    assert late_children == ["late"]


def test_internal_ca_issues_every_certificate_before_its_outputs(run_component, late_children):
    def build():
        ca = InternalCa("ca", common_name="test CA", servers=[
            ServerRequest("data", ("localhost",), ("10.0.0.3", "127.0.0.1")),
            ServerRequest("minio", ("localhost",))])
        assert set(ca.certificates) == {"data", "minio"}

    state = run_component(build)
    assert late_children == []
    assert state.named("ca-data-cert") and state.named("ca-minio-csr")
    assert state.named("ca-data-csr")["inputs"]["ipAddresses"] == ["10.0.0.3", "127.0.0.1"]


def test_internal_ca_refuses_a_server_named_twice(run_component):
    with pytest.raises(ValueError, match="servers named twice: \\['data'\\]"):
        run_component(lambda: InternalCa("ca", common_name="test CA", servers=[
            ServerRequest("data", ("a",)), ServerRequest("data", ("b",))]))


def test_internal_ca_issues_client_certificates_for_client_auth_only(run_component, late_children):
    def build():
        ca = InternalCa("ca", common_name="test CA", servers=[ServerRequest("data", ("localhost",))],
                        clients=[ClientRequest("data", "data.test.internal")])
        assert set(ca.client_certificates) == {"data"}

    state = run_component(build)
    assert late_children == []
    csr = state.named("ca-client-data-csr")["inputs"]
    assert csr["subject"]["commonName"] == "data.test.internal" and csr["dnsNames"] == ["data.test.internal"]
    assert state.named("ca-client-data-cert")["inputs"]["allowedUses"] == ["digital_signature", "client_auth"]
    assert "client_auth" not in state.named("ca-data-cert")["inputs"]["allowedUses"]


def test_internal_ca_refuses_a_client_named_twice(run_component):
    with pytest.raises(ValueError, match="clients named twice: \\['a'\\]"):
        run_component(lambda: InternalCa("ca", common_name="test CA", clients=[
            ClientRequest("a", "a.x"), ClientRequest("a", "b.x")]))


def test_a_docker_host_builds_its_workload_before_its_outputs(run_component, late_children):
    def build():
        host = OnPremVps("vps", OnPremVpsArgs(
            address="10.0.0.3", private_key=pulumi.Output.secret("k"),
            role=tiers.HostRole(tier=tiers.Tier.APP, ssh_cidrs=("10.0.0.1/32",)),
            workload=Workload([ContainerSpec(
                name="db", image="postgres:17.2", tier=tiers.Tier.DATA, memory_mb=256, cpus=0.5,
                healthcheck=HealthCheck(command=["pg_isready"]))],
                inits=[DatastoreInit("vps-db-init", "db", "SELECT 1;", ready="pg_isready", apply="psql",
                                     path="/etc/platform/init.sql")])))
        assert set(host.containers) == {"db"} and set(host.inits) == {"vps-db-init"}

    state = run_component(build)
    assert late_children == [] and late_children.seen > 5
    assert state.named("vps-docker-firewall") and state.named("vps-db") and state.named("vps-db-init")
    assert state.named("vps-db")["urn"] in state.all_dependencies(state.named("vps-db-init"))


def test_no_component_of_a_whole_stack_gets_a_child_after_its_outputs(late_children):
    """The whole program, all four products (staging holds them all): every host, cluster, CA,
    bucket and backup is complete when it registers its outputs."""
    from synth.run import synth_stack

    capture = synth_stack("staging")
    products = {r["name"] for r in capture["resources"] if r["type"].startswith("platform:products:")}
    assert products == {"kro", "giv", "pencom", "vedfinance"}
    assert late_children == [], f"registered after their parent's outputs: {late_children}"
    assert late_children.seen > 400
