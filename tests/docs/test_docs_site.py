"""The site as built: every page in the nav, the API reference covering every public ``__all__``, working doc paths."""

from __future__ import annotations

import importlib
import pkgutil
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from omlcore.cli import main
from omlcore.config import ConfigError
from omlcore.errors import DataValidationError

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: The documented import roots (the core, the three adapters, the faiss plugin).
ROOTS = ("omlcore", "omlcore_torch", "omlcore_lightning", "omlcore_pml", "omlcore_faiss")


def inventory(site: Path) -> set[str]:
    """The object names of the site's ``objects.inv`` (Sphinx inventory version 2: four header lines, then zlib)."""
    data = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    assert data.startswith(b"# Sphinx inventory version 2")
    lines = zlib.decompress(data[header_end:]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if " py:" in line}


def public_modules() -> Iterator[ModuleType]:
    """Every public module of the documented roots, imported (``_private`` ones and ``__main__`` left out)."""
    for root in ROOTS:
        package = importlib.import_module(root)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{root}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                yield importlib.import_module(info.name)


def nav_files(nav: list[Any]) -> Iterator[str]:
    for entry in nav:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from nav_files(value) if isinstance(value, list) else [value]


def test_every_guide_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = list(nav_files(config["nav"]))
    written = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md") if "hooks" not in path.parts}
    assert written - set(listed) == set(), "pages missing from mkdocs.yml's nav (orphans)"
    assert {page for page in listed if page != "api/index.md"} - written == set(), "nav entries without a page"
    assert len(listed) == len(set(listed)), "a page is listed twice"


def test_every_built_page_is_reachable_from_the_nav(site: Path) -> None:
    """The nav of the home page (Material renders the whole nav on every page) links every page of the site."""
    pages = {path.parent.relative_to(site).as_posix() for path in site.rglob("index.html")}
    pages -= {"search"} if "search" in pages else set()
    home = (site / "index.html").read_text()
    linked = {
        (Path(href).as_posix().strip("/") or ".")
        for href in re.findall(r'<a href="([^"#]*)"[^>]*class="md-nav__link', home)
    }
    assert pages - linked == set(), "pages that no nav entry links (orphans)"
    assert len(pages) >= 40


def test_api_reference_covers_every_public_name(site: Path) -> None:
    pytest.importorskip("lightning", reason='the adapters import their frameworks (pip install "omlcore[all]")')
    pytest.importorskip("pytorch_metric_learning", reason='the adapters import their frameworks ("omlcore[all]")')
    pytest.importorskip("omlcore_faiss", reason="pip install ./plugins/omlcore-faiss")
    documented = inventory(site)
    by_name: dict[str, list[str]] = {}
    for path in documented:
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    missing, names = [], 0
    for module in public_modules():
        for name in getattr(module, "__all__", ()):
            names += 1
            path = f"{module.__name__}.{name}"
            if path in documented:
                continue
            obj = getattr(module, name)
            if not any(_lookup(other) is obj for other in by_name.get(name, ())):
                missing.append(path)
    assert missing == [], f"names of a public __all__ that the API reference does not document: {missing}"
    assert names > 500
    print(f"API reference: {names} names of public __all__ lists covered; {len(documented)} documented objects")


def _lookup(path: str) -> object:
    """The object at a dotted path (a module's attribute, or a class's member), or None."""
    module, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError:
        return getattr(_lookup(module), attribute, None) if module else None


def test_doc_paths_in_the_code_and_the_cli_exist() -> None:
    """Every ``docs/<page>.md`` that the code names (the CLI's help, the errors' fix hints) is a page of the site."""
    sources = [*ROOT.glob("omlcore/**/*.py"), *ROOT.glob("adapters/**/*.py")]
    named = {match for source in sources for match in re.findall(r"docs/[\w/.-]+?\.md", source.read_text())}
    assert {"docs/config.md"} <= named
    assert sorted(path for path in named if not (ROOT / path).is_file()) == []


def test_cli_help_and_errors_name_their_page(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "documentation: docs/getting-started.md" in capsys.readouterr().out
    assert main(["train", "no-such-config.yaml"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("(see docs/config.md)")
    assert (ROOT / ConfigError.docs).is_file() and (ROOT / DataValidationError.docs).is_file()
