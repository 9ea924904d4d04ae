"""Loading configs: shipped names, defaults, nested components built through the registry, plugins by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omlcore.config import OPTIONS, ConfigError, build_component, load_config
from omlcore.losses import TripletLossWithMiner
from omlcore.miners import HardTripletsMiner
from omlcore.models import SmallCNN
from omlcore.recipes import recipe_names


def test_the_shipped_default_config_loads_by_name_with_defaults_filled_in() -> None:
    config = load_config("glyphs")
    assert config.name == "glyphs" and config.source is not None and config.source.name == "glyphs.yaml"
    assert config["dataset.builtin"] == "glyphs" and config["runner.name"] == "torch"
    assert config["scheduler"] is None and config["visualization.n_queries"] == 8
    assert {option.key.split(".")[0] for option in OPTIONS} == set(config.data)
    assert yaml.safe_load(config.to_yaml()) == config.data


def test_the_runner_switches_by_override() -> None:
    config = load_config("glyphs", ["runner.name=lightning", "runner.args.devices=1"])
    assert config["runner"] == {"name": "lightning", "args": {"epochs": 50, "devices": 1}}


@pytest.mark.parametrize("name", recipe_names())
def test_every_shipped_config_is_valid(name: str) -> None:
    if name.endswith("_reranker"):  # trains on top of a training run, named on the command line
        load_config(name, ["checkpoint=runs/train-glyphs"], pipeline="train_reranker")
    else:
        load_config(name)


def test_nested_components_are_built_with_their_kind(tmp_path: Path) -> None:
    config = load_config(
        {
            "dataset": {"csv": "df.csv"},
            "extractor": {
                "name": "extractor_with_mlp",
                "args": {"extractor": {"name": "small_cnn", "args": {"feat_dim": 8}}, "mlp_features": [4]},
            },
            "sampler": {"name": "balance", "args": {"n_labels": 2, "n_instances": 2}},
            "loss": {"name": "triplet_with_miner", "args": {"margin": 0.1, "miner": {"name": "hard_triplets"}}},
        }
    )
    loss = build_component("loss", config["loss"], "loss")
    assert isinstance(loss, TripletLossWithMiner) and isinstance(loss.miner, HardTripletsMiner)
    extractor = build_component("extractor", config["extractor"], "extractor")
    assert isinstance(extractor.extractor, SmallCNN) and extractor.feat_dim == 4
    with pytest.raises(ConfigError) as info:
        build_component("sampler", config["sampler"], "sampler", [0, 0, 1])
    assert info.value.path == "sampler" and "could not be built" in str(info.value)


def test_pml_and_plugin_components_by_name() -> None:
    pytest.importorskip("pytorch_metric_learning")
    config = load_config(
        "glyphs",
        [
            "loss={name: pml.PMLLoss, args: {loss: {name: pml.TripletMarginLoss, args: {margin: 0.2}},"
            " miner: {name: pml.BatchHardMiner}}}"
        ],
    )
    loss = build_component("loss", config["loss"], "loss")
    assert type(loss).__name__ == "PMLLoss"
    demo = load_config("glyphs", ["loss={name: demo.CentroidLoss}"])
    assert demo["loss.name"] == "demo.CentroidLoss"
