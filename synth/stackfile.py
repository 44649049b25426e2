"""Read Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI would hand them to a program."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stacks.placeholders import PLACEHOLDER_SECRET


def placeholder_for(key: str) -> str:
    """A distinct placeholder per key, so pointing a service at another secret shows in a diff."""
    return f"{PLACEHOLDER_SECRET}:{key}"


class StackFileError(Exception):
    """A stack file that cannot be read at all (missing, not YAML, wrong shape, a key twice)."""


STACK_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
"""A stack name as it names ``Pulumi.<stack>.yaml`` in the project: Pulumi's characters
(letters, digits, ``-``, ``_``, ``.``), starting with a letter or digit, so no ``/`` or leading
``..`` reaches a file outside the project."""


def stack_name_problem(stack: str) -> str | None:
    """Why ``stack`` is not a stack name (``STACK_NAME``), or None."""
    import re

    if re.fullmatch(STACK_NAME, stack):
        return None
    return (f"{stack!r} is not a stack name: use letters, digits, '-', '_' and '.', starting with a letter or "
            "digit (it names Pulumi.STACK.yaml in the project; give another file with --stack-file)")


def stack_file_problem(stack: str, stack_file: Path | None) -> str | None:
    """Why ``stack`` and ``--stack-file`` cannot name a stack file, before anything is read:
    a name that is not a stack name, or a directory given as the file. None when they can."""
    if problem := stack_name_problem(stack):
        return problem
    if stack_file is not None and stack_file.is_dir():
        return (f"--stack-file {stack_file} is a directory; give the stack file itself "
                f"(e.g. {stack_file / f'Pulumi.{stack}.yaml'})")
    return None


MERGE_TAG = "tag:yaml.org,2002:merge"


MAX_EXPANDED_VALUES = 100_000
"""Most values (scalars, lists, mappings) a stack file may hold once its aliases are expanded.
The committed stack files hold about 1,400 each and use no alias; a merge (``<<: *anchor``)
of a few small mappings stays far below. A nested-alias "billion laughs" block (each level a
list of aliases to the one before) grows tenfold a level: 8 levels took ~30 s to load and
validate before this bound; it is now refused after composing, before anything is built."""


def _expanded(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias written out; a node shared through
    aliases is counted each time, computed once (``sizes``, by id). A node that contains itself
    (a recursive alias) counts as too many."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = MAX_EXPANDED_VALUES + 1  # while counting: a cycle back here is unbounded
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded(k, sizes) + _expanded(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded(item, sizes) for item in node.value)
    else:
        total = 1
    sizes[key] = min(total, MAX_EXPANDED_VALUES + 1)
    return sizes[key]


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key repeated in one mapping (YAML 1.2 requires unique keys;
    PyYAML would keep the last value silently), naming both lines, and a document whose aliases
    expand beyond ``MAX_EXPANDED_VALUES``, naming the alias."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases: list[tuple[str, yaml.Mark, yaml.Node | None]] = []

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self.aliases.append((event.anchor, event.start_mark, self.anchors.get(event.anchor)))
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and self.aliases:
            sizes: dict[int, int] = {}
            if _expanded(node, sizes) > MAX_EXPANDED_VALUES:
                anchor, mark, _ = max(self.aliases, key=lambda a: _expanded(a[2], sizes) if a[2] else 0)
                raise yaml.composer.ComposerError(
                    None, None, f"the aliases expand to more than {MAX_EXPANDED_VALUES:,} values (*{anchor} here "
                    "is one of them: nested aliases, a 'billion laughs'); write the values out, or merge "
                    "(<<: *anchor) small mappings only", mark)
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        problems = []
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                # ``<<: *anchor`` merges another mapping (YAML 1.1 merge key): its keys may be
                # overridden here, so only this mapping's own keys must be unique.
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                problems.append(f"line {key_node.start_mark.line + 1}: key {key!r} repeats the key on line "
                                f"{seen[key] + 1}; keep one")
            else:
                seen[key] = key_node.start_mark.line
        if problems:
            raise DuplicateKeyError(problems)
        return super().construct_mapping(node, deep=deep)


def _refuse_tag(loader: "UniqueKeyLoader", node: yaml.Node):
    tag = node.tag.rsplit(":", 1)[-1]
    raise yaml.constructor.ConstructorError(
        None, None, f"a !!{tag} value is not a config value (Pulumi config holds text, numbers, booleans, "
        "lists and mappings); write it as plain text", node.start_mark)


def _timestamp_as_text(loader: "UniqueKeyLoader", node: yaml.Node) -> str:
    # Pulumi hands the program the date as it is written; pydantic parses it where a date is due.
    return loader.construct_scalar(node)


for _tag in ("binary", "set", "omap", "pairs"):
    UniqueKeyLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse_tag)
UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def load_yaml(text: str):
    """YAML 1.1 as PyYAML's safe loader reads it, with repeated keys rejected."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_error_location(exc: yaml.YAMLError) -> str:
    """``LINE:COLUMN:`` (1-based) where PyYAML found the problem, or "" when it gives no mark."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{mark.line + 1}:{mark.column + 1}:" if mark is not None else ""


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem in one line, without its quoted excerpt of the file: "expected ',' or
    ']', but got '<stream end>' (in the flow sequence that starts at 12:10)"."""
    problem = getattr(exc, "problem", None)
    if problem is None:
        return " ".join(str(exc).split())
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    where = ""
    if context and context_mark is not None:
        where = f" ({context} at {context_mark.line + 1}:{context_mark.column + 1})"
    return f"{problem}{where}"


@dataclass
class StackFile:
    project: str
    stack: str
    path: Path
    config: dict[str, str] = field(default_factory=dict)
    secret_keys: list[str] = field(default_factory=list)

    def platform_values(self) -> dict[str, str]:
        """The project's keys without their namespace (``environment``, ``kro``), what
        ``validate_stack_config`` takes."""
        prefix = f"{self.project}:"
        return {k[len(prefix):]: v for k, v in self.config.items() if k.startswith(prefix)}

    def other_values(self) -> dict[str, str | None]:
        """The keys of other namespaces (``digitalocean:token``) with their values, None for a
        secret one: ``validate_stack_config``'s ``other``."""
        return {k: None if k in self.secret_keys else v for k, v in self.config.items()
                if not k.startswith(f"{self.project}:")}


def project_name(project_dir: Path) -> str:
    path = project_dir / "Pulumi.yaml"
    try:
        document = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StackFileError(f"cannot read {path}: {exc}") from None
    return str(document.get("name", "platform"))


def _as_config_string(value: Any) -> str:
    """Pulumi passes scalars as strings and objects/lists as JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def _yaml_key(key: Any) -> str:
    """A non-string mapping key as the stack file may have written it."""
    return "~" if key is None else json.dumps(key) if isinstance(key, bool) else str(key)


def _yaml_kind(key: Any) -> str:
    if key is None:
        return "null (a ~, null or empty key)"
    if isinstance(key, bool):
        return f"the boolean {json.dumps(key)} (an unquoted yes, no, on, off, true or false)"
    return f"a {type(key).__name__}"


def _mask_secure(value: Any, where: str = "") -> tuple[Any, bool]:
    """Replace every ``{secure: ...}`` leaf (it needs the stack's key to decrypt) by a placeholder.

    Raises StackFileError naming the key path when ``secure`` holds anything but the ciphertext
    string ``pulumi config set --secret`` writes (a list or number would count as a set secret)."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            if not isinstance(value["secure"], str) or not value["secure"].strip():
                raise StackFileError(f"{where}.secure: must be a ciphertext string; set the secret with "
                                     f"`pulumi config set --secret {where.split('.', 1)[0].split('[', 1)[0]}`")
            return PLACEHOLDER_SECRET + ":" + hashlib.sha256(str(value["secure"]).encode()).hexdigest()[:12], True
        found = False
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StackFileError(f"{where}.{_yaml_key(key)}: YAML reads this key as {_yaml_kind(key)}, not a "
                                     "name; write the name (quote it, e.g. 'on': or '1':)")
            out[key], item_found = _mask_secure(item, f"{where}.{key}")
            found = found or item_found
        return out, found
    if isinstance(value, list):
        items = [_mask_secure(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], any(f for _, f in items)
    return value, False


def load_stack_file(path: Path, stack: str, project: str) -> StackFile:
    if not path.exists():
        raise StackFileError(
            f"no stack file at {path}; create it (see README, 'Adding a stack') or pass "
            "--stack-file PATH"
        )
    try:
        document = load_yaml(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise StackFileError(f"cannot read the stack file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise StackFileError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); "
                             "save the file as UTF-8") from None
    except DuplicateKeyError as exc:
        raise StackFileError(f"{path}: " + "; ".join(exc.problems)) from None
    except yaml.YAMLError as exc:
        raise StackFileError(f"{path}:{yaml_error_location(exc)} not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(document, dict):
        raise StackFileError(f"{path} must be a YAML mapping with a 'config:' key")
    raw_config = document.get("config") or {}
    if not isinstance(raw_config, dict):
        raise StackFileError(f"{path}: 'config:' must be a mapping of key: value")
    stack_file = StackFile(project=project, stack=stack, path=path)
    for key, value in raw_config.items():
        if not isinstance(key, str):
            raise StackFileError(f"{path}: config.{_yaml_key(key)}: YAML reads this key as {_yaml_kind(key)}, not "
                                 "a config key; write the key's name (e.g. platform:kro)")
        full_key = key if ":" in key else f"{project}:{key}"
        try:
            masked, is_secret = _mask_secure(value, full_key)
        except StackFileError as exc:
            raise StackFileError(f"{path}: {exc}") from None
        stack_file.config[full_key] = _as_config_string(masked)
        if is_secret:
            stack_file.secret_keys.append(full_key)
    return stack_file


def load_stack_config(stack: str, stack_file: Path | None, project_dir: Path):
    """The validated config (``StackConfig``) of ``stack``, read from ``stack_file`` or
    ``Pulumi.<stack>.yaml`` in ``project_dir``: the boundary ``pulumi up`` and ``python -m
    synth`` apply, for the engineer-facing scripts, so a script never acts on a config the
    program would refuse. Secrets are not required (the scripts read none from the file).

    Raises StackFileError with the boundary's message: one line per problem, each naming its
    key path (or the file, or the argument) and the fix."""
    from stacks.config import validate_stack_config
    from stacks.errors import ConfigError

    if problem := stack_file_problem(stack, stack_file):
        raise StackFileError(problem)
    file = load_stack_file(stack_file or project_dir / f"Pulumi.{stack}.yaml", stack, project_name(project_dir))
    try:
        return validate_stack_config(file.platform_values(), check_secrets=False, stack=stack,
                                     other=file.other_values())
    except ConfigError as exc:
        raise StackFileError("\n  - ".join(exc.problems)) from None
