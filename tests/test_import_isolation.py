"""`import omlcore` (and listing every component) imports no optional framework."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

HEAVY = ["lightning", "pytorch_lightning", "pytorch_metric_learning", "matplotlib", "faiss"]

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy!r} + ["torch"] if m in sys.modules)))
"""


def imported_after(python_runner, body: str) -> list[str]:  # type: ignore[no-untyped-def]
    result = python_runner(PROBE.format(body=body, heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_omlcore_is_light(python_runner) -> None:  # type: ignore[no-untyped-def]
    assert imported_after(python_runner, "import omlcore") == []


def test_listing_every_component_imports_no_framework(python_runner) -> None:  # type: ignore[no-untyped-def]
    body = (
        "import contextlib, io\n"
        "from omlcore.cli import main\n"
        "from omlcore.plugins import get_registry\n"
        "assert len(get_registry()) > 0 and [e.available for e in get_registry()]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plugins'])\n"
        "    main(['plugins', '--json'])"
    )
    assert imported_after(python_runner, body) == []  # not even torch: listing is cheap


def test_core_modules_import_no_optional_framework(python_runner) -> None:  # type: ignore[no-untyped-def]
    body = (
        "import omlcore.protocols, omlcore.registry, omlcore.plugins, omlcore.cli, omlcore.keys\n"
        "import omlcore.datasets, omlcore.transforms, omlcore.builtin_plugin\n"
        "from omlcore.plugins import get_registry\n"
        "get_registry().build('transform', 'resize_normalize')"
    )
    assert imported_after(python_runner, body) == ["torch"]


# The core names no adapter, plugin or framework in its code, not even in an import inside a function or in a
# string that something imports later ("omlcore_torch.runner:TorchRunner", require("lightning.pytorch", ...)).
FOREIGN_ROOTS = (
    "omlcore_torch",
    "omlcore_lightning",
    "omlcore_pml",
    "omlcore_faiss",
    "lightning",
    "pytorch_lightning",
    "pytorch_metric_learning",
    "faiss",
)
CORE = Path(__file__).resolve().parents[1] / "omlcore"
_MODULE_STRING = re.compile(rf"^({'|'.join(FOREIGN_ROOTS)})(\.\w+)*(:[\w.]+)?$")


def foreign_names(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every import of a foreign root and every string naming a foreign module (docstrings and
    other bare strings aside)."""
    tree = ast.parse(source)
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
            found += [(node.lineno, node.value)] if _MODULE_STRING.match(node.value) else []
    return sorted((line, name) for line, name in found if re.split(r"[.:]", name)[0] in FOREIGN_ROOTS)


def test_the_scan_finds_every_kind_of_reference() -> None:
    source = (
        '"""Docstrings may mention omlcore_torch."""\n'
        "import lightning.pytorch as pl\n"
        "def f():\n"
        "    from omlcore_pml.checks import check_loss\n"
        "    return require('pytorch_metric_learning.losses', 'pml'), 'omlcore_torch.runner:TorchRunner'\n"
        "import torch, omlcore.config\n"
    )
    assert foreign_names(source) == [
        (2, "lightning.pytorch"),
        (4, "omlcore_pml.checks"),
        (5, "omlcore_torch.runner:TorchRunner"),
        (5, "pytorch_metric_learning.losses"),
    ]


def test_no_core_module_names_an_adapter_or_a_framework() -> None:
    offences = [
        f"{path.relative_to(CORE.parent)}:{line}: {name}"
        for path in sorted(CORE.rglob("*.py"))
        for line, name in foreign_names(path.read_text(encoding="utf-8"))
    ]
    assert offences == []
