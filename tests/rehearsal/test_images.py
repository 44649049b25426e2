"""Stand-in planning: every image reference the staging stack names has a stand-in with the
captured contract, the ones with no real server say so, and bad references are refused. Pure
Python (no daemon): marker ``fast``. The real builds, runs and pulls are in test_images_real.py."""

from __future__ import annotations

import pytest

from rehearsal import standin_plan
from rehearsal.image_contracts import ImageError, contracts_from_state, split_reference
from rehearsal.standin_plan import plan_standins
from tests.conftest import synth_once

pytestmark = pytest.mark.fast

UNPROVEN = {"mongo", "minio/minio", "grafana/grafana-oss", "gcr.io/cadvisor/cadvisor"}


@pytest.fixture(scope="module")
def staging_state():
    return synth_once("staging", reveal_secrets=True)


def remote_image_names(state) -> set[str]:
    return {r["inputs"]["name"] for r in state["resources"]
            if r["type"] == "docker:index/remoteImage:RemoteImage"}


def test_every_staging_reference_has_a_standin_under_the_same_reference(staging_state):
    contracts = contracts_from_state(staging_state)
    standins = plan_standins(contracts)
    assert {s.reference for s in standins} == remote_image_names(staging_state)
    assert len(standins) == len(remote_image_names(staging_state))
    for standin in standins:
        assert standin.kind in standin_plan.KINDS, standin
        assert standin.recipe and standin.note
        repo = standin.reference.rsplit(":", 1)[0]
        assert standin.proven is (repo not in UNPROVEN), standin
        if not standin.proven:
            assert standin.note.startswith("not proven"), standin


def test_real_servers_stand_in_for_the_upstream_images(staging_state):
    kinds = {s.reference.rsplit(":", 1)[0]: s.kind for s in plan_standins(contracts_from_state(staging_state))}
    assert kinds["postgres"] == "postgres" and kinds["redis"] == "redis"
    assert kinds["pgvector/pgvector"] == "postgres-pgvector"
    assert kinds["prom/prometheus"] == "prometheus" and kinds["prom/alertmanager"] == "alertmanager"
    assert kinds["prom/node-exporter"] == "node-exporter" and kinds["prom/blackbox-exporter"] == "blackbox"
    assert kinds["nginxinc/nginx-unprivileged"] == "nginx" and kinds["ubuntu/squid"] == "squid"
    assert kinds["ghcr.io/pencom-ehub/core"] == "app"
    assert kinds["registry.digitalocean.com/kro/kro-frontend"] == "app"


def test_contracts_carry_the_captured_ports_checks_users_and_env(staging_state):
    by_ref = {c.reference: c for c in contracts_from_state(staging_state)}
    alertmanager = by_ref["prom/alertmanager:v0.27.0"]
    assert alertmanager.ports == (9093,)  # from the health check URL: nothing is published
    assert alertmanager.users == ("65534:65534",)
    assert ("CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9093/-/healthy") in alertmanager.healthchecks
    assert "/alertmanager" in alertmanager.data_paths
    assert len(alertmanager.containers) == 4  # one per monitored product
    core = by_ref["ghcr.io/pencom-ehub/core:2026.11.1"]
    assert core.ports == (4000,) and core.health_paths == ("/health",)
    assert {"DATABASE_URL", "REDIS_URL", "PORT"} <= set(core.env_keys)
    assert core.users == ("node",)
    squid = by_ref["ubuntu/squid:6.6-24.04_edge"]
    assert squid.ports == tuple(range(3128, 3137))


def test_an_application_stand_in_bakes_its_ports_health_path_and_env_names(staging_state):
    standin = next(s for s in plan_standins(contracts_from_state(staging_state))
                   if s.reference == "ghcr.io/v-edfinance/api:2026.11.3")
    assert "STANDIN_PORTS=3000" in standin.dockerfile
    assert "STANDIN_HEALTH=/api/health" in standin.dockerfile
    assert "DATABASE_URL" in standin.dockerfile and "JWT_SECRET" in standin.dockerfile


@pytest.mark.parametrize("reference,expected", [
    ("postgres:17.2-bookworm", ("registry-1.docker.io", "library/postgres", "17.2-bookworm")),
    ("postgres", ("registry-1.docker.io", "library/postgres", "latest")),
    ("prom/prometheus:v2.55.1", ("registry-1.docker.io", "prom/prometheus", "v2.55.1")),
    ("docker.io/library/redis:7", ("registry-1.docker.io", "library/redis", "7")),
    ("ghcr.io/pencom-ehub/core:2026.11.1", ("ghcr.io", "pencom-ehub/core", "2026.11.1")),
    ("registry.digitalocean.com/kro/kro-admin:1", ("registry.digitalocean.com", "kro/kro-admin", "1")),
    ("localhost:5000/x:y", ("localhost:5000", "x", "y")),
])
def test_references_resolve_as_a_docker_daemon_resolves_them(reference, expected):
    assert split_reference(reference) == expected


def test_a_digest_reference_is_refused():
    with pytest.raises(ImageError, match="digest"):
        split_reference("postgres@sha256:" + "0" * 64)


def _state(*containers):
    resources = []
    for name, ref, inputs in containers:
        resources.append({"type": "docker:index/remoteImage:RemoteImage", "name": f"{name}-image",
                          "provider": "p", "inputs": {"name": ref}})
        resources.append({"type": "docker:index/container:Container", "name": name,
                          "provider": "p", "inputs": inputs})
    return {"resources": resources}


def test_an_unknown_image_without_an_http_health_check_has_no_standin_and_says_which():
    state = _state(("h-worker", "ghcr.io/acme/worker:1", {"command": ["run"]}),
                   ("h-api", "ghcr.io/acme/api:1", {"healthcheck": {"tests": [
                       "CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/ready"]}}))
    with pytest.raises(ImageError) as err:
        plan_standins(contracts_from_state(state))
    assert "ghcr.io/acme/worker:1" in str(err.value) and "h-worker" in str(err.value)
    assert "acme/api" not in str(err.value)


def test_two_registries_sharing_a_repository_path_are_refused():
    state = _state(("a", "quay.io/prom/prometheus:v1", {}), ("b", "prom/prometheus:v1", {}))
    with pytest.raises(ImageError, match="one repository prom/prometheus:v1"):
        plan_standins(contracts_from_state(state))


def test_a_container_without_its_image_resource_is_named():
    state = {"resources": [{"type": "docker:index/container:Container", "name": "h-x",
                            "provider": "p", "inputs": {}}]}
    with pytest.raises(ImageError, match="container h-x: no RemoteImage named h-x-image"):
        contracts_from_state(state)


def test_a_changed_standin_file_changes_the_recipe(monkeypatch, tmp_path, staging_state):
    before = {s.reference: s.recipe for s in plan_standins(contracts_from_state(staging_state))}
    copy = tmp_path / "standins"
    import shutil

    shutil.copytree(standin_plan.STANDINS_DIR, copy)
    (copy / "app" / "server.js").write_text((copy / "app" / "server.js").read_text() + "\n// x\n")
    monkeypatch.setattr(standin_plan, "STANDINS_DIR", copy)
    after = {s.reference: s.recipe for s in plan_standins(contracts_from_state(staging_state))}
    changed = {ref for ref in before if before[ref] != after[ref]}
    assert changed == {s.reference for s in plan_standins(contracts_from_state(staging_state))
                       if s.kind == "app"}
