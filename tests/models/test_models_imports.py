"""The modules of omlcore.models import one another one way: no cycle, and no import hidden in a function."""

from __future__ import annotations

import ast
from pathlib import Path

import omlcore.models

PACKAGE = Path(omlcore.models.__file__).parent


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """The omlcore.models modules that ``path`` imports, and those it imports below the module level."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    imported: set[str] = set()
    nested: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found = {name for name in names if name.startswith("omlcore.models.")}
        imported |= found
        if found and id(node) not in top_level:
            nested.append(f"{path.name}:{node.lineno}")
    return imported, nested


def test_models_modules_import_each_other_one_way() -> None:
    modules = {f"omlcore.models.{path.stem}": path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    hidden: list[str] = []
    for name, path in modules.items():
        imported, nested = _imports(path)
        graph[name] = imported & modules.keys()
        hidden += nested
    assert hidden == []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for imported in sorted(graph[name]):
                visit(imported, (*path, name))
            done.add(name)

    for name in sorted(graph):
        visit(name, ())
    assert "omlcore.models.zoo" not in graph["omlcore.models.base"] | graph["omlcore.models.catalog"]
