"""The import graph of the apps, read from the source with ``ast``: apps import only downward:
audit ← tenants ← escalations ← notifications, webhooks and suggestions, which do not import
each other (imports inside functions count; ``if TYPE_CHECKING:`` ones do not, they never run).
No cycle between the files of one app: ``tests/test_import_cycles.py``, with these helpers."""

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


def _module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of ``path``, a module under ``root`` (a directory on ``sys.path``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, known: set[str], root: Path = ROOT) -> set[str]:
    """The project modules ``path`` imports (``from . import x`` names module ``x`` when it is
    one)."""
    module = _module_name(path, root)
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


def _graph(app: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of package ``app`` (a directory under ``root``) and the modules of the same
    package it imports."""
    paths = [p for p in (root / app).rglob("*.py") if "migrations" not in p.parts]
    known = {_module_name(p, root) for p in paths}
    return {_module_name(p, root): _imports(p, known, root) for p in paths}


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
