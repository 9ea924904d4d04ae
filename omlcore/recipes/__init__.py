"""The configs shipped with omlcore, as YAML files: ``glyphs`` (the embedded default data), ``glyphs_reranker`` (a
trained re-ranker on top of it, ``omlcore train-reranker``) and OML's recipes for its four benchmark datasets.
``omlcore train <name>`` runs one by name; the Config API itself is :mod:`omlcore.config`.

>>> from omlcore.recipes import recipe_names, load_recipe
>>> recipe_names()
['cars', 'cub', 'glyphs', 'glyphs_reranker', 'inshop', 'sop']
>>> load_recipe("cub")["extractor"]["args"]["weights"]
'vits16_dino'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_recipe", "recipe_names", "recipe_path"]


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def recipe_names() -> list[str]:
    """The names of the shipped configs (their file names without ``.yaml``), sorted."""
    return sorted(path.stem for path in _folder().glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The YAML file of shipped config ``name``."""
    path = _folder() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"No shipped config {name!r}; shipped: {', '.join(recipe_names()) or 'none'}")
    return path


def load_recipe(name: str) -> dict[str, Any]:
    """Shipped config ``name`` as plain Python data (``yaml.safe_load``)."""
    loaded = yaml.safe_load(recipe_path(name).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{recipe_path(name)} does not hold a mapping")
    return loaded
