"""Every ```python block of every guide runs (in order, one namespace per page), and the docstrings' examples pass."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
from snippets import fenced_blocks, run_python_blocks, skip_unless_importable

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

GUIDES = sorted(path for path in DOCS.rglob("*.md") if "hooks" not in path.parts)
WITH_CODE = [path for path in GUIDES if fenced_blocks(path.read_text(), "python")]
#: Modules whose docstrings hold examples (``>>>``); each must import and pass.
SOURCES = [
    *ROOT.glob("omlcore/**/*.py"),
    *ROOT.glob("adapters/**/*.py"),
    *ROOT.glob("plugins/omlcore-faiss/omlcore_*/*.py"),
]
WITH_EXAMPLES = sorted(
    ".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__")
    for path in SOURCES
    if ">>> " in path.read_text()
    for base in (ROOT, ROOT / "adapters", ROOT / "plugins" / "omlcore-faiss")
    if path.is_relative_to(base) and path.relative_to(base).parts[0].startswith("omlcore")
)


def test_the_guides_have_code() -> None:
    assert len(WITH_CODE) >= 8, [path.name for path in WITH_CODE]


@pytest.mark.parametrize("page", WITH_CODE, ids=lambda path: path.relative_to(DOCS).as_posix())
def test_guide_snippets_run(page: Path, tmp_path: Path) -> None:
    blocks = fenced_blocks(page.read_text(), "python")
    skip_unless_importable(blocks)
    run_python_blocks(blocks, f"docs/{page.relative_to(DOCS).as_posix()}", tmp_path)


def test_some_docstrings_have_examples() -> None:
    assert "omlcore.recipes" in WITH_EXAMPLES and "omlcore.config.components" in WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_pass(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``doctest`` over the module (``# doctest: +SKIP`` marks an example that needs a run folder or a dataset)."""
    monkeypatch.chdir(tmp_path)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        pytest.skip(f'{name} needs {error.name} (pip install "omlcore[all]")')
    finder, runner = (
        doctest.DocTestFinder(),
        doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE),
    )
    examples = 0
    for test in finder.find(module, name):
        examples += len(test.examples)
        runner.run(test)
    assert examples > 0, f"{name}: its '>>>' lines are not in a docstring that doctest finds"
    assert runner.failures == 0, f"{name}: {runner.failures} docstring example(s) failed (output above)"
