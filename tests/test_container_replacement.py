"""Every container whose replacement would run two copies on one piece of host state is
replaced delete-before-create."""

from __future__ import annotations

import pytest

from components.containers import ContainerSpec, HealthCheck, Mount, PublishedPort, replaced_delete_first
from components.tiers import Tier

pytestmark = pytest.mark.fast

CONTAINER = "docker:index/container:Container"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_container_with_a_writable_mount_or_a_host_port_is_deleted_before_its_replacement(stack, synth):
    containers = synth(stack).of_type(CONTAINER)
    writable = [c for c in containers if any(not v.get("readOnly", v.get("read_only", False))
                                             for v in c["inputs"].get("volumes") or [])]
    # The stacks do run stateful containers (Prometheus' TSDB, the datastores, Grafana).
    assert any(c["name"].endswith("-prometheus") for c in writable), [c["name"] for c in writable]
    for container in containers:
        must = container in writable or bool(container["inputs"].get("ports"))
        assert container["delete_before_replace"] == must, container["name"]


def _spec(**overrides) -> ContainerSpec:
    return ContainerSpec(**{"name": "svc", "image": "nginx:1.27.3", "tier": Tier.APP, "port": 8080,
                            "memory_mb": 64, "cpus": 0.1,
                            "healthcheck": HealthCheck(command=["true"]), **overrides})


def test_read_only_mounts_alone_allow_create_before_delete():
    assert not replaced_delete_first(_spec(mounts=[Mount(host_path="/srv/a", container_path="/a")]))
    assert replaced_delete_first(_spec(), [Mount(host_path="/srv/d", container_path="/d", read_only=False)])
    assert replaced_delete_first(_spec(publish=[PublishedPort(host_port=80, container_port=8080)]))
