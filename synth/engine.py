"""Run the Pulumi program against the SDK's mock engine and capture the desired state.

The public ``Mocks`` API only sees a resource's type, name and inputs. Reviews, tests and the
policy pack also need parents, providers, dependencies and resource options, so the monitor
here records the whole ``RegisterResourceRequest`` the SDK sends, as the real engine sees it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from google.protobuf import json_format

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.proto import resource_pb2

from synth import mockdata, sdkschema, wire
from synth.values import SECRET_MASK, UNKNOWN_MASK, decode_struct, digest, holds_unknown, secret_leaves
from synth.wire import UNKNOWN
from stacks.placeholders import OFFLINE_SYNTH


PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SynthError(RuntimeError):
    """The program asked the engine for something the real engine or a provider would refuse."""


class DuplicateUrn(SynthError):
    """Two registrations produced one URN (the real engine refuses the second)."""


class PulumiUrnInput(SynthError):
    """A Pulumi URN (``urn:pulumi:...``) was sent as a provider input."""


class MockDataError(SynthError):
    """The mock data answers an output the provider's SDK does not have."""


class UnansweredInvoke(SynthError):
    """The program called a provider function the mock engine has no answer for."""


@dataclass
class Capture:
    """Everything one synth run learned about the program's desired state."""

    project: str
    stack: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    invokes: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    logs: list[dict[str, str]] = field(default_factory=list)
    secret_placeholders: list[str] = field(default_factory=list)
    secret_outputs: list[str] = field(default_factory=list)
    revealed_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    preview: bool = False
    duplicate_urns: list[str] = field(default_factory=list)
    pulumi_urn_inputs: list[str] = field(default_factory=list)

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """Resources sorted by URN and invokes by content: both arrive in async order, which
        would make diffs noisy.

        ``reveal`` puts secret input values in place of the mask (for policy checks and tests;
        never written to disk by the CLI)."""
        resources = sorted(self.resources, key=lambda r: r["urn"])
        if reveal:
            resources = [{**r, "inputs": self.revealed_inputs.get(r["urn"], r["inputs"])}
                         for r in resources]
        document = {
            "project": self.project,
            "stack": self.stack,
            "resources": resources,
            "outputs": self.outputs,
            "invokes": sorted(self.invokes, key=lambda i: json.dumps(i, sort_keys=True)),
            "secret_placeholders": self.secret_placeholders,
            "secret_outputs": sorted(self.secret_outputs),
        }
        if self.preview:
            document["preview"] = True
            document["preview_unknowns"] = self.preview_unknowns()
        return document

    def preview_unknowns(self) -> dict[str, Any]:
        """What a preview cannot know yet, counted on the revealed inputs (a secret script that
        is unknown is masked as ``"[secret]"`` in ``resources``, so its unknown is not visible
        there). Only names and counts, never a value:

        ``{"by_type": {type: {"resources": int, "with_unknown_inputs": int,
        "inputs": {top-level input name: int}}}, "resources": {urn: [input names]}}``"""
        by_type: dict[str, dict[str, Any]] = {}
        per_resource: dict[str, list[str]] = {}
        for resource in sorted(self.resources, key=lambda r: r["urn"]):
            counts = by_type.setdefault(resource["type"], {"resources": 0, "with_unknown_inputs": 0,
                                                           "inputs": {}})
            counts["resources"] += 1
            inputs = self.revealed_inputs.get(resource["urn"], resource["inputs"])
            names = sorted(name for name, value in inputs.items() if holds_unknown(value))
            if names:
                counts["with_unknown_inputs"] += 1
                for name in names:
                    counts["inputs"][name] = counts["inputs"].get(name, 0) + 1
                per_resource[resource["urn"]] = names
        return {"by_type": dict(sorted(by_type.items())), "resources": per_resource}

    def schema_findings(self) -> list[str]:
        """Every captured custom resource's inputs (secrets revealed, so their shape is checked
        too), provider configuration and invoke arguments against the installed provider SDKs'
        schemas: one ``"<urn or token>: <property path>: <problem>"`` line per finding."""
        findings = []
        for resource in sorted(self.resources, key=lambda r: r["urn"]):
            if not resource["custom"]:
                continue
            inputs = self.revealed_inputs.get(resource["urn"], resource["inputs"])
            findings += [f"{resource['urn']}: {f}"
                         for f in sdkschema.check_resource(resource["type"], inputs)]
        for invoke in sorted(self.invokes, key=lambda i: json.dumps(i, sort_keys=True)):
            findings += [f"invoke {invoke['token']}: {f}"
                         for f in sdkschema.check_invoke(invoke["token"], invoke["args"])]
        return list(dict.fromkeys(findings))


class SynthMocks(pulumi_mocks.Mocks):
    """Computed outputs and invoke answers, overridable per test.

    Answers only outputs that the resource's class in the installed provider SDK has (its
    ``pulumi.getter`` properties). With ``preview`` set (``run_program`` sets it), a resource
    that does not exist yet (neither imported nor read) gets no ID and unknown values for every
    output its inputs do not fix, as a provider answers ``pulumi preview`` for a create.
    """

    def __init__(
        self,
        invoke_answers: Optional[Mapping[str, Callable[[dict], dict]]] = None,
        resource_outputs: Optional[Mapping[str, Callable[[str, dict], dict]]] = None,
    ):
        self.invoke_answers = {**mockdata.INVOKE_ANSWERS, **(invoke_answers or {})}
        self.resource_outputs = {**mockdata.RESOURCE_OUTPUTS, **(resource_outputs or {})}
        self.preview = False
        # Problems found while answering; run_program raises them after the run (an exception
        # raised on a monitor thread leaves a failed future behind, and its late traceback can
        # interrupt CPython 3.11's AST constructor: "recursion depth mismatch").
        self.errors: list[str] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        resource_id = args.resource_id or mockdata.mock_id(args.typ, args.name)
        if args.custom is False:
            return resource_id, dict(args.inputs)
        outputs = sdkschema.output_names(args.typ)
        if outputs is None:
            self.errors.append(f"no installed provider SDK defines resource type {args.typ}")
            return resource_id, dict(args.inputs)
        known = {k: v for k, v in args.inputs.items() if k in outputs}
        if self.preview and not args.resource_id:
            return "", {**known, **{k: UNKNOWN for k in outputs if k not in known}}
        invented = mockdata.invented_outputs(args.typ, args.name, args.inputs, resource_id,
                                             self.resource_outputs)
        unknown = sorted(set(invented) - outputs)
        if unknown:
            self.errors.append(
                f"the mock data answers {', '.join(unknown)} for {args.typ}, which the installed "
                f"SDK's {args.typ.rsplit(':', 1)[-1]} does not have; its outputs are "
                f"{', '.join(sorted(outputs))}")
        return resource_id, {**known, **{k: v for k, v in invented.items() if k in outputs}}

    def call(self, args: pulumi_mocks.MockCallArgs):
        answer = self.invoke_answers.get(args.token)
        if answer is None:
            raise UnansweredInvoke(
                f"the mock engine has no answer for invoke {args.token}; add one to "
                "synth/mockdata.py INVOKE_ANSWERS"
            )
        return answer(args.args)


class CaptureMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: SynthMocks, capture: Capture, secret_values: frozenset[str] = frozenset()):
        super().__init__(mocks)
        self.capture = capture
        # The SDK sends an invoke's arguments unwrapped, secret or not (a secret config value
        # handed to tls.get_public_key arrives plain), so the capture masks them by value.
        self.secret_values = secret_values
        self.stack_urn: Optional[str] = None
        self.registered_by: dict[str, str] = {}

    def _claim(self, urn: str, request, read: bool) -> bool:
        """Record who registered ``urn``; False (and a duplicate noted) when it was taken.

        URNs hold the parent's type but not its name, so two parents of one type with
        same-named children collide; the parent URNs tell the registrations apart."""
        verb = "read" if read else "registered"
        who = f"{verb} {request.type} {request.name!r} under {request.parent or 'the stack'}"
        first = self.registered_by.setdefault(urn, who)
        if first is who:
            return True
        self.capture.duplicate_urns.append(f"{urn}: {first}; then {who}")
        return False

    def _check_pulumi_urns(self, where: str, inputs: dict) -> None:
        for path in sdkschema.pulumi_urns(inputs):
            self.capture.pulumi_urn_inputs.append(f"{where}: {path}")

    def _record(self, request, urn: str, inputs: dict, secret_keys: list[str], read: bool) -> dict:
        provider = request.provider.rsplit("::", 1)[0] if request.provider else None
        entry = {
            "urn": urn,
            "type": request.type,
            "name": request.name,
            "custom": bool(getattr(request, "custom", True)) if not read else True,
            "parent": request.parent or None,
            "provider": provider,
            "inputs": inputs,
            "secret_inputs": secret_keys,
            "dependencies": sorted(set(getattr(request, "dependencies", []))),
            "protect": bool(request.protect) if not read else False,
            "retain_on_delete": bool(getattr(request, "retainOnDelete", False)),
            "delete_before_replace": bool(getattr(request, "deleteBeforeReplace", False)),
            "ignore_changes": list(getattr(request, "ignoreChanges", [])),
            "import_id": (getattr(request, "importId", "") or None) if not read else None,
            "replace_on_changes": list(getattr(request, "replaceOnChanges", [])),
            "additional_secret_outputs": list(getattr(request, "additionalSecretOutputs", [])),
            "aliases": [json_format.MessageToDict(a) for a in getattr(request, "aliases", [])],
        }
        if read:
            entry["read_id"] = request.id
        if entry["custom"]:
            self._check_pulumi_urns(urn, inputs)
        self.capture.resources.append(entry)
        return entry

    def RegisterResource(self, request):
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return resource_pb2.RegisterResourceResponse(urn=urn)
        wire.ensure_event_loop()
        first = self._claim(urn, request, read=False)
        inputs, secret_keys = decode_struct(request.object)
        # A duplicate is answered as usual (the run goes on, so that every duplicate is
        # reported at once) but neither captured nor kept; run_program then fails.
        entry = self._record(request, urn, inputs, secret_keys, read=False) if first else {}
        if secret_keys and first:
            revealed = decode_struct(request.object, reveal=True)[0]
            self.capture.revealed_inputs[urn] = revealed
            # Synth only ever holds placeholders and mock values, so a short digest reveals
            # nothing real; it lets a diff say that a secret changed without showing it.
            # (Registrations arrive on several threads: the entry, not the list's tail.)
            entry["secret_digests"] = {key: digest(revealed.get(key)) for key in secret_keys}
            # Per leaf: a spec with one secret env var keeps every other value plain.
            raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
            entry["secret_leaves"] = secret_leaves(raw, revealed)

        resource_args = pulumi_mocks.MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=wire.deserialize_properties(request.object),
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
        )
        id_, state = self.mocks.new_resource(resource_args)
        # The real engine marks these outputs secret; the SDK leaves that to the engine.
        for key in request.additionalSecretOutputs:
            if key in state and not wire.is_secret(state[key]):
                state[key] = wire.secret(state[key])
        obj_proto = wire.sync_await(wire.serialize_properties(state, {}))
        if first:
            self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj_proto)

    def ReadResource(self, request):
        urn = self.make_urn(request.parent, request.type, request.name)
        wire.ensure_event_loop()
        if self._claim(urn, request, read=True):
            inputs, secret_keys = decode_struct(request.properties)
            self._record(request, urn, inputs, secret_keys, read=True)
            return super().ReadResource(request)
        kept = self.resources.get(urn)
        response = super().ReadResource(request)
        if kept is not None:
            self.resources[urn] = kept
        return response

    def Invoke(self, request):
        wire.ensure_event_loop()
        args, _ = decode_struct(request.args)
        self._check_pulumi_urns(f"invoke {request.tok}", args)
        self.capture.invokes.append({"token": request.tok, "args": _mask_values(args, self.secret_values)})
        return super().Invoke(request)


class _LogCollector:
    def __init__(self, capture: Capture):
        self.capture = capture

    def _add(self, level: str, msg: Any) -> None:
        self.capture.logs.append({"level": level, "message": str(msg)})

    def debug(self, msg, *a, **k):
        pass

    def info(self, msg, *a, **k):
        self._add("info", msg)

    def warning(self, msg, *a, **k):
        self._add("warning", msg)

    def error(self, msg, *a, **k):
        self._add("error", msg)


async def _resolve_outputs(stack_outputs: Mapping[str, Any], capture: "Capture") -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, value in stack_outputs.items():
        output = pulumi.Output.from_input(value)
        is_secret = await output.is_secret()
        plain = await output.future(with_unknowns=True)
        if is_secret:
            capture.secret_outputs.append(name)
        resolved[name] = SECRET_MASK if is_secret else _jsonable(plain)
    return resolved


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: UNKNOWN_MASK if "Unknown" in type(v).__name__ else str(v)))


def _mask_values(value: Any, secrets: frozenset[str]) -> Any:
    """``value`` with every string that holds one of ``secrets`` replaced by the secret mask."""
    if isinstance(value, str):
        return SECRET_MASK if any(s in value for s in secrets) else value
    if isinstance(value, dict):
        return {k: _mask_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_values(v, secrets) for v in value]
    return value


def run_program(
    program: Callable[[], None],
    *,
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    project: str = "platform",
    mocks: Optional[SynthMocks] = None,
    capture: Optional[Capture] = None,
    preview: bool = False,
) -> Capture:
    """Run ``program`` under the mock engine and return what it registered.

    ``preview`` runs it as ``pulumi preview`` of a new stack: ``is_dry_run()`` is true, every
    resource that is not imported or read has an unknown ID and unknown outputs, and ``apply``
    callbacks on those do not run.

    Pass ``capture`` to inspect what was registered even when the program raises.

    Raises DuplicateUrn when two registrations share a URN and PulumiUrnInput when a Pulumi
    URN was sent as a provider input (after the run, listing every case), besides whatever
    the program raises.

    Runs in a fresh ``contextvars.Context`` because Pulumi keeps its runtime settings, root
    stack and config in context variables: every run starts from nothing, so tests can run
    many programs in one process without state leaking between them.
    """
    capture = capture if capture is not None else Capture(project=project, stack=stack)
    capture.preview = preview
    mocks = mocks or SynthMocks()
    mocks.preview = preview
    mocks.errors = []

    def run() -> Capture:
        wire.clear_pending_outputs()
        # This context is the synth's own: placeholders warn here and fail a real deploy.
        OFFLINE_SYNTH.set(True)
        monitor = CaptureMonitor(mocks, capture, frozenset(
            v for k, v in config.items() if k in secret_keys and isinstance(v, str) and v.strip()))
        pulumi.runtime.set_all_config(dict(config), list(secret_keys))
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi_mocks.set_mocks(
                monitor.mocks, project=project, stack=stack, preview=preview,
                logger=_LogCollector(capture), monitor=monitor,
            )
            root = pulumi.runtime.settings.get_root_resource()

            async def body() -> None:
                await pulumi.runtime.stack.run_pulumi_func(program)
                capture.outputs = await _resolve_outputs(root.outputs, capture)

            loop.run_until_complete(body())
        finally:
            wire.clear_pending_outputs()
            # A program that raised leaves registrations in flight; cancel them so the loop
            # closes cleanly instead of warning about destroyed pending tasks.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            # Monitor calls run on the loop's executor threads; wait for them, so that no
            # registration of this run is still working when the caller goes on.
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()
        return capture

    try:
        with wire.without_stack_traces():
            contextvars.Context().run(run)
    except Exception as exc:
        # A duplicate often makes the program fail later (an output it expected is another
        # resource's); the duplicate is the cause to report.
        if capture.duplicate_urns:
            raise DuplicateUrn("two registrations share a URN (the engine refuses the second):\n  "
                               + "\n  ".join(capture.duplicate_urns)) from exc
        raise
    if mocks.errors:
        raise MockDataError("\n".join(dict.fromkeys(mocks.errors)))
    if capture.duplicate_urns:
        raise DuplicateUrn("two registrations share a URN (the engine refuses the second):\n  "
                           + "\n  ".join(capture.duplicate_urns))
    if capture.pulumi_urn_inputs:
        raise PulumiUrnInput("a Pulumi URN (urn:pulumi:...) is sent as a provider input, which no "
                             "provider accepts (use the provider's own URN output, e.g. "
                             "reserved_ip_urn):\n  " + "\n  ".join(capture.pulumi_urn_inputs))
    return capture


def program_from_main(project_dir: Path = PROJECT_ROOT) -> Callable[[], None]:
    """The project's ``__main__.py`` as a callable, run the way the Pulumi language host does."""
    main_path = project_dir / "__main__.py"

    def program() -> None:
        if str(project_dir) not in sys.path:
            sys.path.insert(0, str(project_dir))
        previous = os.getcwd()
        os.chdir(project_dir)
        try:
            runpy.run_path(str(main_path), run_name="__main__")
        finally:
            os.chdir(previous)

    return program
