"""Measure the offline synth of each committed stack against its floor, side by side in one run.

    python -m benchmarks.synth [--stacks staging prod] [--rounds 5]

For each stack, these commands run in fresh processes, interleaved round by round so that a busy
machine slows them alike:

- ``synth``: ``python -m synth STACK --json FILE`` (the whole program on the capturing engine);
- ``preview``: the same with ``--preview``;
- ``floor``: the same provider SDKs imported, and as many bare resources (no inputs) as the
  stack registers, on Pulumi's own mock engine (``pulumi.runtime.set_mocks``) with a ``Mocks``
  that echoes inputs: the least any program of that size can cost here;
- ``floor-gc-off``: the floor with the cyclic garbage collector off from the start, as the synth
  CLI runs (``synth/__main__.py``): the floor a program gets with the same interpreter setting,
  so that the collector alone cannot make the synth look cheap;
- ``stock``: the stack's whole program, in preview, on Pulumi's own mock engine with the same
  answers and the same collector setting but no capture, no checks: what the program itself
  costs, so that the difference to ``preview`` is the synth engine's own cost.

CPU time (user + system) of each process is the measure (wall time on a shared machine mostly
measures the neighbours). Each ratio is taken within one round (the commands of a round ran
side by side) and the median over the rounds is reported, with the median CPU seconds. Prints a
Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOOR = r"""
import gc, sys
if sys.argv[3] == "gc-off":
    gc.disable()
import pulumi
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
import gc, sys
gc.disable()
sys.path.insert(0, ".")
import pulumi
from pulumi.runtime import mocks
from synth import mockdata
from synth.engine import program_from_main
from synth.run import stack_file_path, with_placeholder_secrets
from synth.stackfile import load_stack_file
from stacks.placeholders import OFFLINE_SYNTH

OFFLINE_SYNTH.set(True)  # offline, as the synth: placeholders warn instead of failing


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
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="platform-bench-synth-"))
    rows = []
    for stack in args.stacks:
        count, packages = _stack_size(stack, workdir)
        floor = [sys.executable, "-c", FLOOR, str(count), ",".join(packages)]
        commands = {
            "floor": floor + ["gc-on"],
            "floor-gc-off": floor + ["gc-off"],
            "synth": [sys.executable, "-m", "synth", stack, "--json", str(workdir / f"{stack}.json")],
            "preview": [sys.executable, "-m", "synth", stack, "--preview",
                        "--json", str(workdir / f"{stack}-preview.json")],
            "stock": [sys.executable, "-c", STOCK, stack],
        }
        rounds = []
        for _ in range(args.rounds):
            rounds.append({name: _cpu_seconds(command)[0] for name, command in commands.items()})

        def cpu(name: str) -> float:
            return statistics.median(r[name] for r in rounds)

        def ratio(name: str, base: str) -> str:
            return f"{statistics.median(r[name] / r[base] for r in rounds):.2f}x"

        rows.append(f"| {stack} | {count} | {cpu('floor'):.2f} | {cpu('floor-gc-off'):.2f} | "
                    f"{cpu('synth'):.2f} ({ratio('synth', 'floor')}, {ratio('synth', 'floor-gc-off')}) | "
                    f"{cpu('preview'):.2f} ({ratio('preview', 'floor')}, "
                    f"{ratio('preview', 'floor-gc-off')}) | {cpu('stock'):.2f} | "
                    f"{ratio('preview', 'stock')} |")
    print(f"median of {args.rounds} rounds; ratios taken within each round")
    print("| stack | resources | floor CPU s | floor, collector off CPU s | synth CPU s (x floor, "
          "x floor collector off) | `--preview` CPU s (x floor, x floor collector off) "
          "| program on Pulumi's mocks, preview CPU s | `--preview` / program on Pulumi's mocks |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
