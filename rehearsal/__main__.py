"""``python -m synth rehearse STACK [--product NAME ...] [--keep] [--json REPORT]``: converge
every host the stack manages on local Debian boxes, twice, and check them (see README,
"Rehearsal"). Exit codes: 0 every host converged twice and every check passed or is "not
proven"; 1 a host failed (the report names the step, its exit code and last lines); 2 the stack
config is invalid; 3 another rehearsal holds the lab lock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", help="stack name; reads Pulumi.STACK.yaml")
    parser.add_argument("--product", action="append", dest="products", metavar="NAME",
                        help="rehearse only this product's hosts (repeatable)")
    parser.add_argument("--keep", action="store_true", help="leave the boxes running at the end")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the report here")
    parser.add_argument("--workers", type=int, default=4, help="steps applied in parallel (default 4)")
    args = parser.parse_args(argv)

    from rehearsal.capture import CaptureError
    from rehearsal.netns import LabBusy
    from rehearsal.rehearse import rehearse
    from stacks.errors import ConfigError
    from synth.stackfile import StackFileError

    try:
        report = rehearse(args.stack, products=args.products, keep=args.keep, workers=args.workers)
    except (ConfigError, StackFileError, CaptureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except LabBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    if args.json_path:
        report.write_json(args.json_path)
    print(report.text())
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
