"""How omlcore_lightning.sampling routes each kind of loader, checked on a stand-in trainer (rank 1 of 2)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from omlcore.errors import OmlcoreError
from omlcore.samplers import BalanceSampler
from omlcore_torch.distributed import ShardedBatchSampler, ShardSampler

pytest.importorskip("lightning")
from lightning.pytorch.trainer.states import RunningStage

from omlcore_lightning.sampling import EpochTracking, install_sampling

DATASET = TensorDataset(torch.arange(32))
LABELS = [i // 4 for i in range(32)]


class Connector:
    """Lightning's data connector, reduced to what the adapter uses; records what reaches Lightning's own code."""

    def __init__(self, distributed: bool) -> None:
        self.distributed = distributed
        self.reached_lightning: list[Any] = []

    def _requires_distributed_sampler(self, dataloader: DataLoader[Any]) -> bool:
        return self.distributed

    def _prepare_dataloader(self, dataloader: object, shuffle: bool, mode: Any) -> object:
        self.reached_lightning.append(dataloader)
        return dataloader


def stand_in(distributed: bool = True) -> Any:
    trainer = SimpleNamespace(
        _data_connector=Connector(distributed),
        distributed_sampler_kwargs={"rank": 1, "num_replicas": 2} if distributed else None,
        world_size=2 if distributed else 1,
        current_epoch=3,
    )
    install_sampling(trainer)
    return trainer


def prepare(trainer: Any, loader: DataLoader[Any], mode: Any = RunningStage.TRAINING) -> Any:
    return trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=mode)


def test_omlcore_batch_samplers_keep_their_sharding_and_get_the_trainer_epoch() -> None:
    for distributed in (True, False):
        trainer = stand_in(distributed)
        sampler = BalanceSampler(LABELS, n_labels=2, n_instances=4, rank=0, world_size=1)
        prepared = prepare(trainer, DataLoader(DATASET, batch_sampler=sampler))
        assert isinstance(prepared.batch_sampler, EpochTracking) and prepared.batch_sampler.batch_sampler is sampler
        assert not trainer._data_connector.reached_lightning  # Lightning's injection would fail on it
        reference = BalanceSampler(LABELS, n_labels=2, n_instances=4, rank=0, world_size=1)
        reference.set_epoch(3)
        assert [b[0].tolist() for b in prepared] == list(reference)  # the trainer's epoch, drawn lazily


def test_other_batch_samplers_are_sharded_and_plain_loaders_go_to_lightning() -> None:
    trainer = stand_in()
    custom = prepare(trainer, DataLoader(DATASET, batch_sampler=[[0, 1], [2, 3], [4, 5], [6, 7]]))
    assert isinstance(custom.batch_sampler.batch_sampler, ShardedBatchSampler)
    assert [b[0].tolist() for b in custom] == [[2, 3], [6, 7]]
    plain = DataLoader(DATASET, batch_size=4, shuffle=True)
    assert prepare(trainer, plain) is plain and trainer._data_connector.reached_lightning == [plain]


def test_evaluation_loaders_get_an_unpadded_block_per_rank() -> None:
    trainer = stand_in()
    for mode in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.PREDICTING):
        prepared = prepare(trainer, DataLoader(DATASET, batch_size=5), mode)
        assert isinstance(prepared.sampler, ShardSampler)
        assert prepared.sampler.indices == list(range(15, 32))  # batches 3 .. 6 of 7
        assert trainer._data_connector.reached_lightning[-1] is prepared  # Lightning sees it as sharded already
    one_process = stand_in(distributed=False)
    loader = DataLoader(DATASET, batch_size=5)
    assert prepare(one_process, loader, RunningStage.VALIDATING) is loader


def test_installing_is_idempotent_and_an_unknown_lightning_fails_clearly() -> None:
    trainer = stand_in()
    prepare_method = trainer._data_connector._prepare_dataloader
    install_sampling(trainer)
    assert trainer._data_connector._prepare_dataloader is prepare_method
    with pytest.raises(OmlcoreError, match=r"Trainer\(use_distributed_sampler=False\)"):
        install_sampling(SimpleNamespace(_data_connector=SimpleNamespace(), world_size=2))
    install_sampling(SimpleNamespace(_data_connector=SimpleNamespace(), world_size=1))  # one process: nothing to do
