"""Measure a whole rehearsal of a stack (default ``staging``) with the image cache warm.

    python -m benchmarks.rehearsal [STACK] [--workers N] [--baseline-workers M]

Runs the rehearsal (capture, lab, stand-ins, box hand-over, two converges, checks, teardown)
and prints its phases as one Markdown table row for the README, against the budget of 20
minutes on a 2-core machine. With ``--baseline-workers M`` it runs again with M workers, side by
side, and prints the ratio (the parallelism the converge gets from independent hosts). The box
image built from nothing is measured separately by ``benchmarks.box_image``.
"""

from __future__ import annotations

import argparse
import os
import time

BUDGET_S = 20 * 60


def _row(stack: str, workers: int, report, seconds: float) -> str:
    t = report.timings
    lab = sum(v for k, v in t.items() if k.startswith("lab_"))
    images = sum(v for k, v in t.items() if k.startswith("images_"))
    steps = sum(h.runs.get(1, {}).get("steps", 0) for h in report.hosts.values())
    return (f"| {stack} | {len(report.hosts)} | {steps} | {workers} | {t.get('capture', 0):.0f} | {lab:.0f} | "
            f"{images:.0f} | {t.get('converge_1', 0):.0f} | {t.get('converge_2', 0):.0f} | "
            f"{t.get('checks', 0):.0f} | {seconds:.0f} ({seconds / BUDGET_S:.0%} of budget) | "
            f"{'ok' if report.ok else 'FAILED'} |")


def main() -> int:
    from rehearsal.rehearse import rehearse

    parser = argparse.ArgumentParser()
    parser.add_argument("stack", nargs="?", default="staging")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--baseline-workers", type=int, default=0)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print("| stack | hosts | steps | workers | capture s | lab s | images s | converge 1 s | "
          "converge 2 s | checks s | total s | result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    runs = [args.workers] + ([args.baseline_workers] if args.baseline_workers else [])
    totals = []
    for workers in runs:
        started = time.perf_counter()
        report = rehearse(args.stack, workers=workers)
        seconds = time.perf_counter() - started
        totals.append(seconds)
        print(_row(args.stack, workers, report, seconds), flush=True)
    if len(totals) == 2:
        print(f"ratio {runs[0]} workers / {runs[1]} workers: {totals[0] / totals[1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
