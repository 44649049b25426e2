"""Run the Pulumi program against the SDK's mock engine and capture the desired state.

The public ``Mocks`` API only sees a resource's type, name and inputs. Reviews, tests and the
policy pack also need parents, providers, dependencies and resource options, so the monitor
here records the whole ``RegisterResourceRequest`` the SDK sends, as the real engine sees it.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
import re
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from google.protobuf import json_format

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await
from pulumi.runtime import rpc

from stacks.placeholders import OFFLINE_SYNTH
from synth import mockdata

SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SECRET_MASK = "[secret]"
UNKNOWN_MASK = "[unknown]"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class UnansweredInvoke(RuntimeError):
    """The program called a provider function the mock engine has no answer for."""


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def decode(value: Any, reveal: bool = False) -> tuple[Any, bool]:
    """Engine wire value -> (plain JSON value with secrets masked, whether it held a secret).

    ``reveal`` keeps secret values (still reported as secret): only tests use it, to check what
    a secret contains.
    """
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return (decode(value.get("value"), reveal)[0] if reveal else SECRET_MASK), True
        if sig == OUTPUT_SIG:
            if value.get("secret"):
                return (decode(value.get("value"), reveal)[0] if reveal else SECRET_MASK), True
            if "value" not in value:
                return UNKNOWN_MASK, False
            return decode(value["value"], reveal)
        if sig == RESOURCE_SIG:
            return value.get("urn"), False
        if sig == ASSET_SIG:
            for kind in ("text", "path", "uri"):
                if kind in value:
                    return {"asset": kind, "value": value[kind]}, False
        if sig == ARCHIVE_SIG:
            return {"archive": {k: v for k, v in value.items() if k != SIG_KEY}}, False
        out, secret = {}, False
        for key, item in value.items():
            out[key], item_secret = decode(item, reveal)
            secret = secret or item_secret
        return out, secret
    if isinstance(value, list):
        out_list, secret = [], False
        for item in value:
            plain, item_secret = decode(item, reveal)
            out_list.append(plain)
            secret = secret or item_secret
        return out_list, secret
    if isinstance(value, float):
        return _plain_number(value), False
    if value == UNKNOWN:
        return UNKNOWN_MASK, False
    return value, False


def leaf_path(parts: tuple) -> str:
    """``("spec", "services", 0, "envs", 2, "value")`` -> ``spec.services[0].envs[2].value``:
    the key format of ``secret_leaves`` in the state JSON, which ``synth diff`` rebuilds."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def secret_leaf_paths(value: Any, parts: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys and list indexes) of the secret values inside an engine wire value.

    The walk stops at a secret: a secret object is one leaf, masked as a whole."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG or (sig == OUTPUT_SIG and value.get("secret")):
            return [parts]
        if sig == OUTPUT_SIG:
            return secret_leaf_paths(value.get("value"), parts) if "value" in value else []
        if sig in (RESOURCE_SIG, ASSET_SIG, ARCHIVE_SIG):
            return []
        return [p for key, item in value.items() for p in secret_leaf_paths(item, parts + (key,))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in secret_leaf_paths(item, parts + (index,))]
    return []


def _at(value: Any, parts: tuple) -> Any:
    for part in parts:
        value = value[part]
    return value


def digest(value: Any) -> str:
    """A short digest of a (revealed) secret value: enough to tell that it changed."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# Docker takes environment variables as ``NAME=value`` strings (pulumi_docker Container.envs);
# the name of a secret one is not secret, and a diff that names it is far more useful.
_ENV_NAME = re.compile(r"^([A-Z_][A-Z0-9_]{0,63})=")


def secret_leaves(raw: dict[str, Any], revealed: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{leaf path: {"digest": ..., ["env": NAME]}}`` for every secret leaf of the inputs."""
    leaves: dict[str, dict[str, str]] = {}
    for key in sorted(raw):
        for parts in secret_leaf_paths(raw[key], (key,)):
            value = _at(revealed, parts)
            leaf = {"digest": digest(value)}
            if parts[0] == "envs" and len(parts) == 2 and isinstance(value, str):
                match = _ENV_NAME.match(value)
                if match:
                    leaf["env"] = match.group(1)
            leaves[leaf_path(parts)] = leaf
    return leaves


def decode_struct(struct, reveal: bool = False) -> tuple[dict[str, Any], list[str]]:
    raw = json_format.MessageToDict(struct, preserving_proto_field_name=True)
    inputs: dict[str, Any] = {}
    secret_keys: list[str] = []
    for key, value in sorted(raw.items()):
        inputs[key], secret = decode(value, reveal)
        if secret:
            secret_keys.append(key)
    return inputs, sorted(secret_keys)


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

    def to_json(self, reveal: bool = False) -> dict[str, Any]:
        """Resources sorted by URN and invokes by content: both arrive in async order, which
        would make diffs noisy.

        ``reveal`` puts secret input values in place of the mask (for policy checks and tests;
        never written to disk by the CLI)."""
        resources = sorted(self.resources, key=lambda r: r["urn"])
        if reveal:
            resources = [{**r, "inputs": self.revealed_inputs.get(r["urn"], r["inputs"])}
                         for r in resources]
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": resources,
            "outputs": self.outputs,
            "invokes": sorted(self.invokes, key=lambda i: json.dumps(i, sort_keys=True)),
            "secret_placeholders": self.secret_placeholders,
            "secret_outputs": sorted(self.secret_outputs),
        }


class SynthMocks(pulumi_mocks.Mocks):
    """Computed outputs and invoke answers, overridable per test."""

    def __init__(
        self,
        invoke_answers: Optional[Mapping[str, Callable[[dict], dict]]] = None,
        resource_outputs: Optional[Mapping[str, Callable[[str, dict], dict]]] = None,
    ):
        self.invoke_answers = {**mockdata.INVOKE_ANSWERS, **(invoke_answers or {})}
        self.resource_outputs = {**mockdata.RESOURCE_OUTPUTS, **(resource_outputs or {})}

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        extra = self.resource_outputs.get(args.typ)
        state = {**args.inputs, **(extra(args.name, args.inputs) if extra else {})}
        resource_id = args.resource_id or mockdata.mock_id(args.typ, args.name)
        return resource_id, state

    def call(self, args: pulumi_mocks.MockCallArgs):
        answer = self.invoke_answers.get(args.token)
        if answer is None:
            raise UnansweredInvoke(
                f"the mock engine has no answer for invoke {args.token}; add one to "
                "synth/mockdata.py INVOKE_ANSWERS"
            )
        return answer(args.args)


class CaptureMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: SynthMocks, capture: Capture):
        super().__init__(mocks)
        self.capture = capture
        self.stack_urn: Optional[str] = None

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
        self.capture.resources.append(entry)
        return entry

    def RegisterResource(self, request):
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return resource_pb2.RegisterResourceResponse(urn=urn)
        _ensure_event_loop()
        inputs, secret_keys = decode_struct(request.object)
        entry = self._record(request, urn, inputs, secret_keys, read=False)
        if secret_keys:
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
            inputs=rpc.deserialize_properties(request.object),
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
        )
        id_, state = self.mocks.new_resource(resource_args)
        # The real engine marks these outputs secret; the SDK leaves that to the engine.
        for key in request.additionalSecretOutputs:
            if key in state and not _is_secret_wire(state[key]):
                state[key] = {SIG_KEY: SECRET_SIG, "value": state[key]}
        obj_proto = _sync_await(rpc.serialize_properties(state, {}))
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj_proto)

    def ReadResource(self, request):
        urn = self.make_urn(request.parent, request.type, request.name)
        _ensure_event_loop()
        inputs, secret_keys = decode_struct(request.properties)
        self._record(request, urn, inputs, secret_keys, read=True)
        return super().ReadResource(request)

    def Invoke(self, request):
        _ensure_event_loop()
        args, _ = decode_struct(request.args)
        self.capture.invokes.append({"token": request.tok, "args": args})
        return super().Invoke(request)


def _is_secret_wire(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


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


def run_program(
    program: Callable[[], None],
    *,
    stack: str,
    config: Mapping[str, str],
    secret_keys: list[str],
    project: str = "platform",
    mocks: Optional[SynthMocks] = None,
    capture: Optional[Capture] = None,
) -> Capture:
    """Run ``program`` under the mock engine and return what it registered.

    Pass ``capture`` to inspect what was registered even when the program raises.

    Runs in a fresh ``contextvars.Context`` because Pulumi keeps its runtime settings, root
    stack and config in context variables: every run starts from nothing, so tests can run
    many programs in one process without state leaking between them.
    """
    capture = capture if capture is not None else Capture(project=project, stack=stack)

    def run() -> Capture:
        # The SDK keeps pending output tasks in a process-wide set, outside any context variable;
        # tasks left by a run that failed would otherwise be awaited on this run's loop.
        pulumi.runtime.settings.SETTINGS.outputs.clear()
        # This context is the synth's own: placeholders warn here and fail a real deploy.
        OFFLINE_SYNTH.set(True)
        monitor = CaptureMonitor(mocks or SynthMocks(), capture)
        pulumi.runtime.set_all_config(dict(config), list(secret_keys))
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi_mocks.set_mocks(
                monitor.mocks, project=project, stack=stack, preview=False,
                logger=_LogCollector(capture), monitor=monitor,
            )
            root = pulumi.runtime.settings.get_root_resource()

            async def body() -> None:
                await pulumi.runtime.stack.run_pulumi_func(program)
                capture.outputs = await _resolve_outputs(root.outputs, capture)

            loop.run_until_complete(body())
        finally:
            pulumi.runtime.settings.SETTINGS.outputs.clear()
            # A program that raised leaves registrations in flight; cancel them so the loop
            # closes cleanly instead of warning about destroyed pending tasks.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            asyncio.set_event_loop(None)
            loop.close()
        return capture

    return contextvars.Context().run(run)


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
