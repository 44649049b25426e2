"""Converge runs on the lab's boxes and the change drills built on them: ``run_converge`` (one
run of ``rehearsal.converge`` inside the lab's namespace, killed at its timeout), ``only_hosts``
and ``write_plan`` (the plan it runs), and ``Drill`` / ``run_drill`` (a change converged onto
the running boxes, then observed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from rehearsal import restarts as restarts_mod
from rehearsal.capture import StackCapture
from rehearsal.report import Report

CONVERGE_TIMEOUT_S = 40 * 60


@dataclass
class DrillContext:
    """What a drill's ``observe`` sees: the running ``lab`` (``lab.exec`` into a box), the
    ``services`` (``rehearsal.services.LabServices``: the mail, the webhook posts), the lab
    captures ``before`` and ``after`` its change (lab addresses, revealed inputs) and its
    ``runs``: the step results of its converges (apply, then settle)."""

    lab: Any
    services: Any
    before: StackCapture
    after: StackCapture
    runs: list[list[dict]] = field(default_factory=list)


@dataclass
class Drill:
    """A change converged onto the running boxes, then observed on the running services.

    ``stack_file``: the changed stack file (None: the config as it was; with no ``reissue``
    either, nothing is converged and ``observe`` runs on the lab as it stands); ``reissue``:
    ``tls:*`` resource names whose certificates are issued anew (``pulumi up --replace``);
    ``observe(context) -> dict``: what the running services show, kept in the report (it may
    raise: the error is the drill's); ``hosts``: the hosts (names) the change is converged onto
    (None: every host of the held lab), so that a drill on a shared staging lab pays for the
    boxes it observes only. Order: capture with the same keys and secrets (``CaptureMemory``)
    -> the same overlay -> converge (changes expected) -> converge again (0 changes) ->
    ``observe``."""

    name: str
    observe: Callable[[DrillContext], dict]
    stack_file: Optional[Path] = None
    reissue: Sequence[str] = ()
    hosts: Optional[Sequence[str]] = None


class ConvergeTimeout(RuntimeError):
    """A converge run overran its timeout and was killed; ``results`` holds what it finished,
    and a failed result (error "timed out") for each step it was in the middle of or had not
    started, so the report names them per host."""

    def __init__(self, message: str, results: list[dict]):
        super().__init__(message)
        self.results = results


def run_converge(lab, plan_path: Path, workdir: Path, run: int, workers: int,
                 expect_changes: bool = False, timeout: Optional[float] = None) -> list[dict]:
    """One converge run inside the lab's namespace (a child process: its SSH and Docker
    connections originate there). ``expect_changes``: a run after a config change (see
    ``rehearsal.converge``). Returns the step results. Raises ConvergeTimeout after
    ``timeout`` seconds (default :data:`CONVERGE_TIMEOUT_S`), RuntimeError when the run wrote
    no results."""
    from rehearsal.converge import progress_path

    timeout = CONVERGE_TIMEOUT_S if timeout is None else timeout
    results = workdir / f"results-{run}.json"
    argv = lab.netns_argv([sys.executable, "-m", "rehearsal.converge", str(plan_path), str(results),
                           "--workdir", str(workdir), "--run", str(run), "--workers", str(workers),
                           *(["--expect-changes"] if expect_changes else [])])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # Its own process group: a killed run takes its ssh and docker children with it.
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=None, start_new_session=True)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ConvergeTimeout(f"converge run {run} timed out after {timeout:.0f} s",
                              _unfinished(plan_path, progress_path(results), run, timeout)) from None
    if not results.exists():
        raise RuntimeError(f"converge run {run} wrote no results (exit {proc.returncode})")
    return json.loads(results.read_text())


def _unfinished(plan_path: Path, progress: Path, run: int, timeout: float) -> list[dict]:
    done: list[dict] = []
    running: set[str] = set()
    if progress.exists():
        partial = json.loads(progress.read_text())
        done, running = partial["done"], set(partial["running"])
    finished = {r["urn"] for r in done}
    unfinished = []
    for step in json.loads(plan_path.read_text())["steps"]:
        if step["urn"] in finished:
            continue
        state = "was running" if step["urn"] in running else "had not started"
        unfinished.append({"urn": step["urn"], "name": step["name"], "host": step["host"],
                           "kind": step["kind"], "run": run, "status": "failed",
                           "error": f"timed out: the run was killed after {timeout:.0f} s and this step {state}",
                           "seconds": 0.0, "exit_code": None, "changes": None, "changed": [],
                           "resource_id": None, "tail": []})
    return done + unfinished


def only_hosts(cap: StackCapture, hosts: Optional[Iterable[str]]) -> StackCapture:
    """``cap`` with only the ``hosts`` named (all when None), their steps and nothing else; a
    dependency on a step of another host is left out (the converge waits only for steps it has).
    Raises ValueError naming a host the capture does not have."""
    if hosts is None:
        return cap
    wanted = set(hosts)
    unknown = wanted - set(cap.hosts)
    if unknown:
        raise ValueError(f"hosts {sorted(unknown)} are not in the capture (it has {sorted(cap.hosts)})")
    return StackCapture(stack=cap.stack, hosts={n: h for n, h in cap.hosts.items() if n in wanted},
                        steps=[s for s in cap.steps if s.host in wanted], products=cap.products,
                        database_hosts=cap.database_hosts, state=cap.state, stack_config=cap.stack_config)


def write_plan(lab_cap: StackCapture, path: Path) -> None:
    """The converge plan (revealed secrets: 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(lab_cap.to_json(), out)


def run_drill(report: Report, drill: Drill, lab, services, workdir: Path, run_no: int, workers: int,
              *, before: StackCapture, recapture: Callable[[Drill], StackCapture],
              converged: Optional[Callable[[StackCapture], None]] = None) -> int:
    """One ``Drill``: its change converged (changes expected), converged again (0 changes),
    then observed; the result goes to ``report.drills[drill.name]`` (``runs``: per run the
    changes per host and the steps that changed; ``seconds``; ``restarts``: per host the
    services expected to restart and those that did, ``rehearsal.restarts.compare``, or
    ``{"error": ...}``; ``observation`` or ``error``). ``before``: what every box of the lab
    runs; ``converged`` is told the capture the drill's hosts run after its converges.
    Returns the last run number used."""
    entry: dict[str, Any] = {"runs": {}, "seconds": {}}
    report.drills[drill.name] = entry
    context = DrillContext(lab=lab, services=services, before=before, after=before)
    started = time.monotonic()
    try:
        if drill.stack_file is not None or drill.reissue:
            t0 = time.monotonic()
            context.after = recapture(drill)
            entry["seconds"]["capture"] = round(time.monotonic() - t0, 2)
            plan_path = workdir / f"plan-{drill.name}.json"
            write_plan(context.after, plan_path)
            restarts = RestartWatch(lab, before, context.after)
            for expect_changes in (True, False):
                run_no += 1
                t0 = time.monotonic()
                results = run_converge(lab, plan_path, workdir, run_no, workers, expect_changes)
                entry["seconds"][f"converge_{run_no}"] = round(time.monotonic() - t0, 2)
                report.add_results(run_no, results)
                context.runs.append(results)
                entry["runs"][run_no] = {
                    "expect_changes": expect_changes,
                    "changes": {h: sum(r["changes"] or 0 for r in results if r["host"] == h)
                                for h in context.after.hosts},
                    "changed_steps": sorted(r["name"] for r in results if r["changes"]),
                    "failed": sorted(f'{r["name"]}: {r["error"]}' for r in results
                                     if r["status"] in ("failed", "blocked", "changed")),
                }
            if converged is not None:
                converged(context.after)
            entry["restarts"] = restarts.result()
        t0 = time.monotonic()
        entry["observation"] = drill.observe(context)
        entry["seconds"]["observe"] = round(time.monotonic() - t0, 2)
    except Exception as exc:  # noqa: BLE001 - a drill's failure is its report entry
        entry["error"] = f"{type(exc).__name__}: {exc}"
    entry["seconds"]["total"] = round(time.monotonic() - started, 2)
    return run_no


class RestartWatch:
    """The services a drill restarted, against those its change should restart: every box of
    ``before`` (what the lab runs) snapshotted at creation and again at ``result`` (after the
    converges of ``after``, the drill's hosts). A snapshot that fails is the result's
    ``error``, not the drill's: the drill's own observation still runs."""

    def __init__(self, lab, before: StackCapture, after: StackCapture):
        self.lab, self.before, self.after = lab, before, after
        self.units = {h: restarts_mod.platform_units([before, after], h) for h in before.hosts}
        self.error: Optional[str] = None
        try:
            self.first = restarts_mod.snapshot(lab, self.units)
        except Exception as exc:  # noqa: BLE001 - reported in the drill's entry
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        try:
            observed = restarts_mod.observed_restarts(self.first, restarts_mod.snapshot(self.lab, self.units))
            expected = restarts_mod.expected_restarts(self.before, self.after)
        except Exception as exc:  # noqa: BLE001 - reported in the drill's entry
            return {"error": f"{type(exc).__name__}: {exc}"}
        return restarts_mod.compare(expected, observed)


def merged(running: StackCapture, after: StackCapture) -> StackCapture:
    """``running`` with the steps of ``after``'s hosts replaced by ``after``'s: what the boxes
    run once a drill converged ``after`` (some of the hosts) onto them."""
    steps = [s for s in running.steps if s.host not in after.hosts] + list(after.steps)
    return StackCapture(stack=running.stack, hosts=running.hosts, steps=steps, products=running.products,
                        database_hosts=running.database_hosts, state=running.state,
                        stack_config=running.stack_config)
