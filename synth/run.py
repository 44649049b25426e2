"""Synthesize one stack: read its file, validate its config, run the program, return the state."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from synth.capture import Capture
from synth.engine import PROJECT_ROOT, program_from_main, run_program
from synth.mock_monitor import SynthMocks
from synth.secret_lines import mark_secret_lines, rotate_config
from synth.stackfile import StackFile, load_stack_file, placeholder_for, project_name


def stack_file_path(stack: str, project_dir: Path = PROJECT_ROOT) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def with_placeholder_secrets(stack_file: StackFile) -> list[str]:
    """Fill the secrets the config needs but the file lacks, so synth runs with no credentials.

    Raises ConfigError when the config itself is invalid (before anything is registered).
    """
    from stacks.config import validate_stack_config

    config = validate_stack_config(stack_file.platform_values(), check_secrets=False, stack=stack_file.stack,
                                   other=stack_file.other_values())
    filled = []
    for secret in config.required_secrets():
        key = f"{stack_file.project}:{secret.key}"
        if key not in stack_file.config:
            stack_file.config[key] = placeholder_for(key)
            stack_file.secret_keys.append(key)
            filled.append(key)
    return filled


def synth_stack(stack: str, *, reveal_secrets: bool = False, **options: Any) -> dict[str, Any]:
    """The desired state of ``stack`` in the synth JSON shape (see README); ``options`` are
    ``synth_capture``'s."""
    return synth_capture(stack, **options).to_json(reveal=reveal_secrets)


def synth_capture(
    stack: str,
    *,
    stack_file: Optional[Path] = None,
    project_dir: Path = PROJECT_ROOT,
    fill_secrets: bool = True,
    mocks: Optional[SynthMocks] = None,
    program: Optional[Callable[[], None]] = None,
    config_overrides: Optional[Mapping[str, str]] = None,
    preview: bool = False,
    review: bool = False,
) -> Capture:
    """Run the stack's program and keep the whole capture (masked and revealed inputs);
    ``preview`` runs it as ``pulumi preview`` of a new stack (see ``run_program``).

    ``review`` (the CLI's ``--review``, which the pull-request preview passes) runs the program
    once more for what a reviewer's diff needs: with ``preview``, with every output known (the
    digests of the inputs an unknown hides); without, with every secret changed (which lines of
    a secret script are plain). It costs one more run of the program (about 1 CPU s of a
    staging synth's 2.8), so a plain synth, a test's and the rehearsal's do without it."""
    project = project_name(project_dir)
    file = load_stack_file(stack_file or stack_file_path(stack, project_dir), stack, project)
    if config_overrides:
        file.config.update(config_overrides)
    placeholders = with_placeholder_secrets(file) if fill_secrets else []
    def run(dry_run: bool, config: Mapping[str, str] = file.config, run_mocks: Optional[SynthMocks] = mocks) -> Capture:
        return run_program(program or program_from_main(project_dir), stack=stack, config=config,
                           secret_keys=file.secret_keys, project=project, mocks=run_mocks, preview=dry_run)

    capture = run(preview)
    capture.secret_placeholders = placeholders
    if not review:
        return capture
    if preview:
        # An unknown hides the known inputs it is made from (a DATABASE_URL of an unknown
        # password and a changed CA path is "[unknown]" either way), so two previews would be
        # identical; the digest of what the value is with the mock outputs known tells them apart.
        capture.known_digests = run(False).input_digests()
    elif capture.revealed_inputs:
        rotated_mocks = copy.copy(mocks) if mocks is not None else SynthMocks()
        rotated_mocks.rotate_secrets = True
        rotated_config = {k: rotate_config(v) if k in file.secret_keys else v for k, v in file.config.items()}
        try:
            rotated = run(False, rotated_config, rotated_mocks)
        except Exception:  # noqa: BLE001 - a value the rotation breaks: the inputs stay whole secrets
            return capture
        mark_secret_lines(capture, rotated)
    return capture
