"""MkDocs hook: links from a page to a file of the repository outside docs/, as the site can serve them.

docs/config.md links to files as GitHub shows them (``../omlcore/recipes/glyphs.yaml``). In the site, a link to a
Python module of a documented package becomes a link to the module in the API reference, and any other repository
file is copied into the site under ``repo/`` and linked there. A link to a file that does not exist is left as it is,
so that ``mkdocs build --strict`` reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

__all__ = ["on_files", "on_page_markdown", "repo_target"]

#: Source folders of the documented import roots (as in api_reference.SECTIONS).
SOURCE_ROOTS = (".", "adapters", "plugins/omlcore-faiss")
DOCUMENTED_ROOTS = ("omlcore", "omlcore_torch", "omlcore_lightning", "omlcore_pml", "omlcore_faiss")
LINK = re.compile(r"\]\((?!https?:|#|/)([^)\s#]+)(#[^)\s]*)?\)")
SERVED_UNDER = "repo"

_copied: dict[str, Path] = {}


def repo_target(page_uri: str, link: str, docs_dir: Path) -> str | None:
    """The repository path (relative to its root) that ``link`` on page ``page_uri`` names, if it is outside docs/."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_uri), link))
    if not joined.startswith("../"):
        return None
    path = posixpath.normpath(posixpath.join(docs_dir.name, joined))
    return path if (docs_dir.parent / path).is_file() else None


def _module_of(path: str) -> str | None:
    """``omlcore.index.storage`` for ``omlcore/index/storage.py`` (a module of a documented package), else None."""
    if not path.endswith(".py"):
        return None
    for root in SOURCE_ROOTS:
        inside = posixpath.relpath(path, root) if root != "." else path
        parts = inside.removesuffix(".py").split("/")
        if parts[0] in DOCUMENTED_ROOTS and not inside.startswith(".."):
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return None


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    docs_dir = Path(config.docs_dir)

    def replace(match: re.Match[str]) -> str:
        path = repo_target(page.file.src_uri, match.group(1), docs_dir)
        if path is None:
            return match.group(0)
        module = _module_of(path)
        if module:
            return f"][{module}]"
        _copied[path] = docs_dir.parent / path
        served = posixpath.relpath(f"{SERVED_UNDER}/{path}", posixpath.dirname(page.file.src_uri) or ".")
        return f"]({served}{match.group(2) or ''})"

    return LINK.sub(replace, markdown)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds the repository files that pages link to (known from the previous build's pages, and from a scan now)."""
    docs_dir = Path(config.docs_dir)
    for file in list(files):
        if file.src_uri.endswith(".md") and file.abs_src_path:
            for match in LINK.finditer(Path(file.abs_src_path).read_text(encoding="utf-8")):
                path = repo_target(file.src_uri, match.group(1), docs_dir)
                if path and not _module_of(path):
                    _copied[path] = docs_dir.parent / path
    for path, source in sorted(_copied.items()):
        files.append(File.generated(config, f"{SERVED_UNDER}/{path}", abs_src_path=str(source)))
    return files
