"""The one resolver of ``{name, args}`` specs (omlcore.config.resolve), as Python callers use it."""

from __future__ import annotations

import pytest
import torch

from omlcore.config import ConfigError, resolve
from omlcore.losses import TripletLossWithMiner
from omlcore.miners import AllTripletsMiner, HardTripletsMiner
from omlcore.retrieval import ExactKNN


def test_objects_pass_through_unchanged() -> None:
    miner = HardTripletsMiner()
    assert resolve("miner", miner) is miner


def test_a_name_and_a_spec_build_the_registered_component() -> None:
    assert isinstance(resolve("miner", "hard_triplets"), HardTripletsMiner)
    built = resolve("miner", {"name": "all_triplets", "args": {"max_output_triplets": 7}})
    assert isinstance(built, AllTripletsMiner) and built.max_output_triplets == 7


def test_nested_specs_are_resolved_too() -> None:
    loss = resolve("loss", {"name": "triplet_with_miner", "args": {"margin": 0.3, "miner": {"name": "hard_triplets"}}})
    assert isinstance(loss, TripletLossWithMiner) and isinstance(loss.miner, HardTripletsMiner)


def test_injected_and_extra_arguments_reach_the_factory() -> None:
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = resolve("optimizer", {"name": "sgd", "args": {"lr": 0.5}}, parameters)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.5
    backend = resolve("knn_backend", "exact", metric="cosine")
    assert isinstance(backend, ExactKNN) and backend.metric == "cosine"


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"name": "hard_triplet"}, "miner.name", "Did you mean: hard_triplets"),
        ({"name": "all_triplets", "arg": {}}, "miner.arg", "only 'name' and 'args'"),
        ({"name": "all_triplets", "args": [1]}, "miner.args", "must be a mapping"),
        ({"name": "all_triplets", "args": {"max_output": 3}}, "miner.args.max_output", "max_output_triplets"),
        ({"name": "all_triplets", "args": {"max_output_triplets": "many"}}, "miner.args.max_output_triplets", "int"),
    ],
)
def test_bad_specs_name_the_key_at_fault(spec: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        resolve("miner", spec)
    assert caught.value.path == path


def test_the_path_of_a_spec_can_be_named() -> None:
    with pytest.raises(ConfigError, match=r"config loss\.args\.miner\.name: Unknown miner"):
        resolve("miner", {"name": "nope"}, path="loss.args.miner")
