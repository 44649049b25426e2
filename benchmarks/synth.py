"""Measure the offline synth of each committed stack against its floor, side by side in one run.

    python -m benchmarks.synth [--stacks staging prod] [--rounds 3]

For each stack, three commands run in fresh processes, interleaved round by round so that a busy
machine slows them alike:

- ``synth``: ``python -m synth STACK --json FILE`` (the whole program on the capturing engine);
- ``preview``: the same with ``--preview``;
- ``floor``: the same provider SDKs imported, and as many bare resources (no inputs) as the
  stack registers, on Pulumi's own mock engine (``pulumi.runtime.set_mocks``) with a ``Mocks``
  that echoes inputs: the least any program of that size can cost here.

CPU time (user + system) of each process is the measure (wall time on a shared machine mostly
measures the neighbours); the best round counts. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOOR = r"""
import sys, pulumi
from pulumi.runtime import mocks
for package in sys.argv[2].split(","):
    __import__(package)

class Echo(mocks.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", args.inputs
    def call(self, args):
        return {}

def program():
    for i in range(int(sys.argv[1])):
        pulumi.CustomResource("bench:index:Bare", f"r{i}", {})

pulumi.runtime.set_mocks(Echo(), project="platform", stack="bench", preview=False)
pulumi.runtime.mocks._sync_await(pulumi.runtime.stack.run_pulumi_func(program))
"""


def _cpu_seconds(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    return usage.ru_utime + usage.ru_stime, wall


def _stack_size(stack: str, workdir: Path) -> tuple[int, list[str]]:
    out = workdir / f"{stack}-size.json"
    subprocess.run([sys.executable, "-m", "synth", stack, "--json", str(out)], cwd=ROOT,
                   check=True, capture_output=True)
    resources = json.loads(out.read_text())["resources"]
    packages = sorted({f"pulumi_{r['type'].split(':')[2] if r['type'].startswith('pulumi:providers:') else r['type'].split(':')[0]}"
                       for r in resources if r["custom"]})
    return len(resources), packages


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stacks", nargs="+", default=["staging", "prod"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="platform-bench-synth-"))
    rows = []
    for stack in args.stacks:
        count, packages = _stack_size(stack, workdir)
        commands = {
            "floor": [sys.executable, "-c", FLOOR, str(count), ",".join(packages)],
            "synth": [sys.executable, "-m", "synth", stack, "--json", str(workdir / f"{stack}.json")],
            "preview": [sys.executable, "-m", "synth", stack, "--preview",
                        "--json", str(workdir / f"{stack}-preview.json")],
        }
        best = {name: (float("inf"), 0.0) for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                cpu, wall = _cpu_seconds(command)
                if cpu < best[name][0]:
                    best[name] = (cpu, wall)
        floor = best["floor"][0]
        rows.append(f"| {stack} | {count} | {floor:.2f} | {best['synth'][0]:.2f} "
                    f"({best['synth'][0] / floor:.2f}x) | {best['preview'][0]:.2f} "
                    f"({best['preview'][0] / floor:.2f}x) |")
    print("| stack | resources | floor CPU s | synth CPU s (x floor) | preview CPU s (x floor) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
