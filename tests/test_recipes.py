"""The example configs of the four benchmark datasets: every component they name exists and takes their args."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from omlcore.config import resolve
from omlcore.datasets.converters import CONVERTERS
from omlcore.models import list_pretrained
from omlcore.plugins import get_registry
from omlcore.recipes import load_recipe, recipe_names, recipe_path

#: The key a component sits under -> its registry kind.
KIND_OF_KEY = {
    "extractor": "extractor",
    "transforms_train": "transform",
    "transforms_val": "transform",
    "sampler": "sampler",
    "loss": "loss",
    "miner": "miner",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "metric": "metric",
    "runner": "runner",
}
#: The benchmark recipes (``glyphs``, the main job's config, is shipped beside them).
NAMES = ["cars", "cub", "inshop", "sop"]


def components(node: Any, key: str = "", path: str = "") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(config path, parent key, mapping)`` of every ``{name: ..., args: ...}`` mapping, depth first."""
    if isinstance(node, Mapping):
        if "name" in node:
            yield path, key, node
        for child_key, child in node.items():
            yield from components(child, str(child_key), f"{path}.{child_key}" if path else str(child_key))
    elif isinstance(node, list):
        for position, child in enumerate(node):
            yield from components(child, key, f"{path}[{position}]")


def scalars(node: Any) -> Iterator[Any]:
    if isinstance(node, Mapping):
        for child in node.values():
            yield from scalars(child)
    elif isinstance(node, list):
        for child in node:
            yield from scalars(child)
    else:
        yield node


def test_the_four_benchmark_configs_ship() -> None:
    assert recipe_names() == ["cars", "cub", "glyphs", "glyphs_reranker", "inshop", "sop"]
    shipped = "cars, cub, glyphs, glyphs_reranker, inshop, sop"
    with pytest.raises(ValueError, match=f"No shipped config 'glyph'; shipped: {shipped}"):
        recipe_path("glyph")


@pytest.mark.parametrize("name", NAMES)
def test_every_component_exists_in_the_registry_and_takes_its_args(name: str) -> None:
    registry = get_registry()
    config = load_recipe(name)
    found = list(components(config))
    assert {key for _, key, _ in found} >= {"extractor", "sampler", "loss", "miner", "optimizer", "metric"}
    for path, key, component in found:
        assert key in KIND_OF_KEY, f"{name}: {path} is a component under an unknown key"
        kind = KIND_OF_KEY[key]
        assert set(component) <= {"name", "args"}, f"{name}: {path} has keys besides name and args"
        assert component["name"] in registry.names(kind), f"{name}: {path}: no {kind} {component['name']!r}"
        args = component.get("args") or {}
        assert isinstance(args, Mapping), f"{name}: {path}.args is not a mapping"
        signature = inspect.signature(registry.load(kind, component["name"]))
        signature.bind_partial(**args)  # every argument name exists (the data-dependent ones come later)


@pytest.mark.parametrize("name", NAMES)
def test_the_recipes_follow_oml(name: str) -> None:
    config = load_recipe(name)
    text = recipe_path(name).read_text(encoding="utf-8")
    assert f'convert("{name}", ' in text and name in CONVERTERS  # the header says how to make the CSV
    assert config["extractor"] == {
        "name": "vits16",
        "args": {"weights": "vits16_dino", "normalise_features": config["loss"]["args"]["margin"] is not None},
    }
    assert config["extractor"]["args"]["weights"] in list_pretrained()
    assert config["loss"]["name"] == "triplet_with_miner"
    assert config["transforms_train"]["args"] == config["transforms_val"]["args"] == {"size": 224}
    assert config["optimizer"]["args"]["lr"] == pytest.approx(1e-5)
    number = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
    assert not [value for value in scalars(config) if isinstance(value, str) and number.fullmatch(value)]


def test_the_light_components_build() -> None:
    for name in NAMES:
        config = load_recipe(name)
        resolve("loss", config["loss"])
        resolve("metric", config["metric"])
        resolve("transform", config["transforms_train"])
