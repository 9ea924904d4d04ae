"""Every DataLoader of omlcore_torch is iterated once per epoch, and epoch e of ``fit`` trains on the batches of
sampler epoch e (``set_epoch(e)``), whatever the number of workers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from omlcore.losses import TripletLossWithMiner
from omlcore.metrics import EmbeddingMetrics
from omlcore.samplers import BalanceSampler
from omlcore_torch import evaluate, fit, inference

EPOCH_ITEMS = 32  # 8 labels of 4 items: 4 batches of 2 labels x 4 items


def loader(dataset: Any, num_workers: int, seed: int = 0) -> DataLoader[Any]:
    sampler = BalanceSampler(dataset.get_labels(), n_labels=2, n_instances=4, seed=seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)


def train(model: torch.nn.Module, train_loader: DataLoader[Any], epochs: int, **kwargs: Any) -> list[dict[str, Any]]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return fit(model, TripletLossWithMiner(margin=0.5), optimizer, train_loader, epochs=epochs, **kwargs)


@pytest.mark.parametrize("progress", [False, True])
def test_fit_inference_and_evaluate_load_each_item_once_and_start_the_workers_once(
    counting_dataset: Any, make_recorder: Any, progress: bool
) -> None:
    model = make_recorder()
    train(model, loader(counting_dataset, num_workers=2), epochs=1, progress=progress)
    assert counting_dataset.take_counts() == (EPOCH_ITEMS, 2)

    inference(model, counting_dataset, batch_size=8, num_workers=2, progress=progress)
    assert counting_dataset.take_counts() == (EPOCH_ITEMS, 2)
    metrics = EmbeddingMetrics(cmc_top_k=(1,))
    results = evaluate(model, counting_dataset, metrics, batch_size=8, num_workers=2, progress=progress)
    assert counting_dataset.take_counts() == (EPOCH_ITEMS, 2) and 0 <= results["OVERALL"]["cmc"][1] <= 1

    validated = make_recorder()
    train(validated, loader(counting_dataset, num_workers=2), epochs=2, val_dataset=counting_dataset,
          metrics=metrics, val_batch_size=8, val_num_workers=2, progress=progress)  # fmt: skip
    assert counting_dataset.take_counts() == (2 * 2 * EPOCH_ITEMS, 2 * 2 * 2)  # 2 epochs: training + validation


def test_each_epoch_trains_on_its_sampler_epoch_with_and_without_workers(
    counting_dataset: Any, make_recorder: Any
) -> None:
    reference = BalanceSampler(counting_dataset.get_labels(), n_labels=2, n_instances=4, seed=5)
    expected = []
    for epoch in range(3):  # a hand-written loop over the sampler
        reference.set_epoch(epoch)
        expected.extend(list(reference))
    assert expected[:4] != expected[4:8]
    for num_workers in (0, 2):
        model = make_recorder()
        train(model, loader(counting_dataset, num_workers, seed=5), epochs=3, progress=False)
        assert model.batches == expected, f"num_workers={num_workers}"
