"""Property test: every leaf of both committed stack files, mutated in typed ways, gives exit 0
with a config that passes the policy pack's mandatory policies, or exit 2 naming that leaf's
path; never exit 1, never a traceback. In-process through the CLI's own entry point."""

from __future__ import annotations

import contextlib
import copy
import io
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synth.__main__ import main
from synth.engine import PROJECT_ROOT

pytestmark = pytest.mark.fast

OUTCOMES: Counter = Counter()
SECRET = "postgres://admin:S3cr3tPassw0rd@db.example.com/app"


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _leaves(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _leaves(item, path + (index,))
        out.append(path)
    else:
        out.append(path)
    return out


DOCUMENTS = {s: yaml.safe_load((PROJECT_ROOT / f"Pulumi.{s}.yaml").read_text()) for s in ("staging", "prod")}
LEAVES = {s: [p for p in _leaves(d["config"]) if p and str(p[0]).startswith("platform:")]
          for s, d in DOCUMENTS.items()}


def _mutations(value: Any, siblings: list) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("null", None), ("secret", SECRET)]
    if isinstance(value, bool):
        out += [("wrong type", "maybe")]
    elif isinstance(value, (int, float)):
        out += [("wrong type", "many"), ("empty", 0), ("out of range", 10**9), ("out of range", -1)]
    elif isinstance(value, str):
        out += [("wrong type", 12345), ("empty", ""), ("out of range", "x" * 300)]
    elif isinstance(value, list):
        out += [("wrong type", "x"), ("empty", [])]
    out += [("duplicate", s) for s in siblings[:3]]
    return out


def _path_text(path: tuple) -> str:
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _named(stderr: str, path: tuple, original: Any = None) -> bool:
    """The message names the leaf's path (list items' labels ignored), or a path inside it, or
    the item or object that holds it (a whole list item or a parent's rule). One exception:
    a name other keys refer to (a service's name) may instead be reported where those
    references now dangle ("audit is not an app service"), each naming the missing name."""
    if isinstance(original, str) and re.search(rf"\b{re.escape(original)} (is not|has no)", stderr):
        return True
    bare = re.sub(r"\] \([^)]*\)", "]", stderr)
    target = _path_text(path)
    paths = re.findall(r"^  - (platform:[^:]+(?::[^ :]+)?)", bare, flags=re.M)
    paths = [p.rstrip(":") for p in re.findall(r"^  - (\S+?):(?: |$)", bare, flags=re.M)]
    return any(p == target or p.startswith(target + ".") or p.startswith(target + "[")
               or target.startswith(p + ".") or target.startswith(p + "[") for p in paths) or target in bare


@st.composite
def mutated(draw, stack: str):
    path = draw(st.sampled_from(LEAVES[stack]))
    document = copy.deepcopy(DOCUMENTS[stack])
    parent = document["config"]
    for part in path[:-1]:
        parent = parent[part]
    value = parent[path[-1]]
    if isinstance(parent, list):
        siblings = [v for i, v in enumerate(parent) if i != path[-1]]
    else:
        siblings = [v for k, v in parent.items() if k != path[-1] and type(v) is type(value)]
    kind, new = draw(st.sampled_from(_mutations(value, siblings)))
    parent[path[-1]] = copy.deepcopy(new)
    return path, kind, document, value


def _run(stack: str, document: dict) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"Pulumi.{stack}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([stack, "--stack-file", str(path), "--policy"])
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_leaf_mutation_is_accepted_safely_or_rejected_at_its_path(stack):
    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(stack))
    def check(case):
        path, kind, document, original = case
        code, text = _run(stack, document)
        OUTCOMES[(stack, kind, code)] += 1
        assert "Traceback" not in text
        assert code in (0, 2), f"{_path_text(path)} ({kind}): exit {code}\n{text[-2000:]}"
        if code == 2:
            assert _named(text, path, original), f"{_path_text(path)} ({kind}) not named:\n{text[-2000:]}"
        assert "S3cr3tPassw0rd" not in text
    check()
    print(sorted(OUTCOMES.items()))


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_boundary_alone_under_many_more_mutations(stack):
    """Without the synth: every mutation is accepted or a ConfigError naming the leaf's path."""
    from stacks.config import validate_stack_config
    from stacks.errors import ConfigError
    from synth.stackfile import _as_config_string

    counts: Counter = Counter()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(stack))
    def check(case):
        path, kind, document, original = case
        raw = {k.split(":", 1)[1]: _as_config_string(v) for k, v in document["config"].items()}
        try:
            validate_stack_config(raw, stack=stack, check_secrets=False)
        except ConfigError as exc:
            counts[(kind, "rejected")] += 1
            text = str(exc)
            assert _named(text, path, original), f"{_path_text(path)} ({kind}) not named:\n{text[-2000:]}"
            assert "S3cr3tPassw0rd" not in text
        else:
            counts[(kind, "accepted")] += 1
    check()
    print(stack, sorted(counts.items()))
