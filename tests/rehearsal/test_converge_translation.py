"""The translation of captured Docker inputs into Engine API calls (as pulumi-docker makes them),
and the converge's parsing of what a script reports."""

from __future__ import annotations

import pytest
from docker.types import LogConfig

from rehearsal import dockerapi
from rehearsal.capture import StackCapture, capture
from rehearsal.converge import CHANGES
from rehearsal.dockerapi import TranslationError, container_create_kwargs, network_create_kwargs

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def staging() -> StackCapture:
    return capture("staging")


def test_every_input_the_staging_containers_use_is_translated(staging):
    """Fails when the stack starts using a Container input the translator does not handle."""
    used: set[str] = set()
    for s in staging.steps:
        if s.kind == "container":
            used |= set(s.inputs)
            container_create_kwargs(s.inputs, name=s.name)  # raises on anything unknown
        elif s.kind == "network":
            network_create_kwargs(s.inputs)
    assert used <= dockerapi.CONTAINER_INPUTS
    # Every sub-field the staging containers use is read by the translator (checked below).
    assert {"memory", "cpus", "healthcheck", "networksAdvanced", "volumes", "capabilities"} <= used


def test_translation_of_a_staging_container_matches_the_provider(staging):
    step = next(s for s in staging.steps if s.kind == "container" and s.inputs.get("memoryReservation"))
    i = step.inputs
    kw, networks = container_create_kwargs(i, name="c")
    assert kw["mem_limit"] == i["memory"] * 1024 * 1024  # the provider's memory is MB
    assert kw["mem_reservation"] == i["memoryReservation"] * 1024 * 1024
    assert kw["nano_cpus"] == int(round(float(i["cpus"]) * 1e9))
    assert kw["read_only"] is bool(i.get("readOnly"))
    assert kw["restart_policy"] == {"Name": i["restart"], "MaximumRetryCount": 0}
    assert kw["image"] == i["image"] and kw["user"] == i.get("user", kw.get("user"))
    assert [n["name"] for n in networks] == [n["name"] for n in i["networksAdvanced"]]
    assert kw["labels"] == {e["label"]: e["value"] for e in i["labels"]}


def test_translation_of_every_field():
    inputs = {
        "image": "postgres:17", "envs": ["A=1"], "command": ["postgres", "-c", "x=y"],
        "entrypoint": ["/entry"], "user": "999:999", "memory": 512, "memoryReservation": 256,
        "memorySwap": 1024, "shmSize": 64, "cpus": "1.5",
        "ports": [{"internal": 5432, "external": 15432, "ip": "10.201.0.13", "protocol": "tcp"},
                  {"internal": 53, "protocol": "udp"}],
        "volumes": [{"hostPath": "/srv/a", "containerPath": "/a", "readOnly": True},
                    {"volumeName": "data", "containerPath": "/data"}],
        "mounts": [{"target": "/m", "source": "/srv/m", "type": "bind", "readOnly": True}],
        "capabilities": {"adds": ["CHOWN"], "drops": ["ALL"]},
        "securityOpts": ["no-new-privileges:true"], "readOnly": True,
        "tmpfs": {"/tmp": "rw,noexec,size=64m"},
        "healthcheck": {"tests": ["CMD", "pg_isready"], "interval": "1m30s", "timeout": "5s",
                        "startPeriod": "500ms", "retries": 3},
        "networksAdvanced": [{"name": "n", "aliases": ["db"], "ipv4Address": "172.31.250.10"}],
        "restart": "unless-stopped", "logDriver": "json-file",
        "logOpts": {"max-size": "10m"}, "labels": [{"label": "k", "value": "v"}],
        "privileged": False, "mustRun": True,
    }
    kw, networks = container_create_kwargs(inputs, name="db-1234567")
    assert kw["name"] == "db-1234567" and kw["image"] == "postgres:17"
    assert kw["environment"] == ["A=1"] and kw["command"] == ["postgres", "-c", "x=y"]
    assert kw["entrypoint"] == ["/entry"] and kw["user"] == "999:999"
    assert kw["mem_limit"] == 512 * 2**20 and kw["mem_reservation"] == 256 * 2**20
    assert kw["memswap_limit"] == 1024 * 2**20 and kw["shm_size"] == 64 * 2**20
    assert kw["nano_cpus"] == 1_500_000_000
    assert kw["ports"] == {"5432/tcp": [("10.201.0.13", 15432)], "53/udp": [("0.0.0.0", None)]}
    assert kw["volumes"] == ["/srv/a:/a:ro", "data:/data"]
    assert kw["mounts"][0]["Target"] == "/m" and kw["mounts"][0]["ReadOnly"] is True
    assert kw["cap_add"] == ["CHOWN"] and kw["cap_drop"] == ["ALL"]
    assert kw["security_opt"] == ["no-new-privileges:true"] and kw["read_only"] is True
    assert kw["tmpfs"] == {"/tmp": "rw,noexec,size=64m"}
    assert kw["healthcheck"] == {"test": ["CMD", "pg_isready"], "interval": 90_000_000_000,
                                 "timeout": 5_000_000_000, "start_period": 500_000_000, "retries": 3}
    assert networks == [{"name": "n", "aliases": ["db"], "ipv4_address": "172.31.250.10"}]
    assert kw["restart_policy"]["Name"] == "unless-stopped"
    assert isinstance(kw["log_config"], LogConfig) and kw["log_config"]["Config"] == {"max-size": "10m"}
    assert kw["labels"] == {"k": "v"} and kw["privileged"] is False and kw["init"] is False


def test_unknown_or_malformed_inputs_are_refused():
    with pytest.raises(TranslationError, match=r"\['gpus'\]"):
        container_create_kwargs({"image": "x", "gpus": "all"}, name="c")
    with pytest.raises(TranslationError, match="no image"):
        container_create_kwargs({}, name="c")
    with pytest.raises(TranslationError, match="may not be empty"):
        container_create_kwargs({"image": "x", "command": ["a", ""]}, name="c")
    with pytest.raises(TranslationError, match="Go duration"):
        container_create_kwargs({"image": "x", "healthcheck": {"tests": ["NONE"], "interval": "5 s"}}, name="c")
    with pytest.raises(TranslationError, match="anonymous"):
        container_create_kwargs({"image": "x", "volumes": [{"containerPath": "/v"}]}, name="c")
    with pytest.raises(TranslationError, match="no translation"):
        network_create_kwargs({"name": "n", "scope": "swarm"})


def test_network_translation():
    kw = network_create_kwargs({"name": "edge", "driver": "bridge",
                                "options": {"com.docker.network.bridge.name": "pencom-edge"},
                                "ipamConfigs": [{"subnet": "172.31.250.0/24", "ipRange": "172.31.250.128/25"}]})
    assert kw["name"] == "edge" and kw["options"] == {"com.docker.network.bridge.name": "pencom-edge"}
    pool = kw["ipam"]["Config"][0]
    assert pool["Subnet"] == "172.31.250.0/24" and pool["IPRange"] == "172.31.250.128/25"


def test_go_durations():
    assert dockerapi.go_duration_ns("30s") == 30 * 10**9
    assert dockerapi.go_duration_ns("2h1m") == (2 * 3600 + 60) * 10**9
    assert dockerapi.go_duration_ns("0") == 0


def test_change_count_is_the_scripts_last_summary_line():
    out = "changed: /etc/x\nplatform-setup: 1 changes\n"
    assert CHANGES.findall(out) == ["1"]
    assert CHANGES.findall("echo platform-setup: 3 changes later\n") == []
