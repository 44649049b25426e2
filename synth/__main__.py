"""``python -m synth``: the program's desired state, with no Pulumi CLI, plugins or credentials.

    python -m synth STACK [--json PATH] [--markdown PATH] [--policy]   synthesize a stack
    python -m synth check STATE.json [--stack NAME] [--config PATH]    run the policy pack
    python -m synth diff BASE.json HEAD.json [--markdown PATH]         what a change does
    python -m synth rehearse STACK [--product NAME] [--keep] [--json REPORT]  real hosts (README)

Exit codes: 0 success, 1 failure or a mandatory policy violation, 2 invalid stack config,
3 (diff) the change replaces or deletes a stateful or protected resource.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _synth_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synth",
        description="Run the Pulumi program against the mock engine and write its desired "
        "state. Other commands: `python -m synth check STATE.json`.",
    )
    parser.add_argument("stack", help="stack name; reads Pulumi.STACK.yaml")
    parser.add_argument("--stack-file", type=Path, help="read config from this file instead")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the desired state here")
    parser.add_argument("--markdown", type=Path, help="write a Markdown summary here")
    parser.add_argument("--diagram-svg", type=Path, help="write the tier diagram as SVG (Graphviz)")
    parser.add_argument("--policy", action="store_true",
                        help="run the policy pack; exit 1 on a mandatory violation")
    parser.add_argument("--policy-config", type=Path,
                        help="policy config JSON (default: policy/config.STACK.json if present)")
    parser.add_argument(
        "--strict-secrets", action="store_true",
        help="fail when a required secret is missing instead of filling a placeholder",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synth check",
        description="Run the policy pack over any desired-state JSON of the synth shape.")
    parser.add_argument("state", type=Path, help="desired-state JSON")
    parser.add_argument("--config", type=Path, help="policy config JSON")
    parser.add_argument("--stack", help="read policy/config.STACK.json (default: the file's stack)")
    return parser


def _policy_config(path: Path | None, stack: str) -> dict:
    from policy.offline import load_policy_config

    if path is not None:
        return json.loads(path.read_text())
    return load_policy_config(stack)


def diff(argv: list[str]) -> int:
    from synth.cost import PriceTable, delta_markdown
    from synth.diff import diff_states, markdown

    parser = argparse.ArgumentParser(prog="python -m synth diff",
                                     description="Markdown of what HEAD changes relative to BASE.")
    parser.add_argument("base", type=Path)
    parser.add_argument("head", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    try:
        base, head = (json.loads(p.read_text()) for p in (args.base, args.head))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read a state file: {exc}", file=sys.stderr)
        return EXIT_FAILED
    result = diff_states(base, head)
    text = markdown(result, base, head, delta_markdown(base, head, PriceTable.load()))
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return result.exit_code


def check(argv: list[str]) -> int:
    from policy.offline import evaluate, has_mandatory, report_text

    args = _check_parser().parse_args(argv)
    try:
        document = json.loads(args.state.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read {args.state}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not isinstance(document, dict) or not isinstance(document.get("resources"), list):
        print(f"error: {args.state} is not a desired-state document (no resources list)",
              file=sys.stderr)
        return EXIT_FAILED
    violations = evaluate(document, _policy_config(args.config, args.stack or document.get("stack", "")))
    print(report_text(violations))
    return EXIT_FAILED if has_mandatory(violations) else EXIT_OK


def synth(argv: list[str]) -> int:
    args = _synth_parser().parse_args(argv)
    from stacks.errors import ConfigError
    from synth.run import synth_capture
    from synth.stackfile import StackFileError
    from synth.summary import markdown, text_table

    try:
        capture = synth_capture(args.stack, stack_file=args.stack_file,
                                fill_secrets=not args.strict_secrets)
    except (ConfigError, StackFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - the CLI's job is a clear message, not a traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: synth of stack {args.stack} failed: {type(exc).__name__}: {exc}"
              + ("" if args.debug else " (rerun with --debug for the traceback)"),
              file=sys.stderr)
        return EXIT_FAILED

    state = capture.to_json()
    exit_code = EXIT_OK
    if args.policy:
        from policy.offline import evaluate, has_mandatory, report_text

        # Policies see secret values, as they do under the real engine; the file does not.
        violations = evaluate(capture.to_json(reveal=True),
                              _policy_config(args.policy_config, args.stack))
        state["violations"] = violations
        print(report_text(violations))
        exit_code = EXIT_FAILED if has_mandatory(violations) else EXIT_OK
    if args.json_path:
        args.json_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    if args.diagram_svg:
        from synth.diagram import write_svg
        from synth.state import State

        write_svg(State(state), args.diagram_svg)
    if args.markdown:
        args.markdown.write_text(markdown(state) + "\n")
    print(text_table(state))
    return exit_code


def main(argv: list[str] | None = None) -> int:
    # `python -m synth prod | head` should stop quietly, not with a BrokenPipeError traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        return check(argv[1:])
    if argv and argv[0] == "diff":
        return diff(argv[1:])
    if argv and argv[0] == "rehearse":
        from rehearsal.__main__ import main as rehearse

        return rehearse(argv[1:])
    return synth(argv)


if __name__ == "__main__":
    sys.exit(main())
