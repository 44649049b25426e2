"""Bad input to `python -m synth`, `check` and `diff`: one line, exit 2, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from synth.engine import PROJECT_ROOT

pytestmark = pytest.mark.fast


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synth", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _one_line_exit_2(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    # The synth's placeholder warning may precede the error; the error itself is one line.
    errors = [l for l in result.stderr.splitlines() if not l.startswith(("warning: ", "  - "))]
    assert len(errors) == 1 and errors[0].startswith("error: ") and fragment in errors[0], errors


@pytest.mark.parametrize("content, fragment", [
    ('{"stack": "prod", "resources": [{"type": "x", "name": "y", "inputs": {}}]}', "resources[0] has no urn"),
    ("[1, 2]", "no resources list"),
    ("{oops", "is not JSON"),
])
def test_check_of_a_bad_hand_written_state(tmp_path, content, fragment):
    state = tmp_path / "state.json"
    state.write_text(content)
    _one_line_exit_2(run("check", str(state)), fragment)


def test_check_of_a_minimal_hand_written_state_runs(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"stack": "prod", "resources": [{"urn": "u", "type": "x", "name": "y"}]}')
    result = run("check", str(state))
    assert result.returncode == 0, result.stderr


def test_check_with_an_unreadable_policy_config(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"stack": "prod", "resources": []}')
    config = tmp_path / "policy.json"
    config.write_text("{not json")
    _one_line_exit_2(run("check", str(state), "--config", str(config)), "policy config")


@pytest.mark.parametrize("args, fragment", [
    (("prod", "--bogus"), "unrecognized arguments: --bogus"),
    (("no-such-stack",), "no stack file"),
    (("diff", "only-one.json"), "required: head"),
    (("check",), "required: state"),
])
def test_bad_arguments_are_one_line(args, fragment):
    _one_line_exit_2(run(*args), fragment)


def test_an_unwritable_output_is_one_line(tmp_path):
    _one_line_exit_2(run("staging", "--json", str(tmp_path / "missing-dir" / "s.json"), timeout=600),
                     "cannot write")


@pytest.mark.parametrize("option, target, fragment", [
    ("--diagram-svg", "missing-dir/x.svg", "does not exist"),
    ("--markdown", "missing-dir/s.md", "does not exist"),
    ("--json", "a-file/s.json", "is not a directory"),
    ("--json", "a-dir", "it is a directory"),
])
def test_outputs_are_checked_before_the_synth_runs(tmp_path, option, target, fragment):
    """A bad output path fails at once: no synth ran (it would print the placeholder warnings
    and take seconds), one line, exit 2, and nothing is written."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("staging", option, str(tmp_path / target), timeout=120)
    _one_line_exit_2(result, fragment)
    assert "warning:" not in result.stderr, "the synth ran before the output was checked"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_diff_markdown_to_a_missing_directory_fails_before_diffing(tmp_path):
    state = tmp_path / "s.json"
    state.write_text('{"stack": "prod", "resources": []}')
    result = run("diff", str(state), str(state), "--markdown", str(tmp_path / "nope" / "d.md"))
    _one_line_exit_2(result, "does not exist")
    assert result.stdout == "", "the diff ran before the output was checked"


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    assert "python -m synth check STATE.json" in result.stdout
    assert "python -m synth diff BASE.json HEAD.json" in result.stdout
    assert "python -m synth rehearse STACK" in result.stdout
    assert "--allow-stateful-changes" in run("diff", "--help").stdout


def test_strict_secrets_lists_each_key_once():
    result = run("staging", "--strict-secrets")
    assert result.returncode == 2
    keys = re.findall(r"- (platform:\w+): required secret is not set", result.stderr)
    assert keys and len(keys) == len(set(keys)), keys
    assert "platform:pencom_oracle_password" in keys and "platform:pencom_sendgrid_api_key" in keys


def test_the_synth_runs_with_the_cyclic_collector_off():
    """benchmarks/synth.py: a quarter of a synth's CPU went to full collections rescanning the
    provider SDKs' objects; the CLI turns the collector off for its short run (the benchmark's
    floor-gc-off column measures the same setting). Checked in a child process, since the
    setting lasts for the process."""
    probe = (
        "import gc, sys, synth.run\n"
        "def capture(*a, **k):\n"
        "    print('collector on' if gc.isenabled() else 'collector off')\n"
        "    raise SystemExit(0)\n"
        "synth.run.synth_capture = capture\n"
        "from synth.__main__ import main\n"
        "main(['staging'])\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "collector off", result.stderr


def test_the_cli_freezes_the_heap_before_the_shutdown_collection():
    """The interpreter's shutdown runs a full collection even with the collector off; over the
    SDKs' objects it cost 0.7 to 1.3 CPU s per CLI run (benchmarks/synth.py). The CLI freezes
    the heap in an atexit hook, which runs before that collection. The probe's own hook is
    registered first, so it runs after the CLI's (atexit is last in, first out)."""
    probe = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
        "from synth.__main__ import main\n"
        "raise SystemExit(main(['staging', '--strict-secrets']))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    frozen = int(result.stdout.split()[-1])
    assert frozen > 100_000, result.stdout


def test_check_refuses_another_stacks_policy_levels_for_a_state(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"stack": "prod", "resources": [{"urn": "u", "type": "x", "name": "y"}]}')
    _one_line_exit_2(run("check", str(state), "--stack", "staging"),
                     "is the state of stack 'prod', not 'staging'; drop --stack or pass --stack prod")
    assert run("check", str(state), "--stack", "prod").returncode == 0
