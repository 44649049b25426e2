"""Measure the offline synth of each committed stack against its floor, side by side in one run.

    python -m benchmarks.synth [--stacks staging prod] [--rounds 3]

For each stack, three commands run in fresh processes, interleaved round by round so that a busy
machine slows them alike:

- ``synth``: ``python -m synth STACK --json FILE`` (the whole program on the capturing engine);
- ``preview``: the same with ``--preview``;
- ``floor``: the same provider SDKs imported, and as many bare resources (no inputs) as the
  stack registers, on Pulumi's own mock engine (``pulumi.runtime.set_mocks``) with a ``Mocks``
  that echoes inputs: the least any program of that size can cost here;
- ``stock``: the stack's whole program, in preview, on Pulumi's own mock engine with the same
  answers but no capture, no checks: what the program itself costs, so that the difference
  to ``preview`` is the synth engine's own cost.

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


STOCK = r"""
import sys
sys.path.insert(0, ".")
import pulumi
from pulumi.runtime import mocks
from synth import mockdata
from synth.engine import program_from_main
from synth.run import stack_file_path, with_placeholder_secrets
from synth.stackfile import load_stack_file

class Stock(mocks.Mocks):
    def new_resource(self, args):
        return ("" if not args.resource_id else args.resource_id), args.inputs
    def call(self, args):
        return mockdata.INVOKE_ANSWERS[args.token](args.args)

stack = sys.argv[1]
file = load_stack_file(stack_file_path(stack), stack, "platform")
with_placeholder_secrets(file)
pulumi.runtime.set_all_config(dict(file.config), list(file.secret_keys))
pulumi.runtime.set_mocks(Stock(), project="platform", stack=stack, preview=True)
mocks._sync_await(pulumi.runtime.stack.run_pulumi_func(program_from_main()))
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
            "stock": [sys.executable, "-c", STOCK, stack],
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
                    f"({best['preview'][0] / floor:.2f}x) | {best['stock'][0]:.2f} "
                    f"({best['stock'][0] / floor:.2f}x) | "
                    f"{best['preview'][0] / best['stock'][0]:.2f}x |")
    print("| stack | resources | floor CPU s | synth CPU s (x floor) | preview CPU s (x floor) "
          "| program on Pulumi's mocks, preview (x floor) | preview / program on Pulumi's mocks |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
