"""The invariants every product's plan keeps in the one shape ``stacks.provision`` creates
(``stacks.plan.ProductPlan``): ``check_plan`` raises AssertionError naming what breaks one.
Used by ``tests/test_product_plans.py`` on the committed stacks and by ``tests/test_plans.py``
on generated configs."""

from __future__ import annotations

import dataclasses
import re

from stacks.plan import HOST_KINDS, Call, ProductPlan, Ref, Step
from stacks.provision_kinds import STEPS, VALUES
from stacks.wiring import backup_job_name


def walk(value, path="plan"):
    """Every value inside a plan, with where it sits."""
    yield path, value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from walk(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


DATASTORE_IMAGES = re.compile(r"(^|/)(postgres|mongo|redis|minio)[:/@]")


def _kwargs(value) -> dict:
    return value.kwargs() if isinstance(value, (Call, Step)) else {}


def _workload(host: Step) -> dict:
    return _kwargs(host.kwargs().get("workload"))


def _refs(value) -> list[Ref]:
    return [v for _, v in walk(value) if isinstance(v, Ref)]


def check_plan(plan: ProductPlan) -> None:
    """The shared invariants of one product's plan; raises AssertionError naming the step."""
    names = [s.name for s in plan.steps]
    assert len(names) == len(set(names)), f"{plan.name}: steps named twice: {names}"
    assert all(n.startswith(plan.name) for n in names), f"{plan.name}: a step outside its prefix: {names}"
    for path, value in walk((plan.steps, plan.outputs, plan.bucket_keys)):
        if isinstance(value, Step):
            assert value.kind in STEPS, f"{plan.name}: {path}: unknown step kind {value.kind}"
        if isinstance(value, Call):
            assert value.kind in VALUES, f"{plan.name}: {path}: unknown value kind {value.kind}"
        if isinstance(value, Ref):
            assert value.step in names, f"{plan.name}: {path} refers to {value.step}, which the plan never runs"
    hosts = list(plan.steps_of(*HOST_KINDS))
    assert hosts, f"{plan.name}: no host"
    containers: dict[str, str] = {}
    for host in hosts:
        assert host.data_dir == f"/srv/{host.name}", host.name
        workload = _workload(host)
        specs = {s.name: s for s in workload.get("containers", ())}
        assert len(specs) == len(workload.get("containers", ())), f"{host.name}: a container twice"
        for name in specs:
            assert containers.setdefault(name, host.name) == host.name or name in (
                "node-exporter", "cadvisor"), f"{name} on {containers[name]} and {host.name}"
        for service, env in workload.get("secret_env", {}).items():
            assert service in specs, f"{host.name}: secret env for {service}, which it does not run"
            both = set(env) & set(specs[service].env)
            assert not both, f"{host.name}/{service}: {sorted(both)} plain and secret"
        mounts = [m for b in plan.steps_of("backup") for m in b.kwargs()["mounts"]]
        for service in workload.get("files", {}):
            # A service the host does not run: files only a backup job on the host reads (GIV's CAs).
            read = any(f"{host.data_dir}/files/{service}".startswith(m) or m.startswith(f"{host.data_dir}/files/{service}")
                       for m in mounts)
            assert service in specs or read, f"{host.name}: files for {service}, which nothing reads"
        for route in _kwargs(workload.get("ingress")).get("routes", ()):
            spec = specs.get(route.service)
            assert spec is not None and spec.port == route.port, f"{host.name}: {route.host} -> {route.service}"
    for service, env in plan.env.items():
        keys = env.keys()
        assert len(keys) == len(set(keys)), f"{plan.name}/{service}: {keys}"
    backups = list(plan.steps_of("backup"))
    jobs = {backup_job_name(b.kwargs()["stack"], b.kwargs()["label"]) for b in backups}
    assert set(plan.backup_job_names) <= jobs, f"{plan.name}: monitoring expects jobs no step runs"
    assert {f"{j}-backup" for j in jobs} == {b.name for b in backups}
    sources = {r.step for b in backups for r in _refs(b.kwargs()["source_name"])}
    named = {b.kwargs()["source_name"] for b in backups if isinstance(b.kwargs()["source_name"], str)}
    for cluster in plan.steps_of("managed_cluster"):
        if cluster.kwargs()["databases"]:
            assert cluster.name in sources, f"{cluster.name}: a managed database without a backup"
    for host in hosts:
        for spec in _workload(host).get("containers", ()):
            if DATASTORE_IMAGES.search(spec.image):
                by_source = any(r.path[:2] == ("containers", spec.name) for b in backups
                                for r in _refs(b.kwargs()["source_name"]) if r.step == host.name)
                assert by_source or f"{host.name}-{spec.name}" in named, f"{host.name}/{spec.name}: no backup"
