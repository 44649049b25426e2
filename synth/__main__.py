"""``python -m synth STACK``: the program's desired state, with no Pulumi CLI, plugins or credentials.

Exit codes: 0 success, 2 invalid stack config, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synth",
        description="Run the Pulumi program against the mock engine and write its desired state.",
    )
    parser.add_argument("stack", help="stack name; reads Pulumi.STACK.yaml")
    parser.add_argument("--stack-file", type=Path, help="read config from this file instead")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the desired state here")
    parser.add_argument("--markdown", type=Path, help="write a Markdown summary here")
    parser.add_argument(
        "--strict-secrets", action="store_true",
        help="fail when a required secret is missing instead of filling a placeholder",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from stacks.errors import ConfigError
    from synth.run import synth_stack
    from synth.stackfile import StackFileError
    from synth.summary import markdown, text_table

    try:
        state = synth_stack(args.stack, stack_file=args.stack_file,
                            fill_secrets=not args.strict_secrets)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StackFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - the CLI's job is a clear message, not a traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: synth of stack {args.stack} failed: {type(exc).__name__}: {exc}"
              + ("" if args.debug else " (rerun with --debug for the traceback)"),
              file=sys.stderr)
        return EXIT_FAILED

    if args.json_path:
        args.json_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(state) + "\n")
    print(text_table(state))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
