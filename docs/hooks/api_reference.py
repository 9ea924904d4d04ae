"""MkDocs hook: the API reference's pages, generated at build time from the packages' ``__all__``.

One page per public child of ``omlcore`` (``omlcore.losses``, ``omlcore.protocols`` ...), plus ``omlcore`` itself,
and one per adapter and per plugin. A page renders its module's exported names, then each public submodule with the
exported names not shown on the page yet (a re-exported class appears once, under its shortest public path), so
every name of every public ``__all__`` is documented exactly once per page. The plugin hooks (functions decorated
with ``@hookspec``) are documented too: they are the contract plugins implement. The pages are added to the nav under
"API reference", so that a new module gets its page without an edit here. Modules are read statically (Griffe), not
imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import griffe
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

__all__ = ["ApiPage", "api_pages", "on_config", "on_files"]

#: Import roots and the folder each is found in, grouped as the nav shows them.
SECTIONS: dict[str, dict[str, str]] = {
    "omlcore": {"omlcore": "."},
    "Adapters": {"omlcore_torch": "adapters", "omlcore_lightning": "adapters", "omlcore_pml": "adapters"},
    "Plugins": {"omlcore_faiss": "plugins/omlcore-faiss"},
}
NAV_TITLE = "API reference"
INDEX = "api/index.md"


@dataclass
class ApiPage:
    """One page: a module and its public submodules, each with the exported names it renders."""

    module: griffe.Module
    parts: list[tuple[griffe.Module, list[str]]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"api/{self.module.path}.md"

    def markdown(self) -> str:
        lines = [f"# `{self.module.path}`", ""]
        for number, (module, names) in enumerate(self.parts):
            root = number == 0
            members = f"[{', '.join(names)}]" if names else "false"
            lines += [
                f"::: {module.path}",
                "    options:",
                f"      show_root_heading: {str(not root).lower()}",
                f"      heading_level: {1 if root else 2}",
                f"      members: {members}",
                "",
            ]
            elsewhere = [name for name in _documented(module) if name not in names]
            if elsewhere:
                links = ", ".join(f"[`{name}`][{_canonical(module, name)}]" for name in elsewhere)
                lines += [f"`{module.path}` also exports {links}, documented above.", ""]
        return "\n".join(lines)


def api_pages() -> dict[str, list[ApiPage]]:
    """The pages of every section, in nav order."""
    loader = griffe.GriffeLoader(
        search_paths=sorted({path for roots in SECTIONS.values() for path in roots.values()}),
        extensions=griffe.load_extensions(str(Path(__file__).with_name("sphinx_roles.py"))),  # the summaries' roles
    )
    packages = {root: loader.load(root) for roots in SECTIONS.values() for root in roots}
    loader.resolve_aliases(external=False, implicit=False)
    sections: dict[str, list[ApiPage]] = {}
    for section, roots in SECTIONS.items():
        pages = sections.setdefault(section, [])
        for root in roots:
            package = packages[root]
            assert isinstance(package, griffe.Module)
            page_modules = [package, *_children(package)] if root == "omlcore" else [package]
            for module in page_modules:
                pages.append(_page(module, include_submodules=module is not package or root != "omlcore"))
    return sections


def _page(module: griffe.Module, include_submodules: bool) -> ApiPage:
    page = ApiPage(module)
    shown: set[str] = set()
    for part in _walk(module) if include_submodules else iter([module]):
        names = [name for name in _documented(part) if _canonical(part, name) not in shown]
        shown.update(_canonical(part, name) for name in names)
        page.parts.append((part, names))
    return page


def _documented(module: griffe.Module) -> list[str]:
    """The exported names, then the plugin hooks that the module specifies."""
    hooks = [
        name
        for name, member in module.members.items()
        if not member.is_alias
        and member.is_function
        and any(str(decorator.value) == "hookspec" for decorator in member.decorators)
    ]
    return [*(module.exports or ()), *hooks]


def _children(module: griffe.Module) -> list[griffe.Module]:
    return [child for name, child in sorted(module.modules.items()) if _public(name, child)]  # type: ignore[misc]


def _walk(module: griffe.Module) -> Iterator[griffe.Module]:
    yield module
    for child in _children(module):
        yield from _walk(child)


def _public(name: str, child: Any) -> bool:
    return not name.startswith("_") and not child.is_alias


def _canonical(module: griffe.Module, name: str) -> str:
    member = module.members[name]
    return member.final_target.path if member.is_alias else member.path  # type: ignore[union-attr]


_PAGES: dict[str, list[ApiPage]] = {}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Expands the nav's "API reference" entry into the overview page and the generated pages."""
    _PAGES.clear()
    _PAGES.update(api_pages())
    section = [{"Overview": INDEX}, *({title: [page.uri for page in pages]} for title, pages in _PAGES.items())]
    for number, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and NAV_TITLE in entry:
            config.nav[number] = {NAV_TITLE: section}  # type: ignore[index]
            return config
    raise ValueError(f"mkdocs.yml: the nav needs an entry '{NAV_TITLE}: {INDEX}', which this hook fills")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds the generated pages, and the overview that lists them with each module's summary."""
    overview = ["# API reference", "", "Generated from the docstrings; every name of every public `__all__`.", ""]
    for title, pages in _PAGES.items():
        overview += [f"## {title}", "", "| module | what it holds |", "| --- | --- |"]
        for page in pages:
            summary = page.module.docstring.value.split("\n")[0] if page.module.docstring else ""
            overview.append(f"| [`{page.module.path}`]({page.uri.removeprefix('api/')}) | {summary} |")
            files.append(File.generated(config, page.uri, content=page.markdown()))
        overview.append("")
    files.append(File.generated(config, INDEX, content="\n".join(overview)))
    return files
