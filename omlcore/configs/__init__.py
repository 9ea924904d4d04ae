"""Example configs shipped with omlcore: OML's recipes for its four benchmark datasets, as YAML files.

>>> from omlcore.configs import example_config_names, load_example_config
>>> example_config_names()
['cars', 'cub', 'inshop', 'sop']
>>> load_example_config("cub")["extractor"]["args"]["weights"]
'vits16_dino'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["example_config_names", "example_config_path", "load_example_config"]


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def example_config_names() -> list[str]:
    """The names of the shipped example configs (their file names without ``.yaml``), sorted."""
    return sorted(path.stem for path in _folder().glob("*.yaml"))


def example_config_path(name: str) -> Path:
    """The YAML file of example config ``name``."""
    path = _folder() / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"No example config {name!r}; shipped: {', '.join(example_config_names()) or 'none'}")
    return path


def load_example_config(name: str) -> dict[str, Any]:
    """Example config ``name`` as plain Python data (``yaml.safe_load``)."""
    loaded = yaml.safe_load(example_config_path(name).read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{example_config_path(name)} does not hold a mapping")
    return loaded
