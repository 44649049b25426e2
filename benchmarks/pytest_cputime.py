"""A pytest plugin that records each test's CPU time (this process plus the tools it ran).

    python -m pytest -p benchmarks.pytest_cputime ...   # writes $PYTEST_CPUTIME_DIR/<worker>.json

Wall time on a shared machine mostly measures the neighbours; CPU time (user + system of the
test process, plus that of the child processes it waited for: real tools, daemons) is what a
test costs. Setup, call and teardown are summed per test id. Used by ``benchmarks.tests``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

_RECORDS: dict[str, dict[str, float]] = {}


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    own0, children0 = _cpu()
    wall0 = time.monotonic()
    yield
    own1, children1 = _cpu()
    _RECORDS[item.nodeid] = {
        "cpu_self": own1 - own0,
        "cpu_children": children1 - children0,
        "wall": time.monotonic() - wall0,
        "markers": sorted({m.name for m in item.iter_markers()} & {"fast", "realtool", "rehearsal"}),
    }


def pytest_sessionfinish(session):
    directory = os.environ.get("PYTEST_CPUTIME_DIR")
    if not directory:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    own, children = _cpu()
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / f"{worker}.json").write_text(json.dumps(
        {"tests": _RECORDS, "process_cpu_self": own, "process_cpu_children": children}))
