"""The shape every product's plan takes (``stacks/<product>/plan.py`` returns a ``ProductPlan``),
and the references a plan holds where a value exists only once a resource does.

A plan is plain values: strings, numbers, tuples, dicts, container specs, frozen dataclasses
of modules that import no provider SDK (``HostFile``, ``HostRole``, ...), the secret
references of ``stacks.wiring``, and three kinds of reference resolved by ``stacks.provision``:

- ``Ref(step, path)``: an attribute (or key) of what an earlier or later step creates; a later
  step's is a ``pulumi.deferred_output()`` resolved once that step has run (a cluster that
  admits the droplet created after it).
- ``Call(kind, args)``: a known constructor or function (``stacks.provision_kinds.VALUES``)
  applied to the resolved ``args``: an args class of a component module that imports a
  provider SDK, the context's admin access, a rendered init script.
- ``Step(kind, name, args)``: one registration, in order: ``kind`` names a resource or a
  function that creates resources (``stacks.provision_kinds.STEPS``); its result is what
  ``Ref(name, ...)`` reads.

Nothing here imports Pulumi, so a plan is tested without the mock engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from stacks.wiring import ServiceEnv


@dataclass(frozen=True)
class Ref:
    """``step``'s result, then each of ``path`` in turn: an attribute, or a key of a mapping."""

    step: str
    path: tuple[str, ...] = ()


def ref(step: str, *path: str) -> Ref:
    return Ref(step, tuple(path))


@dataclass(frozen=True)
class Call:
    """``kind`` (``stacks.provision_kinds.VALUES``) applied to ``args`` once they are resolved."""

    kind: str
    args: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


def call(kind: str, /, **args: Any) -> Call:
    return Call(kind, tuple(args.items()))


@dataclass(frozen=True)
class Step:
    """One resource (or one function registering several), created in plan order.

    ``data_dir``: for a host, the data directory the plan placed its files under (``provision``
    checks the component placed them there too)."""

    kind: str
    name: str
    args: tuple[tuple[str, Any], ...] = ()
    data_dir: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


def step(kind: str, step_name: str, /, *, data_dir: str | None = None, **args: Any) -> Step:
    """A ``Step``; ``args`` may hold ``name`` (a resource's own name argument)."""
    return Step(kind, step_name, tuple(args.items()), data_dir)


HOST_KINDS = ("droplet_host", "vps_host")
"""The step kinds that are Docker hosts (``DropletStack``, ``OnPremVps``)."""


@dataclass(frozen=True)
class ProductPlan:
    """Everything one product's stack holds, from its config alone.

    ``product`` (``kro``) names its root component, ``name`` (``kro-prod``) prefixes its
    resources; ``env`` is each service's complete env map; ``steps`` are its resources in
    registration order; ``outputs`` its stack outputs (values may be references);
    ``bucket_keys`` (service -> (access, secret), a reference) is where ``BucketKey`` reads;
    ``backup_job_names`` are the jobs monitoring expects; ``detail`` is the product's own
    frozen plan the steps were computed from (its clusters, backups, nodes)."""

    product: str
    name: str
    production: bool
    env: Mapping[str, ServiceEnv]
    steps: tuple[Step, ...]
    outputs: tuple[tuple[str, Any], ...]
    backup_job_names: tuple[str, ...]
    detail: Any = None
    bucket_keys: Any = None

    def steps_of(self, *kinds: str) -> Iterator[Step]:
        return (s for s in self.steps if s.kind in kinds)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)
