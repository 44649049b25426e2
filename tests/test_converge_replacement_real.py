"""The rehearsal converge replaces a container as `pulumi up` with the Docker provider does,
against Debian's dockerd (in a network namespace of its own):

- create-before-delete: the new container, under a new name, runs and is healthy while the old
  one still runs; the old one is removed only at the end of the run;
- ``wait``: a new container that never becomes healthy fails its step with the healthcheck's
  output within ``waitTimeout``; the old one keeps running and nothing is deleted; the next run
  that replaces the step removes the failed one too;
- delete-first (``delete_before_replace``): the old container is gone before the new one exists.

The converge talks to the daemon through the docker library (its SSH transport is the lab's
business, replaced here by the daemon's socket).
"""

from __future__ import annotations

import pytest

from rehearsal.capture import Host, StackCapture, Step
from rehearsal.converge import PENDING_DELETES, Converger
from tests.test_host_delivery import IMAGE, dockerd  # noqa: F401 - the daemon fixture

pytestmark = pytest.mark.realtool

URN = "urn:pulumi:lab::platform::docker:index/container:Container::lab-api"


def _inputs(version: str, healthcheck: list[str]) -> dict:
    return {"image": IMAGE, "command": ["sleep", "infinity"],
            "volumes": [{"hostPath": "/usr", "containerPath": "/usr", "readOnly": True}],
            "labels": [{"label": "platform.service", "value": "api"},
                       {"label": "platform.version", "value": version}],
            "healthcheck": {"tests": ["CMD", *healthcheck], "interval": "1s", "timeout": "5s",
                            "retries": 1, "startPeriod": "0s"},
            "mustRun": True, "wait": True, "waitTimeout": 15, "restart": "unless-stopped"}


HEALTHY = ["true"]
BROKEN = ["sh", "-c", "echo 'GET /health: connection refused' >&2; exit 1"]


def _converge(daemon, workdir, run: int, inputs: dict, *, delete_first: bool = False,
              observe=None) -> tuple[list, Converger]:
    import docker

    host = Host(name="box", product="lab", kind="onprem", address="192.0.2.1", user="deploy")
    step = Step(urn=URN, name="lab-api", kind="container", host="box", inputs=inputs,
                delete_before_replace=delete_first)
    capture = StackCapture(stack="lab", hosts={"box": host}, steps=[step], products=["lab"])
    converger = Converger(capture, workdir, run, workers=1, expect_changes=run > 1)
    client = docker.DockerClient(base_url=daemon.host, timeout=120)
    converger.docker = lambda _host: client
    if observe is not None:
        original = converger._delete_replaced

        def delete_replaced(results):
            observe(client)  # the run's steps are done; the replaced container is not yet gone
            return original(results)

        converger._delete_replaced = delete_replaced
    return converger.converge(), converger


def _api(client) -> dict[str, dict]:
    found = {}
    for c in client.containers.list(all=True, filters={"label": "platform.service=api"}):
        c.reload()
        found[c.name] = {"version": c.labels["platform.version"], "status": c.status,
                         "health": c.attrs["State"].get("Health", {}).get("Status")}
    return found


def test_a_replacement_runs_next_to_the_old_container_until_the_run_ends(tmp_path, dockerd):  # noqa: F811
    (first,), _ = _converge(dockerd, tmp_path, 1, _inputs("1", HEALTHY))
    assert first.status == "ok", first
    seen = {}
    (second,), converger = _converge(dockerd, tmp_path, 2, _inputs("2", HEALTHY),
                                     observe=lambda client: seen.update(_api(client)))
    assert second.status == "ok" and second.changes == 1, second
    # At the end of the steps both ran: the new one already healthy, the old one still serving.
    assert sorted((v["version"], v["status"], v["health"]) for v in seen.values()) == [
        ("1", "running", "healthy"), ("2", "running", "healthy")], seen
    import docker

    after = _api(docker.DockerClient(base_url=dockerd.host))
    assert [v["version"] for v in after.values()] == ["2"], after
    assert set(after) != {n for n, v in seen.items() if v["version"] == "1"}, "a new name"
    assert not converger.state.get(PENDING_DELETES)


def test_a_new_container_that_never_becomes_healthy_fails_and_the_old_one_keeps_running(tmp_path, dockerd):  # noqa: F811
    import docker

    client = docker.DockerClient(base_url=dockerd.host)
    _converge(dockerd, tmp_path, 1, _inputs("1", HEALTHY))
    (bad,), converger = _converge(dockerd, tmp_path, 2, _inputs("bad", BROKEN))
    assert bad.status == "failed", bad
    assert "failed to be in healthy state within 15 s" in bad.error, bad.error
    assert "last healthcheck: exit 1: GET /health: connection refused" in bad.error, bad.error
    state = _api(client)
    assert sorted((v["version"], v["status"], v["health"]) for v in state.values()) == [
        ("1", "running", "healthy"), ("bad", "running", "unhealthy")], state
    assert converger.state[URN]["failed"], "the failed container is remembered for the next run"
    # The fix: the next replacement removes both the old one and the failed one.
    (fixed,), _ = _converge(dockerd, tmp_path, 3, _inputs("3", HEALTHY))
    assert fixed.status == "ok", fixed
    assert [v["version"] for v in _api(client).values()] == ["3"], _api(client)


def test_a_delete_first_replacement_removes_the_old_container_before_the_new_one_exists(
        tmp_path, dockerd, monkeypatch):  # noqa: F811
    import docker

    import rehearsal.dockerapi as dockerapi

    client = docker.DockerClient(base_url=dockerd.host)
    _converge(dockerd, tmp_path, 1, _inputs("1", HEALTHY), delete_first=True)
    seen_at_create = []
    create = dockerapi.create_container

    def observed_create(client_, inputs, **kwargs):
        seen_at_create.append(sorted(v["version"] for v in _api(client_).values()))
        return create(client_, inputs, **kwargs)

    monkeypatch.setattr(dockerapi, "create_container", observed_create)
    (second,), _ = _converge(dockerd, tmp_path, 2, _inputs("2", HEALTHY), delete_first=True)
    assert second.status == "ok", second
    assert seen_at_create == [[]], "the old container was gone when the new one was created"
    assert [v["version"] for v in _api(client).values()] == ["2"]


def test_a_first_create_that_never_becomes_healthy_is_recorded_and_replaced_by_the_next_run(
        tmp_path, dockerd):  # noqa: F811
    import docker

    client = docker.DockerClient(base_url=dockerd.host)
    (first,), converger = _converge(dockerd, tmp_path, 1, _inputs("bad", BROKEN))
    assert first.status == "failed" and "last healthcheck: exit 1" in first.error, first
    assert converger.state[URN]["inputs"] == "failed-create", converger.state[URN]
    # The next run does not collide with the failed container's name: it replaces it.
    (second,), _ = _converge(dockerd, tmp_path, 2, _inputs("2", HEALTHY))
    assert second.status == "ok", second
    assert [v["version"] for v in _api(client).values()] == ["2"], _api(client)


# --- the staging stack's own containers, as the capture translates them ---------------------
#
# The replacement order is the program's (`delete_before_replace` of the captured resource) and
# everything that decides whether two copies can run at once is the captured input: the
# network with its subnet, the fixed address an egress allow-list pins a container to, the
# alias, the published ports. Only what the test daemon cannot have is swapped: the image (the
# borrowed-/usr one, a `sleep`), the healthcheck's command and pace, the user (no passwd in the
# image) and host paths (temporary directories).

STAGING_CONTAINERS = ("kro-staging-backend", "pencom-staging-edge-api-gateway",
                      "pencom-staging-edge-blackbox", "pencom-staging-data-redis")


@pytest.fixture(scope="module")
def staging_capture():
    from rehearsal.capture import capture

    return capture("staging", products=["kro", "pencom"])


def _runnable(step: Step, version: str, tmp_path, healthcheck: list[str]) -> Step:
    import copy

    inputs = copy.deepcopy(step.inputs)
    inputs.update(image=IMAGE, command=["sleep", "infinity"], user="65534:65534", waitTimeout=15)
    inputs["healthcheck"] = {"tests": ["CMD", *healthcheck], "interval": "1s", "timeout": "5s",
                             "retries": 1, "startPeriod": "0s"}
    volumes = [{"hostPath": "/usr", "containerPath": "/usr", "readOnly": True}]
    for i, volume in enumerate(inputs.get("volumes") or []):
        if not volume.get("readOnly"):
            (tmp_path / f"data-{i}").mkdir(exist_ok=True, mode=0o777)
            volumes.append({**volume, "hostPath": str(tmp_path / f"data-{i}")})
    inputs["volumes"] = volumes
    # Published ports keep their numbers; the node's private address is not in this namespace.
    inputs["ports"] = [{**p, "ip": "127.0.0.1"} for p in inputs.get("ports") or []]
    inputs["labels"] = [*inputs.get("labels", []), {"label": "platform.version", "value": version}]
    inputs.pop("envs", None)
    return Step(urn=step.urn, name=step.name, kind="container", host="box", inputs=inputs,
                delete_before_replace=step.delete_before_replace)


def _staging_converge(daemon, workdir, run: int, steps: list[Step]):
    import docker

    host = Host(name="box", product="lab", kind="onprem", address="192.0.2.1", user="deploy")
    capture = StackCapture(stack="lab", hosts={"box": host}, steps=steps, products=["lab"])
    converger = Converger(capture, workdir, run, workers=1, expect_changes=run > 1)
    client = docker.DockerClient(base_url=daemon.host, timeout=120)
    converger.docker = lambda _host: client
    return converger.converge(), client


@pytest.mark.parametrize("name", STAGING_CONTAINERS)
def test_a_staging_container_is_replaced_in_the_order_its_capture_says_and_the_replacement_succeeds(
        name, staging_capture, tmp_path, dockerd, monkeypatch):  # noqa: F811
    """The captured order, observed: create-before-delete means the old container runs and is
    healthy when the new one is created (and both run until the end of the run); delete-first
    means it is gone by then. Either way the replacement succeeds: a container that cannot run
    next to its replacement (a fixed address, a host port, a data directory) must be captured
    delete-first, or every deploy of it would fail."""
    import rehearsal.dockerapi as dockerapi

    step = next(s for s in staging_capture.steps if s.kind == "container" and s.name == name)
    network = next(s for s in staging_capture.steps if s.kind == "network" and s.host == step.host
                   and s.inputs["name"] in {n["name"] for n in step.inputs["networksAdvanced"]})
    net = Step(urn=network.urn, name=network.name, kind="network", host="box", inputs=network.inputs)

    def steps(version: str) -> list[Step]:
        container = _runnable(step, version, tmp_path, HEALTHY)
        container.depends = [net.urn]
        return [net, container]

    service = next(label["value"] for label in step.inputs["labels"] if label["label"] == "platform.service")

    def running(client) -> list[tuple[str, str, str | None]]:
        found = []
        for c in client.containers.list(all=True, filters={"label": f"platform.service={service}"}):
            c.reload()
            found.append((c.labels["platform.version"], c.status, c.attrs["State"].get("Health", {}).get("Status")))
        return sorted(found)

    (tmp_path / "w").mkdir()
    (_, first), client = _staging_converge(dockerd, tmp_path / "w", 1, steps("1"))
    assert first.status == "ok", first
    seen_at_create = []
    create = dockerapi.create_container

    def observed_create(client_, inputs, **kwargs):
        seen_at_create.append(running(client_))
        return create(client_, inputs, **kwargs)

    monkeypatch.setattr(dockerapi, "create_container", observed_create)
    (_, second), _ = _staging_converge(dockerd, tmp_path / "w", 2, steps("2"))
    assert second.status == "ok", (name, second.error)
    if step.delete_before_replace:
        assert seen_at_create == [[]], (name, "delete-first: the old container is gone first", seen_at_create)
    else:
        assert seen_at_create == [[("1", "running", "healthy")]], (name, seen_at_create)
        assert "create-before-delete" in second.changed[0], second.changed
    assert running(client) == [("2", "running", "healthy")], running(client)
