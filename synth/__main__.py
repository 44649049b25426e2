"""``python -m synth``: the program's desired state, with no Pulumi CLI, plugins or credentials.

    python -m synth STACK [--json PATH] [--markdown PATH] [--diagram-svg PATH] [--observed REPORT]
                          [--policy] [--preview] [--check-schema]      synthesize a stack
    python -m synth check STATE.json [--stack NAME] [--config PATH]    run the policy pack
    python -m synth diff BASE.json HEAD.json [--markdown PATH]         what a change does
    python -m synth rehearse STACK [--product NAME] [--keep] [--json REPORT]  real hosts (README)

Exit codes: 0 success, 1 failure, a mandatory policy violation or (--check-schema) a schema
finding, 2 bad input (invalid stack config, unreadable or malformed file, bad arguments,
missing Graphviz: one line, no traceback without --debug), 3 (diff) the change deletes or
replaces a stateful or protected resource.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import signal
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
COMMANDS = """commands:
  python -m synth STACK ...                   synthesize a stack (this help)
  python -m synth check STATE.json ...        run the policy pack on any desired-state JSON
  python -m synth diff BASE.json HEAD.json    the pull-request diff of two states
  python -m synth rehearse STACK ...          build a stack's hosts for real in a lab (README)
run `python -m synth check --help`, `python -m synth diff --help` or
`python -m synth rehearse --help` for theirs"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2) instead of the usage block."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_CONFIG, f"error: {message} (see `{self.prog} --help`)\n")


def _synth_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m synth",
        description="Run the Pulumi program against the mock engine and write its desired state.",
        epilog=COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stack", help="stack name; reads Pulumi.STACK.yaml")
    parser.add_argument("--stack-file", type=Path, help="read config from this file instead")
    parser.add_argument("--json", type=Path, dest="json_path", help="write the desired state here")
    parser.add_argument("--markdown", type=Path, help="write a Markdown summary here")
    parser.add_argument("--diagram-svg", type=Path,
                        help="write one diagram per product as SVG (Graphviz): PATH with "
                        "-PRODUCT before the suffix")
    parser.add_argument("--observed", type=Path, metavar="REPORT.json",
                        help="a rehearsal report of this stack (`python -m synth rehearse STACK --json "
                        "PATH`): its reachability matrix is drawn beside the planned diagrams, in "
                        "--markdown and as -PRODUCT-observed SVGs with --diagram-svg")
    parser.add_argument("--policy", action="store_true",
                        help="run the policy pack; exit 1 on a mandatory violation")
    parser.add_argument("--policy-config", type=Path,
                        help="policy config JSON (default: policy/config.STACK.json if present)")
    parser.add_argument(
        "--strict-secrets", action="store_true",
        help="fail when a required secret is missing instead of filling a placeholder",
    )
    parser.add_argument("--preview", action="store_true",
                        help="run as `pulumi preview` of a new stack would: outputs of resources "
                        "not yet created are unknown and apply callbacks on them do not run")
    parser.add_argument("--review", action="store_true",
                        help="also record what `synth diff` shows a reviewer: which lines of a "
                        "secret script are plain, and (with --preview) which inputs an unknown "
                        "value hides; one more run of the program")
    parser.add_argument("--check-schema", action="store_true",
                        help="check every input, provider configuration and invoke argument "
                        "against the installed provider SDKs' schemas; exit 1, one line per "
                        "finding")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m synth check",
        description="Run the policy pack over any desired-state JSON of the synth shape.")
    parser.add_argument("state", type=Path, help="desired-state JSON")
    parser.add_argument("--config", type=Path, help="policy config JSON")
    parser.add_argument("--stack", help="read policy/config.STACK.json (default: the file's stack)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _policy_config(path: Path | None, stack: str) -> dict:
    """The policy config at ``path``, or ``policy/config.STACK.json``; _BadInput when it cannot
    be read or names a policy or level the pack does not have (policy.offline.check_policy_config)."""
    from policy.offline import PolicyConfigError, check_policy_config, load_policy_config

    try:
        return load_policy_config(stack) if path is None else check_policy_config(_read_json(path), str(path))
    except PolicyConfigError as exc:
        raise _BadInput(str(exc)) from None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise _BadInput(f"cannot read the policy config {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise _BadInput(f"the policy config {path} is not JSON: {exc.msg} at line {exc.lineno}") from None


def diff(argv: list[str]) -> int:
    from synth.cost import PriceTable, delta_markdown
    from synth.diff import DiffInputError, diff_states, markdown

    parser = _Parser(prog="python -m synth diff",
                                     description="Markdown of what HEAD changes relative to BASE "
                                     "(the pull-request comment). Exit 3 when it deletes or "
                                     "replaces a stateful resource.")
    parser.add_argument("base", type=Path)
    parser.add_argument("head", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the Markdown here")
    parser.add_argument("--allow-stateful-changes", action="store_true",
                        help="accept deleting or replacing stateful resources (exit 0); "
                        "never in a production stack")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if problem := _check_outputs(args.markdown):
        return _fail(problem, args.debug)
    try:
        base, head = (_read_state(p) for p in (args.base, args.head))
        result = diff_states(base, head, allow_stateful_changes=args.allow_stateful_changes)
        text = markdown(result, base, head, delta_markdown(base, head, PriceTable.load()))
    except (_BadInput, DiffInputError) as exc:
        return _fail(str(exc), args.debug)
    except Exception as exc:  # noqa: BLE001 - a clear message, not a traceback
        return _fail(f"cannot diff {args.base} and {args.head}: {type(exc).__name__}: {exc}", args.debug)
    print(text, end="")
    if args.markdown:
        try:
            args.markdown.write_text(text)
        except OSError as exc:
            return _fail(f"cannot write {args.markdown}: {exc.strerror}", args.debug)
    return result.exit_code


class _BadInput(Exception):
    """A file the command cannot use: one line for the user, exit 2."""


def _read_state(path: Path) -> dict:
    """The state at ``path``, its shape checked once (``synth.state.shape_problem``) so no
    later reader meets a list where an object belongs. Raises _BadInput."""
    from synth.state import shape_problem

    try:
        text = path.read_bytes().decode("utf-8")
        document = json.loads(text)
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise _BadInput(f"{path} is not UTF-8 text (byte offset {exc.start}); give the JSON of "
                        "`python -m synth STACK --json`") from None
    except json.JSONDecodeError as exc:
        raise _BadInput(f"{path} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise _BadInput(f"{path}: JSON nested too deeply to be a state") from None
    if problem := shape_problem(document):
        raise _BadInput(f"{path}: {problem}" if problem.startswith(("resources", "outputs")) else f"{path} {problem}")
    return document


def _unwritable(path: Path, *, directory_only: bool = False) -> str | None:
    """Why ``path`` cannot be written, or None: checked before any work, so that a typo in an
    output path costs a second, not a whole synth. ``directory_only`` checks only the directory
    the file goes in (``--diagram-svg`` writes ``<stem>-<product>.svg`` beside ``path``)."""
    parent = path.parent
    if not parent.exists():
        return f"cannot write {path}: the directory {parent} does not exist (create it first)"
    if not parent.is_dir():
        return f"cannot write {path}: {parent} is not a directory"
    if not directory_only and path.is_dir():
        return f"cannot write {path}: it is a directory; give a file name"
    if not directory_only and path.exists():
        return None if os.access(path, os.W_OK) else f"cannot write {path}: permission denied"
    return None if os.access(parent, os.W_OK | os.X_OK) else (
        f"cannot write {path}: permission denied in {parent}")


def _check_outputs(*paths: Path | None, directories: tuple[Path | None, ...] = ()) -> str | None:
    for path in paths:
        if path is not None and (problem := _unwritable(path)):
            return problem
    for path in directories:
        if path is not None and (problem := _unwritable(path, directory_only=True)):
            return problem
    return None


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _observed(path: Path, stack: str, drawn_into: Path | None) -> list[dict]:
    """The matrix cells of the rehearsal report at ``path`` (``--observed``), read before the
    synth runs so a bad report costs nothing."""
    from synth.diagram import ObservedReportError, reachability_cells

    if drawn_into is None:
        raise _BadInput("--observed draws into the diagrams: give --markdown PATH or --diagram-svg PATH too")
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise _BadInput(f"cannot read the rehearsal report {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise _BadInput(f"the rehearsal report {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if isinstance(report, dict) and report.get("stack") not in (None, stack):
        raise _BadInput(f"the rehearsal report {path} is of stack {report.get('stack')!r}, not {stack!r}: "
                        f"rehearse {stack} or synth {report.get('stack')}")
    try:
        return reachability_cells(report)
    except ObservedReportError as exc:
        raise _BadInput(f"the rehearsal report {path}: {exc}") from None


# A state's strings are the program's own output (a host script on stdin holds whole files: 53 KB
# for Grafana's today), not one argv word, so the config boundary's 128 KiB does not apply; the
# cap keeps a hand-made state from holding the policy pack's parsers for minutes (a 1 MB
# realistic script checks in about 5 s).
STATE_STRING_MAX_BYTES = 4 * 1024 * 1024


def check(argv: list[str]) -> int:
    from policy.offline import evaluate, has_mandatory, report_text
    from synth.state import oversized_string

    args = _check_parser().parse_args(argv)
    try:
        document = _read_state(args.state)
        own = document.get("stack")
        if args.stack and own and args.stack != own:
            # Checking prod's state against staging's policy levels would pass what prod refuses.
            raise _BadInput(f"{args.state} is the state of stack {own!r}, not {args.stack!r}; "
                            f"drop --stack or pass --stack {own}")
        config = _policy_config(args.config, args.stack or own or "")
        if (oversized := oversized_string(document, STATE_STRING_MAX_BYTES)) is not None:
            raise _BadInput(f"{args.state}: {oversized}, more than the {STATE_STRING_MAX_BYTES:,} a string of a "
                            "state may be; the policy pack parses no string that size: shorten it or deliver "
                            "the data as a file")
        violations = evaluate(document, config)
    except _BadInput as exc:
        return _fail(str(exc), args.debug)
    except Exception as exc:  # noqa: BLE001 - a hand-written state can be wrong in many ways
        return _fail(f"{args.state} cannot be checked: {type(exc).__name__}: {exc}"
                     + ("" if args.debug else " (rerun with --debug for the traceback)"), args.debug)
    print(report_text(violations))
    return EXIT_FAILED if has_mandatory(violations) else EXIT_OK


def synth(argv: list[str]) -> int:
    args = _synth_parser().parse_args(argv)
    from synth.stackfile import stack_file_problem

    if problem := stack_file_problem(args.stack, args.stack_file):
        return _fail(problem, args.debug)
    if problem := _check_outputs(args.json_path, args.markdown, directories=(args.diagram_svg,)):
        return _fail(problem, args.debug)
    observed = None
    if args.observed is not None:
        try:
            observed = _observed(args.observed, args.stack, args.markdown or args.diagram_svg)
        except _BadInput as exc:
            return _fail(str(exc), args.debug)
    # The cyclic collector is off for the rest of this short-lived process: the provider SDKs
    # leave about 400,000 long-lived objects that every full collection scans again, which
    # cost about a quarter of a synth's CPU time (benchmarks/synth.py), while a synth makes
    # little cyclic garbage (peak RSS about 5 MB higher, measured on staging). Reference
    # counting still frees everything else.
    gc.disable()
    from stacks.errors import ConfigError
    from synth.run import synth_capture
    from synth.stackfile import StackFileError
    from synth.summary import markdown, text_table

    try:
        capture = synth_capture(args.stack, stack_file=args.stack_file,
                                fill_secrets=not args.strict_secrets, preview=args.preview,
                                review=args.review)
    except (ConfigError, StackFileError) as exc:
        return _fail(str(exc), args.debug)
    except Exception as exc:  # noqa: BLE001 - the CLI's job is a clear message, not a traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: synth of stack {args.stack} failed: {type(exc).__name__}: {exc}"
              + ("" if args.debug else " (rerun with --debug for the traceback)"),
              file=sys.stderr)
        return EXIT_FAILED

    for log in capture.logs:
        if log["level"] == "warning":
            print(f"warning: {log['message']}", file=sys.stderr)
    state = capture.to_json()
    exit_code = EXIT_OK
    if args.check_schema:
        findings = capture.schema_findings()
        for finding in findings:
            print(f"schema: {finding}", file=sys.stderr)
        if findings:
            exit_code = EXIT_FAILED
    if args.policy:
        from policy.offline import evaluate, has_mandatory, report_text

        try:
            config = _policy_config(args.policy_config, args.stack)
        except _BadInput as exc:
            return _fail(str(exc), args.debug)
        # Policies see secret values, as they do under the real engine; the file does not.
        violations = evaluate(capture.to_json(reveal=True), config)
        state["violations"] = violations
        print(report_text(violations))
        if has_mandatory(violations):
            exit_code = EXIT_FAILED
    try:
        if args.json_path:
            args.json_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        if args.markdown:
            args.markdown.write_text(markdown(state, observed) + "\n")
    except OSError as exc:
        return _fail(f"cannot write {exc.filename}: {exc.strerror}", args.debug)
    if args.diagram_svg:
        from synth.diagram import GraphvizMissing, write_svg
        from synth.state import State

        try:
            for path in write_svg(State(state), args.diagram_svg, observed):
                print(f"wrote {path}", file=sys.stderr)
        except (GraphvizMissing, OSError, RuntimeError) as exc:
            return _fail(str(exc), args.debug)
    print(text_table(state))
    return exit_code


def main(argv: list[str] | None = None) -> int:
    # `python -m synth prod | head` should stop quietly, not with a BrokenPipeError traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # The interpreter's shutdown runs one full collection even with the collector disabled;
    # over the provider SDKs' and the capture's objects it cost 0.7 to 1.3 CPU s of a 4 to 5 s
    # synth, including a config error's (benchmarks/synth.py). Freezing at exit (atexit runs
    # before that collection) leaves it nothing to scan. Cyclic garbage left at exit then goes
    # unfinalized, as under os._exit; every file a command writes is closed before it returns.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
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
