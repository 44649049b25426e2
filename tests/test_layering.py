"""The code's layers, read from the source itself: every module of the project parsed, every
import statement (at module level or inside a function) followed.

- No import cycle between modules: a cycle dodged with a function-level import still counts.
- The packages form layers (``validation`` <- ``components`` <- ``stacks`` <- ``synth`` <-
  ``rehearsal``, ...) with no cycle between them. Entry points (``__main__`` modules, which no
  library module imports) sit on top and may import any package.
- ``components/`` never imports ``stacks/``; ``validation/`` imports no other project package.
- Only public names of the Pulumi SDKs are used, except in the modules that isolate what the
  program needs of their internals (``SDK_INTERNALS_ALLOWED``: ``synth/wire.py``,
  ``stacks/engine_config.py``, ``policy/offline.py``), each with a test that fails when the
  SDK changes; no module reaches into another module's private names.
- No module of the program's packages is over 400 lines, and no product module over 300.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {".venv", "out", "node_modules", "__pycache__"}

# The only modules that may touch SDK internals: each isolates them, and the test named fails
# when the installed SDK changes them.
SDK_INTERNALS_ALLOWED = {
    "synth.wire": "tests/test_synth_wire.py",
    "stacks.engine_config": "tests/test_layering.py::test_engine_config_reads_what_the_sdk_holds",
    # The offline policy runner catches what ``args.not_applicable()`` raises, as the SDK's own
    # runner does.
    "policy.offline": "tests/test_policy.py::test_plaintext_rule_is_not_applicable_without_secret_knowledge",
}
# Internals of the SDK whose names look public (no leading underscore).
SDK_INTERNAL_NAMES = {"pulumi.runtime.config": {"CONFIG"}, "pulumi.runtime.settings": {"SETTINGS"}}

pytestmark = pytest.mark.fast


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)


@lru_cache(maxsize=1)
def project() -> dict[str, Module]:
    """Every Python module of the repository by dotted name, with the project modules it imports."""
    modules: dict[str, Module] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            name = ".".join(parts)
            modules[name] = Module(name, path, ast.parse(path.read_text(), str(rel)))
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module.imports |= {t for t in _targets(module, node, modules) if t != module.name}
    return modules


def _longest_known(name: str, modules: dict[str, Module]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _targets(module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> list[str]:
    found = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            found.append(_longest_known(alias.name, modules))
    else:
        base = _absolute(module, node)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.append(submodule if submodule in modules else _longest_known(base, modules))
    return [t for t in found if t]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _package(name: str) -> str:
    return name.split(".")[0]


def _is_entry_point(name: str) -> bool:
    return name.rpartition(".")[2] == "__main__"


def test_the_scan_sees_the_project():
    modules = project()
    # A scan that found nothing would pass every test below.
    assert {"components.containers", "stacks.config", "synth.engine", "validation.fields",
            "policy.rules.base", "rehearsal.capture", "tests.test_layering"} <= set(modules)
    assert "validation.fields" in modules["components.containers"].imports
    assert "stacks.registry" in modules["stacks.config"].imports


def test_the_cycle_finder_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = {m.name: m.imports for m in project().values()}
    cycles = strongly_connected(graph)
    assert not cycles, "modules that import each other (directly or around a loop; function-level " \
                       f"imports count): {cycles}"


def test_no_import_cycle_between_packages():
    modules = project()
    graph: dict[str, set[str]] = {}
    for module in modules.values():
        if _is_entry_point(module.name):
            continue
        graph.setdefault(_package(module.name), set()).update(
            _package(t) for t in module.imports if _package(t) != _package(module.name))
    cycles = strongly_connected(graph)
    assert not cycles, f"packages that import each other: {cycles}; " + "; ".join(
        f"{m.name} -> {t}" for m in modules.values() if not _is_entry_point(m.name)
        for t in sorted(m.imports) if any(_package(m.name) in c and _package(t) in c
                                          and _package(t) != _package(m.name) for c in cycles))


def test_entry_points_are_imported_only_by_entry_points_and_tests():
    # What makes leaving them out of the package layers sound.
    wrong = [f"{m.name} -> {t}" for m in project().values() for t in sorted(m.imports)
             if _is_entry_point(t) and not _is_entry_point(m.name) and _package(m.name) != "tests"]
    assert not wrong, wrong


def test_components_never_import_stacks():
    wrong = [f"{m.name} -> {t}" for m in project().values() if _package(m.name) == "components"
             for t in sorted(m.imports) if _package(t) == "stacks"]
    assert not wrong, f"components take their arguments and never read the stack config: {wrong}"


def test_validation_imports_no_other_project_package():
    wrong = [f"{m.name} -> {t}" for m in project().values() if _package(m.name) == "validation"
             for t in sorted(m.imports) if _package(t) != "validation"]
    assert not wrong, wrong


def _sdk_bindings(tree: ast.Module) -> dict[str, str]:
    """Local names bound to a Pulumi SDK module or object, with what they are bound to."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0].startswith("pulumi"):
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname \
                        else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("pulumi"):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _dotted(node: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def sdk_internals_used(tree: ast.Module) -> list[str]:
    """Uses of SDK internals: a private name (``_x``, not ``__x__``) imported from or read off a
    ``pulumi*`` module or object, an internal with a public-looking name (SDK_INTERNAL_NAMES),
    and ``._name`` on anything (pulumi.Resource's private name; ``pulumi_resource_name`` is
    the public one)."""
    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    def internal(qualified: str) -> bool:
        module, _, name = qualified.rpartition(".")
        return any(private(p) for p in qualified.split(".")) or name in SDK_INTERNAL_NAMES.get(module, ())

    bound = _sdk_bindings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("pulumi"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if internal(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Attribute):
            if node.attr == "_name":
                found.append(f"line {node.lineno}: ._name")
                continue
            dotted = _dotted(node)
            if dotted and dotted[0] in bound:
                qualified = ".".join([bound[dotted[0]], *dotted[1:]])
                if internal(qualified):
                    found.append(f"line {node.lineno}: {'.'.join(dotted)} ({qualified})")
    return sorted(found, key=lambda f: int(f.split(":")[0].split()[1]))


def test_the_sdk_scan_finds_what_it_looks_for():
    tree = ast.parse("import pulumi\nfrom pulumi.runtime import config as runtime_config, rpc\n"
                     "from pulumi.runtime.config import _SECRET_KEYS\n"
                     "a = runtime_config.CONFIG.get()\nb = rpc._special_sig_key\nc = self._name\n"
                     "d = pulumi.runtime.settings.SETTINGS\ne = pulumi.Config('x').get_object('k')\n"
                     "f = runtime_config.is_config_secret('k')\n")
    assert sdk_internals_used(tree) == [
        "line 3: from pulumi.runtime.config import _SECRET_KEYS",
        "line 4: runtime_config.CONFIG (pulumi.runtime.config.CONFIG)",
        "line 5: rpc._special_sig_key (pulumi.runtime.rpc._special_sig_key)",
        "line 6: ._name",
        "line 7: pulumi.runtime.settings.SETTINGS (pulumi.runtime.settings.SETTINGS)",
    ]


def test_only_the_isolating_modules_use_sdk_internals():
    wrong = {m.name: used for m in project().values()
             if _package(m.name) != "tests" and m.name not in SDK_INTERNALS_ALLOWED
             and (used := sdk_internals_used(m.tree))}
    assert not wrong, (f"private or internal SDK names outside {sorted(SDK_INTERNALS_ALLOWED)}: {wrong}; "
                       "use a public API, or add the use to one of those modules and its test")


def private_project_names_used(module: Module, modules: dict[str, Module]) -> list[str]:
    """``other._x`` where ``other`` is a project module, and ``from other import _x``."""
    bound: dict[str, str] = {}
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.asname:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                elif base in modules and alias.name.startswith("_") and base != module.name:
                    found.append(f"line {node.lineno}: from {base} import {alias.name}")
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in bound and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    modules = project()
    wrong = {m.name: used for m in modules.values() if _package(m.name) != "tests"
             and (used := private_project_names_used(m, modules))}
    assert not wrong, f"make the name public or keep its use inside its module: {wrong}"


def test_engine_config_reads_what_the_sdk_holds(monkeypatch):
    """stacks/engine_config.py reads the SDK's config store: this fails when an SDK upgrade
    moves it, before a deploy validates an empty config."""
    from pulumi.runtime import config as runtime_config

    from stacks import engine_config

    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    saved = runtime_config.CONFIG.get(), set(runtime_config._SECRET_KEYS.get())
    try:
        runtime_config.set_all_config({"platform:products": "[]", "platform:kro_token": "t",
                                       "other:key": "v"}, ["platform:kro_token"])
        assert engine_config.platform_config() == ({"products": "[]", "kro_token": "t"}, {"kro_token"})
        assert engine_config.plain_platform_config() == {"products": "[]"}
        assert engine_config.other_config_keys() == {"other:key"}
        monkeypatch.setenv("PULUMI_CONFIG", '{"platform:environment": "{}"}')
        monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", '["platform:environment"]')
        raw, secret = engine_config.platform_config()
        assert raw["environment"] == "{}" and secret == {"kro_token", "environment"}
    finally:
        runtime_config.set_all_config(saved[0], list(saved[1]))


MODULE_LINES = 400
"""The issue asks for no module over about 400 lines."""
SIZED_PACKAGES = ("components", "policy", "stacks", "synth", "validation", "rehearsal")


def _sized_modules() -> list:
    return sorted(p.relative_to(ROOT).as_posix() for package in SIZED_PACKAGES
                  for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_size_check_sees_every_package():
    paths = set(_sized_modules())
    assert {f"{package}/__init__.py" for package in SIZED_PACKAGES} <= paths
    assert {"rehearsal/checks/__init__.py", "policy/rules/network.py", "synth/engine.py"} <= paths


@pytest.mark.parametrize("path", _sized_modules())
def test_no_module_is_long(path):
    lines = len((ROOT / path).read_text().splitlines())
    assert lines <= MODULE_LINES, (f"{path} has {lines} lines, over {MODULE_LINES}: split it into "
                                   "modules that each hold one thing, named for what they hold")


PRODUCTS = ("kro", "giv", "pencom", "vedfinance")
PRODUCT_MODULE_LINES = 300
"""The issue asks for product modules under 300 lines."""


def _product_modules() -> dict[str, Module]:
    return {name: m for name, m in project().items()
            if any(name == f"stacks.{p}" or name.startswith(f"stacks.{p}.") for p in PRODUCTS)}


def test_no_product_module_is_long():
    modules = _product_modules()
    assert {"stacks.kro.plan", "stacks.giv.plan", "stacks.pencom.plan", "stacks.vedfinance.plan"} <= set(modules)
    long = {name: lines for name, m in modules.items()
            if (lines := len(m.path.read_text().splitlines())) > PRODUCT_MODULE_LINES}
    assert not long, f"split these product modules (config, rules, plan): {long}"


def _provider_sdks(module: Module) -> set[str]:
    """The ``pulumi*`` distributions a module imports (``pulumi``, ``pulumi_docker``, ...)."""
    found = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return {f for f in found if f.startswith("pulumi")}


def _closure(start: str) -> set[str]:
    modules, seen, todo = project(), set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += modules[name].imports
    return seen


PLAN_MODULES = ("stacks.wiring", "stacks.plan", "stacks.plan_parts", "stacks.pencom.plan", "stacks.pencom.steps", "stacks.pencom.config", "stacks.pencom.network",
                "stacks.vedfinance.plan", "stacks.vedfinance.config", "stacks.kro.plan", "stacks.kro.config",
                "stacks.giv.plan", "stacks.giv.config")


def test_plans_import_no_resource_module():
    """A plan is computed without resources: its modules import no Pulumi SDK themselves, and
    nothing they import (at any depth) imports a provider SDK (``pulumi_*``), which is where
    resources come from. (Component modules import ``pulumi`` itself for its Input types.)"""
    modules = project()
    assert set(PLAN_MODULES) <= set(modules)
    direct = {name: sorted(_provider_sdks(modules[name])) for name in PLAN_MODULES if _provider_sdks(modules[name])}
    assert not direct, f"plan modules importing Pulumi: {direct}"
    deep = {name: sorted(m for m in _closure(name) if any(s != "pulumi" for s in _provider_sdks(modules[m])))
            for name in PLAN_MODULES}
    assert not any(deep.values()), f"plan modules reaching a provider SDK: {deep}"
    # The check sees what it looks for.
    assert _provider_sdks(modules["stacks.provision_kinds"]) >= {"pulumi", "pulumi_minio"}
    assert "components.onprem" in _closure("stacks.provision")


def test_product_modules_are_config_rules_and_plan():
    """One ``stacks.provision`` creates every product: no product module imports Pulumi or a
    provider SDK, so a product creates no resource of its own (its plan modules reach none at
    any depth: ``test_plans_import_no_resource_module``)."""
    modules = _product_modules()
    assert {"stacks.pencom.steps", "stacks.kro.plan"} <= set(modules)
    assert not [name for name in modules if name.endswith(".provision")]
    direct = {name: sorted(_provider_sdks(m)) for name, m in modules.items() if _provider_sdks(m)}
    assert not direct, f"product modules importing Pulumi: {direct}"
    assert {"stacks.kro.plan", "stacks.pencom.steps"} <= set(PLAN_MODULES)


DELIVERY = "components.hostsetup.delivery"
"""The one module that writes a file onto a host: ``deliver_file`` (a file), ``staged_file``
(the files of a directory committed together) and ``directories_section``; the heredoc that
carries the content and its marker are its internals."""


def _code_strings(module: Module) -> list[str]:
    """The string constants of a module's code, its docstrings left out."""
    docstrings = {id(node.body[0].value) for node in ast.walk(module.tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(module.tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_files_reach_hosts_through_one_path():
    """No program module but the delivery module calls the prelude's ``put_file`` or
    ``commit_files``, or picks a heredoc marker: every other one goes through its functions."""
    modules = project()
    writers = {name for name, m in modules.items() if name.split(".")[0] in ("components", "stacks")
               and any(word in text for text in _code_strings(m)
                       for word in ("put_file ", "commit_files ", "PLATFORM_EOF"))}
    assert DELIVERY in writers, "the check sees nothing"
    assert writers == {DELIVERY}, f"modules writing host files themselves: {sorted(writers - {DELIVERY})}"
    private = {name: sorted(n for n in _imported_names(m, DELIVERY) if n.startswith("_"))
               for name, m in modules.items() if name != DELIVERY}
    assert not any(private.values()), private


def _imported_names(module: Module, source: str) -> set[str]:
    return {alias.name for node in ast.walk(module.tree) if isinstance(node, ast.ImportFrom)
            and node.module == source for alias in node.names}
