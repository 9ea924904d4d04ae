"""Samplers, miners and losses by name: registered by the core plugin, built from OML-style configs."""

from __future__ import annotations

import torch

from omlcore.config import resolve
from omlcore.losses import TripletLossWithMiner
from omlcore.miners import CrossBatchMemoryMiner, NHardTripletsMiner
from omlcore.plugins import get_registry
from omlcore.protocols import Loss, Miner, Sampler

SAMPLERS = {"balance", "category_balance", "distinct_category_balance"}
MINERS = {"all_triplets", "hard_triplets", "n_hard_triplets", "hard_cluster", "cross_batch_memory", "pairs"}
LOSSES = {
    "triplet",
    "triplet_plain",
    "triplet_with_miner",
    "arcface",
    "arcface_with_mlp",
    "contrastive",
    "surrogate_precision",
}


def test_core_plugin_registers_every_component_with_a_summary() -> None:
    registry = get_registry()
    for kind, names in (("sampler", SAMPLERS), ("miner", MINERS), ("loss", LOSSES)):
        assert names <= set(registry.names(kind))
        for name in names:
            entry = registry.get(kind, name)
            assert entry.plugin == "omlcore" and entry.summary and entry.available
            assert entry.load().__module__.startswith(f"omlcore.{kind}s" if kind != "loss" else "omlcore.losses")


def test_built_components_satisfy_the_protocols() -> None:
    registry = get_registry()
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    assert isinstance(registry.build("sampler", "balance", labels=labels, n_labels=2, n_instances=2), Sampler)
    for name in MINERS - {"cross_batch_memory"}:
        assert isinstance(registry.build("miner", name), Miner)
    assert isinstance(registry.build("miner", "cross_batch_memory", bank_size_in_batches=2), Miner)
    for name, args in (("triplet_with_miner", {"margin": 0.1}), ("contrastive", {}), ("surrogate_precision", {"k": 2})):
        assert isinstance(registry.build("loss", name, **args), Loss)
    assert isinstance(registry.build("loss", "arcface", in_features=4, num_classes=3), Loss)


def test_oml_style_nested_configs() -> None:
    config = {
        "name": "triplet_with_miner",
        "args": {
            "margin": 0.2,
            "miner": {
                "name": "cross_batch_memory",
                "args": {
                    "bank_size_in_batches": 3,
                    "miner": {"name": "n_hard_triplets", "args": {"n_positive": [1, 2]}},
                },
            },
        },
    }
    loss = resolve("loss", config)
    assert isinstance(loss, TripletLossWithMiner) and isinstance(loss.miner, CrossBatchMemoryMiner)
    assert isinstance(loss.miner.miner, NHardTripletsMiner) and loss.miner.miner.positive_slice == slice(0, 2)
    value = loss(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert value.dim() == 0
