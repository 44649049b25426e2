"""The rehearsal report: per host, the steps each converge ran, the changes each run made,
every check (pass, fail or not proven) and timings; the first failing step of a host with its
exit code and the last lines of its output.

JSON shape (``Report.to_json``)::

    {"stack": "staging", "ok": false, "error": null, "timings": {"capture": 31.2, ...},
     "standins": {"postgres:17.2-bookworm": {"kind": "postgres", "proven": true, "note": "..."}},
     "hosts": {"pencom-staging-edge": {
         "product": "pencom", "kind": "onprem", "address": "10.200.0.12",
         "runs": {"1": {"steps": 31, "ok": 31, "failed": 0, "blocked": 0, "changes": 57, "seconds": 80.1},
                  "2": {...}},
         "failures": [{"run": 1, "step": "pencom-staging-edge-setup-ufw", "kind": "command",
                       "exit_code": 1, "error": "exit code 1", "tail": ["..."]}],
         "checks": [{"name": "sshd: passwordauthentication no", "status": "pass", "detail": ""}],
         "counts": {"pass": 40, "fail": 0, "not proven": 3}}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

PASS, FAIL, NOT_PROVEN = "pass", "fail", "not proven"


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""


@dataclass
class HostReport:
    name: str
    product: str
    kind: str
    address: str
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, NOT_PROVEN: 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    @property
    def ok(self) -> bool:
        return not self.failures and all(c.status != FAIL for c in self.checks) and bool(self.runs)


@dataclass
class Report:
    stack: str
    hosts: dict[str, HostReport] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    standins: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: Optional[str] = None
    teardown_error: Optional[str] = None
    kept: Optional[str] = None
    netns: Optional[str] = None
    """The lab's network namespace (gone after teardown unless kept)."""
    reachability: list[dict[str, Any]] = field(default_factory=list)
    """The reachability matrix, observed next to expected (``rehearsal.checks.reachability.rows``)."""
    drills: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per drill (``rehearsal.rehearse.Drill``): ``runs`` (run number -> changes per host, the
    steps that changed, the failures), ``seconds``, ``observation`` or ``error``."""

    def add_results(self, run: int, results: list[dict[str, Any]]) -> None:
        for host in self.hosts.values():
            mine = [r for r in results if r["host"] == host.name]
            host.runs[run] = {
                "steps": len(mine),
                "ok": sum(r["status"] == "ok" for r in mine),
                "failed": sum(r["status"] in ("failed", "changed") for r in mine),
                "blocked": sum(r["status"] == "blocked" for r in mine),
                "changes": sum(r["changes"] or 0 for r in mine),
                "seconds": round(sum(r["seconds"] for r in mine), 1),
            }
            for r in mine:
                if r["status"] in ("failed", "changed"):
                    host.failures.append({"run": run, "step": r["name"], "kind": r["kind"],
                                          "exit_code": r["exit_code"], "error": r["error"],
                                          "changed": r.get("changed") or [], "tail": r["tail"]})

    def converged(self, run: int) -> bool:
        return all(h.runs.get(run, {}).get("failed", 1) == 0 and h.runs[run]["blocked"] == 0
                   for h in self.hosts.values())

    @property
    def ok(self) -> bool:
        return self.error is None and self.teardown_error is None and bool(self.hosts) and \
            all(h.ok for h in self.hosts.values()) and all(2 in h.runs for h in self.hosts.values()) and \
            all(cell["status"] != FAIL for cell in self.reachability) and \
            not any("error" in d for d in self.drills.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack, "ok": self.ok, "error": self.error,
            "teardown_error": self.teardown_error, "kept": self.kept, "netns": self.netns,
            "timings": self.timings, "standins": self.standins,
            "hosts": {n: {"product": h.product, "kind": h.kind, "address": h.address,
                          "runs": {str(k): v for k, v in h.runs.items()}, "failures": h.failures,
                          "checks": [c.__dict__ for c in h.checks], "counts": h.counts()}
                      for n, h in sorted(self.hosts.items())},
            "reachability": {"counts": _counts(self.reachability), "cells": self.reachability},
            "drills": self.drills,
        }

    def text(self) -> str:
        """A table per host and every failure with its step, exit code and last lines."""
        lines = [f"rehearsal of {self.stack}: {'OK' if self.ok else 'FAILED'}"]
        if self.error:
            lines.append(f"error: {self.error}")
        lines.append(f"{'host':28} {'run1 steps/chg':>15} {'run2 steps/chg':>15} "
                     f"{'pass':>5} {'fail':>5} {'n/p':>5}")
        for name, h in sorted(self.hosts.items()):
            r1, r2 = h.runs.get(1, {}), h.runs.get(2, {})
            c = h.counts()
            lines.append(f"{name:28} {_run(r1):>15} {_run(r2):>15} {c[PASS]:>5} {c[FAIL]:>5} "
                         f"{c[NOT_PROVEN]:>5}")
        for name, h in sorted(self.hosts.items()):
            for f in h.failures:
                lines.append(f"\n{name}: run {f['run']} step {f['step']} failed "
                             f"(exit code {f['exit_code']}): {f['error']}")
                lines += [f"  | {t}" for t in f["tail"][-10:]]
            for c in h.checks:
                if c.status == FAIL:
                    lines.append(f"{name}: check failed: {c.name}: {c.detail}")
        if self.reachability:
            c = _counts(self.reachability)
            lines.append(f"reachability matrix: {c[PASS]} pass, {c[FAIL]} fail, {c[NOT_PROVEN]} not proven")
            for cell in self.reachability:
                if cell["status"] == FAIL:
                    lines.append(f"  {cell['position']} -> {cell['host']}/{cell['side']}:{cell['port']}/"
                                 f"{cell['protocol']} ({cell['address']}): observed {cell['observed']}, "
                                 f"the tier model says {cell['expected']} ({cell['reason']})")
        lines.append("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.timings.items()))
        if self.kept:
            lines.append(self.kept)
        if self.teardown_error:
            lines.append(f"teardown left: {self.teardown_error}")
        return "\n".join(lines)

    def write_json(self, path) -> None:
        from pathlib import Path

        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _counts(cells: list[dict[str, Any]]) -> dict[str, int]:
    out = {PASS: 0, FAIL: 0, NOT_PROVEN: 0}
    for cell in cells:
        out[cell["status"]] += 1
    return out


def _run(r: dict) -> str:
    if not r:
        return "-"
    bad = r["failed"] + r["blocked"]
    return f"{r['ok']}/{r['steps']} {r['changes']}" + (f" !{bad}" if bad else "")
