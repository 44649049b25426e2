"""A converge run that overruns its timeout is killed, and the report still names, per host,
what finished and which steps were running or had not started (a loaded machine once lost a
whole 40-minute run to an empty report)."""

from __future__ import annotations

import json
import sys

import pytest

from rehearsal.converge import progress_path
from rehearsal.rehearse import ConvergeTimeout, run_converge
from rehearsal.report import HostReport, Report

pytestmark = pytest.mark.fast


def _step(urn: str, host: str) -> dict:
    return {"urn": urn, "name": urn.rsplit("::", 1)[-1], "host": host, "kind": "command"}


class SlowLab:
    """netns_argv that ignores the converge and, like a stuck run, writes its progress and hangs."""

    def __init__(self, progress: dict):
        self.progress = progress

    def netns_argv(self, argv):
        results = argv[argv.index("rehearsal.converge") + 2]
        script = ("import json, sys, time\n"
                  f"open({str(progress_path(__import__('pathlib').Path(results)))!r}, 'w')"
                  f".write(json.dumps({self.progress!r}))\n"
                  "time.sleep(60)\n")
        return [sys.executable, "-c", script]


def test_a_killed_run_reports_its_finished_running_and_unstarted_steps(tmp_path):
    plan = tmp_path / "plan.json"
    steps = [_step("u::a", "h1"), _step("u::b", "h1"), _step("u::c", "h2")]
    plan.write_text(json.dumps({"steps": steps}))
    done = {"urn": "u::a", "name": "a", "host": "h1", "kind": "command", "run": 1, "status": "ok",
            "seconds": 2.0, "exit_code": 0, "changes": 1, "changed": [], "resource_id": None,
            "error": None, "tail": []}
    lab = SlowLab({"done": [done], "running": ["u::b"]})

    with pytest.raises(ConvergeTimeout) as caught:
        run_converge(lab, plan, tmp_path, 1, 2, timeout=3)

    assert "timed out after 3 s" in str(caught.value)
    by_name = {r["name"]: r for r in caught.value.results}
    assert by_name["a"]["status"] == "ok"
    assert by_name["b"]["status"] == "failed" and "was running" in by_name["b"]["error"]
    assert by_name["c"]["status"] == "failed" and "had not started" in by_name["c"]["error"]

    report = Report(stack="t")
    report.hosts = {h: HostReport(name=h, product="p", kind="onprem", address="10.0.0.1") for h in ("h1", "h2")}
    report.add_results(1, caught.value.results)
    assert report.hosts["h1"].runs[1]["ok"] == 1 and report.hosts["h1"].runs[1]["failed"] == 1
    assert [f["step"] for f in report.hosts["h2"].failures] == ["c"]


def test_a_run_killed_before_any_progress_fails_every_step(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [_step("u::a", "h1")]}))

    class Hung:
        def netns_argv(self, argv):
            return [sys.executable, "-c", "import time; time.sleep(60)"]

    with pytest.raises(ConvergeTimeout) as caught:
        run_converge(Hung(), plan, tmp_path, 2, 1, timeout=1)
    assert [r["status"] for r in caught.value.results] == ["failed"]
    assert caught.value.results[0]["run"] == 2


def test_a_killed_run_takes_its_children_with_it(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [_step("u::a", "h1")]}))
    marker = tmp_path / "child.pid"

    class Forking:
        def netns_argv(self, argv):
            return ["sh", "-c", f"sleep 60 & echo $! > {marker}; wait"]

    with pytest.raises(ConvergeTimeout):
        run_converge(Forking(), plan, tmp_path, 1, 1, timeout=2)
    child = int(marker.read_text())
    import os
    import time

    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a killed child is reaped by init; until then it may linger as a zombie
        if open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the run's child {child} outlived the timeout")
