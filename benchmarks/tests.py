"""What the test suite costs, in CPU seconds, against a baseline commit run side by side.

    python -m benchmarks.tests [-m "not rehearsal"] [-n 2] [--baseline REF] [--top 10] [PATHS...]

Runs ``pytest -m EXPR -n N`` on this checkout and, with ``--baseline``, at the same time on REF
(extracted with ``git archive`` into a temporary directory that shares this checkout's
``.venv``), each with the ``benchmarks.pytest_cputime`` plugin. The measure is CPU time (user +
system of pytest, its xdist workers and every tool they ran): wall time on a shared machine
mostly measures the neighbours. The wall time is printed too, with the load average, and on an
idle machine with N >= cores it is about CPU / cores plus the time tests spend waiting.

A baseline before the tier markers (before 2026-12-01) selects nothing with ``-m fast`` or
``-m realtool``: compare such a baseline with ``-m "not rehearsal"``.

Prints a Markdown table: per run the test count, CPU seconds, wall seconds, the ratio head /
baseline, and the slowest tests by CPU + wait (wall); ``--json PATH`` writes the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checkout(ref: str, into: Path) -> Path:
    """REF's tree under ``into``, with this checkout's .venv and the measuring plugin."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / ".venv").symlink_to((ROOT / ".venv").resolve())
    shutil.copy2(ROOT / "benchmarks" / "pytest_cputime.py", into / "benchmarks" / "pytest_cputime.py")
    return into


def _start(root: Path, marker: str, workers: int, paths: list[str], out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTEST_CPUTIME_DIR": str(out),
           "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(root / ".venv" / "bin" / "python"), "-m", "pytest", "-p", "benchmarks.pytest_cputime",
            "-p", "no:cacheprovider", "-q", "-m", marker, *(["-n", str(workers)] if workers else []), *paths]
    return subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(process: subprocess.Popen) -> tuple[float, str]:
    """CPU seconds of the whole process tree (os.wait4 counts every waited-for descendant)."""
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, output


def _tests(out: Path) -> dict[str, dict]:
    tests: dict[str, dict] = {}
    for path in out.glob("*.json"):
        tests.update(json.loads(path.read_text())["tests"])
    return tests


def measure(roots: dict[str, Path], marker: str, workers: int, paths: list[str]) -> dict[str, dict]:
    """Run the selection in every root at once; per run: cpu, wall, exit code, tests."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-tests-"))
    started = time.monotonic()
    processes = {label: _start(root, marker, workers, paths, scratch / label) for label, root in roots.items()}
    results: dict[str, dict] = {}

    def finish(label: str) -> None:
        cpu, output = _wait(processes[label])
        results[label] = {"cpu_s": round(cpu, 1), "wall_s": round(time.monotonic() - started, 1),
                          "exit_code": processes[label].returncode, "summary": output.strip().splitlines()[-1:]}

    with ThreadPoolExecutor(len(processes)) as pool:  # each run's own end time
        list(pool.map(finish, processes))
    for label in processes:
        results[label]["tests"] = _tests(scratch / label)
    results = {label: results[label] for label in processes}
    shutil.rmtree(scratch, ignore_errors=True)
    return results


def _slowest(tests: dict[str, dict], top: int) -> list[tuple[str, float, float]]:
    rows = [(test, r["cpu_self"] + r["cpu_children"], r["wall"]) for test, r in tests.items()]
    return sorted(rows, key=lambda row: -max(row[1], row[2]))[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", dest="marker", default="not rehearsal")
    parser.add_argument("-n", dest="workers", type=int, default=2, help="pytest-xdist workers (0: none)")
    parser.add_argument("--baseline", help="a git ref to run side by side")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--json", type=Path)
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        roots = {"head": ROOT}
        if args.baseline:
            roots = {"baseline": _checkout(args.baseline, Path(tmp)), **roots}
        load = os.getloadavg()[0]
        results = measure(roots, args.marker, args.workers, args.paths)
    cores = os.cpu_count()
    print(f"`pytest -m \"{args.marker}\" -n {args.workers}` on {cores} cores, load average {load:.1f} at the start\n")
    print("| run | tests | CPU s | wall s | CPU vs baseline | exit |\n|---|---|---|---|---|---|")
    for label, r in results.items():
        ratio = (f"{r['cpu_s'] / results['baseline']['cpu_s']:.2f}x" if "baseline" in results else "")
        print(f"| {label} | {len(r['tests'])} | {r['cpu_s']} | {r['wall_s']} | {ratio} | {r['exit_code']} |")
    for label, r in results.items():
        print(f"\nSlowest ({label}), CPU s / wall s:\n")
        for test, cpu, wall in _slowest(r["tests"], args.top):
            print(f"- `{test}`: {cpu:.1f} / {wall:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return max(r["exit_code"] for r in results.values())


if __name__ == "__main__":
    sys.exit(main())
