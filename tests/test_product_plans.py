"""Every product's plan in the one shape ``stacks.provision`` creates (``stacks.plan.ProductPlan``),
read as plain values: unique step names (so unique URNs), no reference to a step the plan
never runs, only kinds ``stacks.provision_kinds`` knows, every routed service on its host with
its port, every container's env with one source per key, every datastore and managed cluster
backed up and every backup expected by monitoring, every container within its host's budget.
``tests.plan_checks.check_plan`` also runs on the generated configs of ``test_plans`` (hypothesis)."""

from __future__ import annotations

import dataclasses

import pytest

from stacks.plan import ProductPlan, Ref
from stacks.registry import PRODUCTS
from stacks.secret_keys import registry_secret_key
from stacks.wiring import ConfigSecret
from tests.plan_checks import _kwargs, _workload, check_plan, walk
from tests.test_plans import _config, _plans

pytestmark = pytest.mark.fast

@pytest.fixture(scope="module", params=["staging", "prod"])
def plans(request) -> dict[str, ProductPlan]:
    return _plans(_config(request.param))


def test_every_plan_keeps_the_shared_invariants(plans):
    assert {"kro", "giv", "pencom"} <= set(plans)
    for plan in plans.values():
        assert isinstance(plan, ProductPlan) and plan.product in plan.name
        check_plan(plan)


def test_step_names_are_unique_across_the_products_of_a_stack(plans):
    names = [s.name for plan in plans.values() for s in plan.steps]
    assert len(names) == len(set(names))


def test_the_checks_see_what_they_look_for(plans):
    """Each check fails on a plan broken the way it looks for."""
    kro = plans["kro"]
    broken = {
        "steps named twice": (*kro.steps, kro.steps[0]),
        "never runs": (*kro.steps, dataclasses.replace(kro.steps[0], name=f"{kro.name}-x",
                                                       args=(("a", Ref("nowhere")),))),
        "without a backup": tuple(s for s in kro.steps if s.kind != "backup"),
    }
    for message, steps in broken.items():
        with pytest.raises(AssertionError, match=message):
            check_plan(dataclasses.replace(kro, steps=steps, backup_job_names=(), outputs=()))


def test_vedfinance_containers_fit_their_host():
    stack_config = _config("staging")
    cfg = stack_config.product("vedfinance")
    plan = _plans(stack_config)["vedfinance"]
    (host,) = plan.steps_of("vps_host")
    workload = _workload(host)
    memory = sum(s.memory_mb for s in workload["containers"]) + _kwargs(workload["ingress"])["memory_mb"]
    cpus = sum(s.cpus for s in workload["containers"]) + _kwargs(workload["ingress"])["cpus"]
    assert 0 < memory <= cfg.host.memory_mb - cfg.host.headroom_mb
    assert 0 < round(cpus, 6) <= cfg.host.vcpus - cfg.host.headroom_cpus
    assert all(s.memory_mb and s.cpus for s in workload["containers"])


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_secret_a_plan_reads_is_a_required_secret_and_back(stack):
    """A config secret a plan reads is one the boundary asks for (else `pulumi up` fails on a
    key nobody was told to set); a secret the boundary asks of a product is one its plan reads
    (else it is set for nothing), the optional registry credentials aside (read by
    ``registry_auth`` when set)."""
    stack_config = _config(stack)
    required = {s.key for s in stack_config.required_secrets()}
    for name, plan in _plans(stack_config).items():
        read = {v.key for _, v in walk((plan.steps, plan.outputs)) if isinstance(v, ConfigSecret)}
        assert read, name
        assert read <= required, f"{name}: reads secrets the boundary never asks for: {sorted(read - required)}"
        asked = {s.key for s in PRODUCTS[name].required_secrets(stack_config.product(name))}
        unread = {k for k in asked - read if k != registry_secret_key(name)}
        assert not unread, f"{name}: asks for secrets its plan never reads: {sorted(unread)}"


class _Context:
    """What ``provision`` reads of ``BuildContext``: only secrets here."""

    def secret(self, key: str):
        import pulumi

        return pulumi.Output.secret(f"value-of-{key}")


def _provisioned(plan: ProductPlan) -> tuple[dict, dict]:
    """``plan`` provisioned on the mock engine: (resource name -> inputs, stack outputs)."""
    import pulumi

    from stacks.provision import provision
    from synth.engine import run_program

    def program():
        pulumi.export("product", provision(_Context(), plan))

    capture = run_program(program, stack="t", config={}, secret_keys=[])
    return {r["urn"].rsplit("::", 1)[1]: r["inputs"] for r in capture.resources}, capture.outputs


def _tiny(steps, outputs=()) -> ProductPlan:
    return ProductPlan(product="tiny", name="tiny-t", production=False, env={}, steps=tuple(steps),
                       outputs=tuple(outputs), backup_job_names=())


def test_provision_resolves_references_before_and_after_their_step():
    """A reference to a later step is an output resolved once that step has run (the cluster
    that admits a droplet created after it); keys and attributes are followed in turn; a
    config secret is read through the context."""
    from stacks.plan import call, ref, step

    plan = _tiny([
        step("do.Project", "tiny-t-project", name="tiny", description=ref("tiny-t-vpc", "name")),
        step("do.Vpc", "tiny-t-vpc", name="tiny-t", region="fra1", ip_range="10.9.0.0/24",
             description=call("secret", value=ConfigSecret("k"))),
    ], outputs=[("vpc", ref("tiny-t-vpc", "name")), ("names", {"project": ref("tiny-t-project", "name")})])
    inputs, outputs = _provisioned(plan)
    assert inputs["tiny-t-project"]["description"] == "tiny-t"
    assert inputs["tiny-t-vpc"]["name"] == "tiny-t"
    assert outputs["product"]["vpc"] == "tiny-t" and outputs["product"]["names"] == {"project": "tiny"}


def test_provision_refuses_a_reference_to_a_step_it_never_runs():
    from stacks.plan import ref, step

    plan = _tiny([step("do.Project", "tiny-t-project", name="tiny", description=ref("tiny-t-nowhere", "id"))])
    with pytest.raises(Exception, match="references to steps the plan never runs: \\['tiny-t-nowhere'\\]"):
        _provisioned(plan)


def _error_within_a_minute(plan: ProductPlan) -> str:
    """The error ``plan``'s provisioning raises; fails if it is still running after 60 s (a
    registration waiting for ever on a step that will never run)."""
    import threading

    raised: list[BaseException] = []

    def provision_it():
        try:
            _provisioned(plan)
        except BaseException as exc:  # noqa: BLE001 - the test reads whatever surfaced
            raised.append(exc)

    worker = threading.Thread(target=provision_it, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "provision hung on a reference to a later step"
    assert raised, "provision raised nothing"
    return str(raised[0])


def test_a_step_that_raises_fails_the_registrations_waiting_on_a_later_step(monkeypatch):
    """A component that raises while an earlier registration waits on a later step's output:
    the error surfaces at once. Before, the waiting registration kept the program alive for
    ever (a hang of ``pulumi up`` and of the synth)."""
    from stacks import provision_kinds
    from stacks.plan import ref, step

    def boom(_provisioner, _name, **_args):
        raise RuntimeError("component failed: boom")

    monkeypatch.setitem(provision_kinds.STEPS, "boom", boom)
    plan = _tiny([step("do.Project", "tiny-t-project", name="tiny", description=ref("tiny-t-vpc", "name")),
                  step("boom", "tiny-t-boom"),
                  step("do.Vpc", "tiny-t-vpc", name="tiny-t", region="fra1", ip_range="10.9.0.0/24")])
    assert "boom" in _error_within_a_minute(plan)


def test_a_reference_to_an_attribute_a_later_step_lacks_is_an_error_not_a_hang():
    from stacks.plan import ref, step

    plan = _tiny([step("do.Project", "tiny-t-project", name="tiny", description=ref("tiny-t-vpc", "no_such")),
                  step("do.Vpc", "tiny-t-vpc", name="tiny-t", region="fra1", ip_range="10.9.0.0/24")])
    assert "tiny-t-vpc: a reference to no_such" in _error_within_a_minute(plan)
