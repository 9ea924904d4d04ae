"""The ``lightning`` runner (RetrievalModule in a real Trainer) loads every item once per epoch and trains epoch e on
the batches of sampler epoch e (``set_epoch(e)``), with and without loader workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from omlcore.losses import TripletLossWithMiner
from omlcore.metrics import EmbeddingMetrics
from omlcore.protocols import FitJob
from omlcore.samplers import BalanceSampler

pytest.importorskip("lightning")
from omlcore_lightning.runner import LightningRunner

EPOCH_ITEMS = 32  # 8 labels of 4 items: 4 batches of 2 labels x 4 items


def sampler(dataset: Any) -> BalanceSampler:
    return BalanceSampler(dataset.get_labels(), n_labels=2, n_instances=4, seed=5)


def job(model: torch.nn.Module, dataset: Any, num_workers: int, checkpoint_dir: Path, validate: bool) -> FitJob:
    return FitJob(
        model=model,
        loss=TripletLossWithMiner(margin=0.5),
        build_optimizer=lambda parameters: torch.optim.SGD(parameters, lr=0.1),
        build_scheduler=None,
        train_loader=DataLoader(dataset, batch_sampler=sampler(dataset), num_workers=num_workers),
        val_dataset=dataset if validate else None,
        metric=EmbeddingMetrics(cmc_top_k=(1,)) if validate else None,
        batch_size=8,
        num_workers=num_workers,
        checkpoint_dir=checkpoint_dir,
        resume=None,
        on_epoch=lambda record: None,
    )


def test_each_epoch_trains_on_its_sampler_epoch_and_loads_each_item_once(
    counting_dataset: Any, make_recorder: Any, tmp_path: Path
) -> None:
    reference = sampler(counting_dataset)
    expected = []
    for epoch in range(3):  # a hand-written loop over the sampler
        reference.set_epoch(epoch)
        expected.extend(list(reference))
    runner = LightningRunner(epochs=3, accelerator="cpu", progress=False, log_every_n_steps=1)
    for num_workers in (0, 2):
        model = make_recorder()
        runner.fit(
            job(model, counting_dataset, num_workers, tmp_path / str(num_workers) / "checkpoints", validate=True)
        )
        assert model.batches == expected, f"num_workers={num_workers}"
        # 3 epochs of training and validation, with a fresh pair of workers for each pass
        assert counting_dataset.take_counts() == (3 * 2 * EPOCH_ITEMS, 3 * 2 * num_workers)

    runner.evaluate(model, counting_dataset, EmbeddingMetrics(cmc_top_k=(1,)), batch_size=8, num_workers=2)
    assert counting_dataset.take_counts() == (EPOCH_ITEMS, 2)
    assert runner.inference(model, counting_dataset, batch_size=8, num_workers=2).shape == (EPOCH_ITEMS, 8)
    assert counting_dataset.take_counts() == (EPOCH_ITEMS, 2)
