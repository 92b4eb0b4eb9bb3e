"""The import graph of the apps, read from the source with ``ast``: no cycle between the files of
the apps untangled so far (imports inside functions count; ``if TYPE_CHECKING:`` ones do not,
they never run), and apps import only downward: audit ← tenants ← escalations ← notifications,
webhooks and suggestions, which do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "audit": 0,
    "tenants": 1,
    "escalations": 2,
    "notifications": 3,
    "webhooks": 3,
    "suggestions": 3,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from . import x`` names module ``x`` when it is
    one)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known and name != module}


def _graph(app: str) -> dict[str, set[str]]:
    paths = [p for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]
    known = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, known) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    done: set[str] = set()

    def walk(module: str, stack: list[str]) -> list[str] | None:
        if module in stack:
            return [*stack[stack.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            found = walk(imported, [*stack, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = walk(module, [])
        if found:
            return found
    return None


@pytest.mark.parametrize("app", ["notifications", "webhooks", "suggestions"])
def test_no_file_of_the_app_imports_back_a_file_that_imports_it(app):
    assert _cycle(_graph(app)) is None


@pytest.mark.parametrize("app", sorted(LAYERS))
def test_the_app_imports_no_app_above_or_beside_it(app):
    every = {_module_name(p) for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}
    wrong = set()
    for path in (ROOT / app).rglob("*.py"):
        for imported in _imports(path, every):
            other = imported.split(".")[0]
            if other != app and LAYERS[other] >= LAYERS[app]:
                wrong.add(f"{_module_name(path)} imports {imported}")
    assert not wrong
