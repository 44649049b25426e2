"""Run the Pulumi program against the SDK's mock engine and capture the desired state.

The mock engine itself (``SynthMocks``, ``CaptureMonitor``) is ``synth/mock_monitor.py``; what a
run captures (``Capture``) is ``synth/capture.py``. This module runs the program under them, in
a fresh context per run, and raises what the engine found after the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pulumi
from pulumi.runtime import mocks as pulumi_mocks

from synth import wire
from synth.capture import Capture
from synth.mock_monitor import CaptureMonitor, DuplicateUrn, MockDataError, PulumiUrnInput, SynthMocks
from synth.values import SECRET_MASK, UNKNOWN_MASK
from stacks.placeholders import OFFLINE_SYNTH


PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
