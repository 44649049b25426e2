"""Every container whose replacement would run two copies on one piece of host state (a data
directory, a host port, a fixed address on its network) is replaced delete-before-create;
every other one create-before-delete, gated by the provider's
``wait`` on its healthcheck with a bounded ``wait_timeout``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from components.containers import (WAIT_TIMEOUT_MAX_S, ContainerSpec, HealthCheck, Mount, PublishedPort,
                                   health_wait_timeout_s, replaced_delete_first)
from components.tiers import Tier

pytestmark = pytest.mark.fast

CONTAINER = "docker:index/container:Container"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_container_with_a_writable_mount_a_host_port_or_a_fixed_address_is_deleted_before_its_replacement(
        stack, synth):
    containers = synth(stack).of_type(CONTAINER)
    writable = [c for c in containers if any(not v.get("readOnly", v.get("read_only", False))
                                             for v in c["inputs"].get("volumes") or [])]
    # The stacks do run stateful containers (Prometheus' TSDB, the datastores, Grafana).
    assert any(c["name"].endswith("-prometheus") for c in writable), [c["name"] for c in writable]
    fixed = [c["name"] for c in containers if any(n.get("ipv4Address") for n in c["inputs"]["networksAdvanced"])]
    # The blackbox probers are pinned for their web exemption. KRO's backend is not: its
    # database flows match its own network's subnet, so it is replaced create-first.
    assert f"kro-{stack}-blackbox" in fixed and f"kro-{stack}-backend" not in fixed, fixed
    backend = next(c for c in containers if c["name"] == f"kro-{stack}-backend")
    assert [n["name"] for n in backend["inputs"]["networksAdvanced"]] == [f"kro-{stack}-backend"]
    assert backend["delete_before_replace"] is False
    for container in containers:
        must = container in writable or bool(container["inputs"].get("ports")) or container["name"] in fixed
        assert container["delete_before_replace"] == must, container["name"]


def _spec(**overrides) -> ContainerSpec:
    return ContainerSpec(**{"name": "svc", "image": "nginx:1.27.3", "tier": Tier.APP, "port": 8080,
                            "memory_mb": 64, "cpus": 0.1,
                            "healthcheck": HealthCheck(command=["true"]), **overrides})


def test_read_only_mounts_alone_allow_create_before_delete():
    assert not replaced_delete_first(_spec(mounts=[Mount(host_path="/srv/a", container_path="/a")]))
    assert replaced_delete_first(_spec(), [Mount(host_path="/srv/d", container_path="/d", read_only=False)])
    assert replaced_delete_first(_spec(publish=[PublishedPort(host_port=80, container_port=8080)]))
    assert replaced_delete_first(_spec(), fixed_address=True)


def _seconds(go: str) -> int:
    assert go.endswith("s") and go[:-1].isdigit(), go
    return int(go[:-1])


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_container_is_health_gated_with_a_bounded_wait_from_its_healthcheck(stack, synth):
    containers = synth(stack).of_type(CONTAINER)
    stateless = [c for c in containers if not c["delete_before_replace"]]
    # KRO's api and frontends, Pencom's gateways and V-EdFinance's apps switch over without downtime.
    assert {f"kro-{stack}-backend", f"kro-{stack}-frontend", f"pencom-{stack}-edge-api-gateway",
            f"pencom-{stack}-edge-external-gateway"} <= {c["name"] for c in stateless}
    for container in containers:
        inputs = container["inputs"]
        check = inputs["healthcheck"]
        budget = _seconds(check["startPeriod"]) + (check["retries"] + 1) * (
            _seconds(check["interval"]) + _seconds(check["timeout"]))
        assert inputs["wait"] is True, container["name"]
        assert inputs["waitTimeout"] == min(WAIT_TIMEOUT_MAX_S, budget), container["name"]


def test_the_wait_covers_docker_deciding_either_way_and_is_capped():
    # Defaults: 30 s start period, then 4 cycles of a 30 s interval and a 5 s timeout.
    assert health_wait_timeout_s(HealthCheck(command=["true"])) == 30 + 4 * 35
    quick = HealthCheck(command=["true"], interval_s=2, timeout_s=2, retries=2, start_period_s=0)
    assert health_wait_timeout_s(quick) == 12
    slow = HealthCheck(command=["true"], interval_s=400, timeout_s=120, retries=20, start_period_s=900)
    assert health_wait_timeout_s(slow) == WAIT_TIMEOUT_MAX_S == 600


@pytest.mark.parametrize("interval_s,timeout_s", [(600, 5), (480, 120)])
def test_a_first_probe_the_capped_wait_cannot_see_is_refused(interval_s, timeout_s):
    """A healthy container is seen healthy after interval + its first probe: at the cap, every
    deploy of it would time out with the old container still serving."""
    with pytest.raises(ValidationError) as error:
        HealthCheck(command=["true"], interval_s=interval_s, timeout_s=timeout_s)
    assert error.value.errors()[0]["loc"] == ("interval_s",)
    assert f"interval_s + timeout_s is {interval_s + timeout_s} s" in str(error.value)
    assert HealthCheck(command=["true"], interval_s=interval_s - 10, timeout_s=timeout_s - 1)


def test_the_policy_pack_and_the_program_share_the_wait_bound():
    from policy.rules import containers as container_policies

    assert container_policies.WAIT_TIMEOUT_MAX_S == WAIT_TIMEOUT_MAX_S
