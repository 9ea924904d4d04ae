"""A Griffe extension: the docstrings' Sphinx roles (``:class:`~omlcore.protocols.Loss```) as Markdown cross-references,
and their doctest examples as code blocks.

omlcore's docstrings are Google style with Sphinx roles, which Markdown shows verbatim. Each role whose target lies in
omlcore, an adapter or the faiss plugin becomes an autorefs link to the target's full path, resolved in the scope of
the docstring's object (``:meth:`save``` in a class docstring is that class's ``save``), so that ``mkdocs build
--strict`` fails on a target that the API reference does not document. A role naming anything else (``torch``,
``typing`` ...) or a private one (``_name``) becomes inline code. A run of ``>>>`` lines (with their output, up
to a blank line) is fenced as a ``pycon`` block, so that Markdown shows it as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["SphinxRoles", "convert_roles", "fence_doctests"]

#: The import names whose objects the API reference documents.
DOCUMENTED_ROOTS = frozenset({"omlcore", "omlcore_torch", "omlcore_lightning", "omlcore_pml", "omlcore_faiss"})
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)\.?([\w.]+?)(?:\(\))?`")
DOCTEST = re.compile(r"^([ \t]*)>>> .*(?:\n\1(?:>>>|\.\.\.|(?!\s*$)).*)*", re.M)


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines (``>>>``, ``...`` and output, up to a blank line) in a fenced block."""
    return DOCTEST.sub(lambda match: f"{match.group(1)}```pycon\n{match.group(0)}\n{match.group(1)}```", text)


def convert_roles(text: str, scope: griffe.Object) -> str:
    """``text`` with each Sphinx role replaced by a Markdown cross-reference (ours) or inline code (anyone else's)."""

    def replace(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2)
        shown = target.rsplit(".", 1)[-1] if short else target
        path = _absolute(target, scope)
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    return ROLE.sub(replace, text)


def _absolute(target: str, scope: griffe.Object) -> str | None:
    """The full path of ``target`` if it is one of ours, else None (an outside object, or a plain Python name)."""
    head, _, rest = target.partition(".")
    if any(part.startswith("_") for part in target.split(".")):
        return None
    if head in DOCUMENTED_ROOTS:
        return target
    try:
        resolved = scope.resolve(head)
    except griffe.NameResolutionError:
        return None
    if resolved.partition(".")[0] not in DOCUMENTED_ROOTS:
        return None
    return f"{resolved}.{rest}" if rest else resolved


class SphinxRoles(griffe.Extension):
    """Rewrites the docstrings of a package once it is loaded, when every name of its modules can be resolved."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _convert_tree(pkg)


def _convert_tree(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = fence_doctests(convert_roles(obj.docstring.value, obj))
    for member in obj.members.values():
        if not member.is_alias:
            _convert_tree(member)  # type: ignore[arg-type]
