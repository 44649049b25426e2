"""The mock engine a synth runs the program against: ``SynthMocks`` answers outputs and invokes,
``CaptureMonitor`` records the whole ``RegisterResourceRequest`` the SDK sends.

The public ``Mocks`` API only sees a resource's type, name and inputs. Reviews, tests and the
policy pack also need parents, providers, dependencies and resource options, so the monitor
here records every request as the real engine sees it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from google.protobuf import json_format

from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.proto import resource_pb2

from synth import mockdata, sdkschema, wire
from synth.capture import Capture
from synth.secret_lines import rotate
from synth.values import SECRET_MASK, decode_struct, digest, secret_leaves
from synth.wire import UNKNOWN


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
        # synth.secret_lines: the run that tells secret lines from plain ones changes every secret.
        self.rotate_secrets = False
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
            if key in state and getattr(self.mocks, "rotate_secrets", False) and not wire.is_secret(state[key]):
                # The second run of synth.secret_lines: every secret output differs from the first.
                state[key] = rotate(state[key])
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


def _mask_values(value: Any, secrets: frozenset[str]) -> Any:
    """``value`` with every string that holds one of ``secrets`` replaced by the secret mask."""
    if isinstance(value, str):
        return SECRET_MASK if any(s in value for s in secrets) else value
    if isinstance(value, dict):
        return {k: _mask_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_values(v, secrets) for v in value]
    return value


