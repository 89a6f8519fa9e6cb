"""The package's floors point down: parse every import of tfuq (module level and inside functions).

Each tfuq module belongs to one floor (:data:`FLOORS`, written once here); a module may import
modules of its own floor or below, never above, and the module import graph has no cycle. The
README's Python API names must be reachable on the pipeline's path (the stages or the
packages they use).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfuq"

#: Lowest floor first. A module's floor is that of the longest listed prefix of its name.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("tfuq.errors", "tfuq.typing", "tfuq.atomic", "tfuq.log", "tfuq.console", "tfuq.checks", "tfuq.version"),
    ("tfuq.config", "tfuq.distributions"),
    ("tfuq.data", "tfuq.layers", "tfuq.losses"),
    ("tfuq.networks",),
    ("tfuq.model_store",),
    ("tfuq.calibration", "tfuq.training"),
    ("tfuq.inference",),
    ("tfuq.evaluation", "tfuq.export"),
    ("tfuq.stages",),
    ("tfuq.experiments",),
    ("tfuq.bench", "tfuq.cli", "tfuq.__main__", "tfuq"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module an import names: ``tfuq.a.b`` itself, or its package when ``b`` is a name in it."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """tfuq modules imported anywhere in ``path`` (``from x import y`` counts ``x.y`` when a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        found.update(_resolve(n, modules) for n in names if n == "tfuq" or n.startswith("tfuq."))
    found.discard(module)
    return found


def floor_of(module: str) -> int:
    """The floor index of a tfuq module (longest matching prefix in :data:`FLOORS`)."""
    best, level = -1, -1
    for index, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    if level < 0:
        raise AssertionError(f"{module} is on no floor: add its package to FLOORS")
    return level


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_floor(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 100  # the package was read
    for module in graph:
        floor_of(module)


def test_no_module_imports_a_higher_floor(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if floor_of(target) > floor_of(module)
    )
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle(graph: dict[str, set[str]]) -> None:
    # A package __init__ re-exporting its modules, and those modules importing siblings through
    # the package, is the one cycle Python resolves by design; only edges between different
    # modules that are not package -> own submodule count.
    edges = {
        module: {t for t in targets if not t.startswith(module + ".")} for module, targets in graph.items()
    }
    assert _cycles(edges) == []


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    """The oracle works: a hand-made graph with one upward edge and one cycle is caught."""
    assert floor_of("tfuq.data.windows.grid") == floor_of("tfuq.data") < floor_of("tfuq.inference.engine")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_readme_python_api_names_are_on_the_pipeline_path() -> None:
    """Every ``tfuq.x`` name in README's Python API section is importable and used by a stage's path."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Python API\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Python API' section"
    section = match.group(1)
    names = set(re.findall(r"\btfuq\.([a-z_]+(?:\.[a-zA-Z_]+)*)", section))
    for module, imported in re.findall(
        r"^from tfuq\.([\w.]+) import \(?([^)]*?)\)?$", section, flags=re.M | re.S
    ):
        code = "\n".join(line.split("#")[0] for line in imported.splitlines())
        for name in re.findall(r"^\s*(\w+)", code.replace(",", "\n"), flags=re.M):
            names.add(f"{module}.{name}")
    assert names, "the Python API section names no tfuq.x"
    import importlib

    modules = _modules()
    graph_ = {name: _imports(name, path, modules) for name, path in modules.items()}
    reachable: set[str] = set()
    todo = [m for m in modules if m.startswith("tfuq.stages") or m == "tfuq.cli"]
    while todo:
        module = todo.pop()
        if module not in reachable:
            reachable.add(module)
            todo.extend(graph_.get(module, ()))
    for dotted in sorted(names):
        parts = dotted.split(".")
        module = _resolve("tfuq." + dotted, modules)
        obj = importlib.import_module(module)
        for attr in (
            ("tfuq." + dotted)[len(module) + 1 :].split(".") if len(module) < len("tfuq." + dotted) else []
        ):
            assert hasattr(obj, attr), f"README names tfuq.{dotted}: {module} has no {attr}"
            obj = getattr(obj, attr)
        assert module in reachable or any(m.startswith(module + ".") for m in reachable), (
            f"README names tfuq.{dotted} ({parts}); {module} is not on any stage's import path"
        )
