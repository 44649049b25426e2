"""Any product's resources from its plan (``stacks.plan.ProductPlan``): one ``Product`` root
component, each step created in plan order under it (``stacks.provision_kinds``), every
reference resolved on the way, the outputs registered. The products differ only in their plans."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pulumi
from pydantic import BaseModel

from components.service_files import HostFile, host_path_for
from stacks import wiring
from stacks.plan import Call, ProductPlan, Ref, Step
from stacks.product import Product, SecretResolver
from stacks.provision_kinds import STEPS, VALUES

SECRET_REFERENCES = (wiring.ConfigSecret, wiring.Generated, wiring.SecretUrl, wiring.BucketKey, wiring.ClusterUri)


class _LazyMapping(Mapping):
    """A mapping resolved from the plan the first time it is read (the bucket keys exist once
    the step creating them has run)."""

    def __init__(self, load):
        self._load, self._value = load, None

    def _get(self) -> Mapping:
        if self._value is None:
            self._value = self._load()
        return self._value

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return len(self._get())


class Provisioner:
    """The state of one product's provisioning: its root component (``product``), the context
    (``BuildContext``: the environment's secrets, admin access and alert destinations), what
    each step created (``created``, by step name) and the references to steps not yet run."""

    def __init__(self, ctx, plan: ProductPlan):
        self.ctx, self.plan = ctx, plan
        self.product = Product(plan.product)
        self.child = pulumi.ResourceOptions(parent=self.product)
        self.created: dict[str, Any] = {}
        self._pending: dict[str, list[tuple[tuple[str, ...], Any]]] = {}
        self._deferred: dict[Ref, pulumi.Output] = {}
        self.secrets = SecretResolver(self.product, ctx.secret)
        self.secrets.clusters = self.created
        if plan.bucket_keys is not None:
            self.secrets.bucket_keys = _LazyMapping(lambda: self.resolve(plan.bucket_keys))

    def resolve(self, value: Any) -> Any:
        """``value`` with every reference in it replaced by what it refers to."""
        if isinstance(value, Ref):
            return self._ref(value)
        if isinstance(value, Call):
            return VALUES[value.kind](self, **{k: self.resolve(v) for k, v in value.args})
        if isinstance(value, SECRET_REFERENCES):
            return self.secrets.resolve(value)
        if isinstance(value, wiring.ResourceValue):
            return self._ref(Ref(value.resource, (value.attribute,)))
        if isinstance(value, (str, int, float, bool, type(None), BaseModel)):
            return value
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: new for f in dataclasses.fields(value)
                       if (new := self.resolve(old := getattr(value, f.name))) is not old}
            return dataclasses.replace(value, **changes) if changes else value
        return value

    def _ref(self, r: Ref) -> Any:
        if r.step in self.created:
            return _follow(self.created[r.step], r.path)
        # A step later in the plan: an output resolved once the step has run.
        if r not in self._deferred:
            output, set_value = pulumi.deferred_output()
            self._deferred[r] = output
            self._pending.setdefault(r.step, []).append((r.path, set_value))
        return self._deferred[r]

    def run(self, s: Step) -> Any:
        result = STEPS[s.kind](self, s.name, **{k: self.resolve(v) for k, v in s.args})
        self.created[s.name] = result
        waiting = self._pending.pop(s.name, [])
        while waiting:
            path, set_value = waiting[0]
            try:
                value = _follow(result, path)
            except (AttributeError, KeyError, TypeError) as exc:
                self._pending[s.name] = waiting  # failed by provision(), with the rest
                raise RuntimeError(f"{s.name}: a reference to {'.'.join(path)}, which "
                                   f"{type(result).__name__} does not have") from exc
            set_value(value)
            waiting.pop(0)
        if s.data_dir is not None:
            probe = HostFile(container_path="/p/f", content="")
            if result.data_dir != s.data_dir or \
                    host_path_for(result.data_dir, "s", probe) != wiring.host_file(s.data_dir, "s", "/p/f"):
                raise RuntimeError(f"{s.name}: the plan placed its files elsewhere than {type(result).__name__}")
        return result

    def fail_pending(self, error: BaseException) -> None:
        """Fails every reference still waiting for a step: a registration that waits on one
        would otherwise keep the program (and ``pulumi up``) from ever exiting, and resolving
        it with a placeholder value would send that value to the provider."""
        async def failed():
            raise RuntimeError(f"{self.plan.name}: not provisioned: an earlier step failed: {error}")

        for setters in self._pending.values():
            for _, set_value in setters:
                set_value(pulumi.Output.from_input(failed()))
        self._pending.clear()

    def check_resolved(self) -> None:
        if self._pending:
            raise RuntimeError(f"{self.plan.name}: references to steps the plan never runs: {sorted(self._pending)}")


def _refs(value: Any):
    """Every ``Ref`` inside a plan value."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, (Call, Step)):
        yield from _refs(value.args)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _refs(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _refs(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _refs(getattr(value, f.name))


def _follow(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def provision(ctx, plan: ProductPlan) -> dict:
    """Creates ``plan``'s resources in order and returns its resolved outputs (registered on
    the product's root component). Raises ``RuntimeError`` when a step refers to one the plan
    never runs, or a host places its files elsewhere than the plan did; a step that raises
    fails every registration still waiting on a later step, then the error propagates."""
    names = {s.name for s in plan.steps}
    # Before anything is registered: a registration waiting on a step that never runs waits for ever.
    missing = sorted({r.step for r in _refs((plan.steps, plan.outputs, plan.bucket_keys))} - names)
    if missing:
        raise RuntimeError(f"{plan.name}: references to steps the plan never runs: {missing}")
    p = Provisioner(ctx, plan)
    try:
        for s in plan.steps:
            p.run(s)
    except BaseException as exc:
        p.fail_pending(exc)
        raise
    outputs = {key: p.resolve(value) for key, value in plan.outputs}
    p.check_resolved()
    p.product.register_outputs(outputs)
    return outputs
