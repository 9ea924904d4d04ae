"""How Lightning's loaders are adapted, so that ``trainer.fit(module, train_loader, val_loader)`` just works, with
``strategy="ddp"`` too.

Lightning has two habits that do not suit omlcore's batch samplers, which build a whole epoch (seeded, for every rank)
when iterated and give each process its own share:

- it creates the training iterator *before* ``on_train_epoch_start`` and calls ``set_epoch`` only on samplers, not on
  batch samplers, so a batch sampler cannot learn which epoch it serves (an uninterrupted and a resumed run differ);
- under a multi-process strategy it injects a ``DistributedSampler`` into every loader: that fails on omlcore's batch
  samplers ("Lightning can't inject a (distributed) sampler into your batch sampler") although they shard
  themselves, and it pads evaluation loaders with repeated items, so metrics over a validation set are not exact.

:func:`install_sampling`, called by :class:`~omlcore_lightning.RetrievalModule` and
:class:`~omlcore_lightning.MetricValCallback` in their ``setup`` hooks, therefore takes over these loaders:

- a training loader with a custom batch sampler gets it wrapped in :class:`EpochTracking` (``set_epoch`` with the
  trainer's epoch when the epoch's first batch is drawn); under DDP a batch sampler that is not distributed-aware is
  first wrapped in :class:`~omlcore_torch.distributed.ShardedBatchSampler`; omlcore's are left to shard themselves;
- under DDP an evaluation loader (validation, test, predict) gets a contiguous, batch-aligned, unpadded block per rank
  (:func:`~omlcore_torch.distributed.shard_eval_loader`), so merged metrics and gathered predictions equal the
  one-process ones;
- everything else (plain training loaders, ``Trainer(use_distributed_sampler=False)``) goes through Lightning as usual.

This is the one place where omlcore reaches into Lightning's internals (the trainer's data connector); tested with
Lightning 2.6.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader

from omlcore.errors import OmlcoreError
from omlcore.utils.optional import require
from omlcore_torch.distributed import (
    ShardedBatchSampler,
    all_gather_padded,
    is_distributed_aware,
    rebuild_loader,
    shard_eval_loader,
)

pl = require("lightning.pytorch", "lightning", what="omlcore_lightning")
RunningStage = require("lightning.pytorch.trainer.states", "lightning").RunningStage

__all__ = ["EpochTracking", "gather_predictions", "install_sampling"]


class EpochTracking:
    """A batch sampler that calls ``set_epoch(current_epoch())`` on the wrapped one when an epoch's first batch is
    drawn (lazily: after Lightning has restored a checkpoint and started the epoch)."""

    def __init__(self, batch_sampler: Any, current_epoch: Callable[[], int]) -> None:
        self.batch_sampler = batch_sampler
        self.current_epoch = current_epoch

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[int]]:
        self.batch_sampler.set_epoch(self.current_epoch())
        yield from self.batch_sampler

    def __repr__(self) -> str:
        return f"EpochTracking({self.batch_sampler!r})"


class _Prepare:
    """Stands in for the data connector's ``_prepare_dataloader``; calls the original for what it leaves alone."""

    def __init__(self, trainer: Any, original: Any) -> None:
        self.trainer = trainer
        self.original = original

    def __call__(self, dataloader: object, shuffle: bool, mode: Any) -> object:
        if not isinstance(dataloader, DataLoader):
            return self.original(dataloader, shuffle=shuffle, mode=mode)
        distributed = self.trainer._data_connector._requires_distributed_sampler(dataloader)
        kwargs = self.trainer.distributed_sampler_kwargs or {}
        rank, world_size = kwargs.get("rank", 0), kwargs.get("num_replicas", 1)
        if mode == RunningStage.TRAINING:
            batch_sampler = dataloader.batch_sampler
            if batch_sampler is None or type(batch_sampler) is BatchSampler:
                return self.original(dataloader, shuffle=shuffle, mode=mode)  # Lightning's DistributedSampler
            if distributed and not is_distributed_aware(batch_sampler):
                batch_sampler = ShardedBatchSampler(batch_sampler, rank, world_size)
            if callable(getattr(batch_sampler, "set_epoch", None)):
                batch_sampler = EpochTracking(batch_sampler, lambda: int(self.trainer.current_epoch))
            if batch_sampler is dataloader.batch_sampler:
                return dataloader
            return rebuild_loader(dataloader, batch_sampler=batch_sampler)
        if distributed:
            dataloader = shard_eval_loader(dataloader, rank, world_size)
        return self.original(dataloader, shuffle=shuffle, mode=mode)


def install_sampling(trainer: Any) -> None:
    """Make ``trainer`` adapt its loaders the omlcore way (see the module docstring); idempotent."""
    connector = getattr(trainer, "_data_connector", None)
    original = getattr(connector, "_prepare_dataloader", None)
    if isinstance(original, _Prepare):
        return
    if original is None or not hasattr(connector, "_requires_distributed_sampler"):
        if trainer.world_size > 1:
            raise OmlcoreError(
                f"omlcore cannot adapt Lightning {pl.__version__}'s distributed sampling. Pass "
                "Trainer(use_distributed_sampler=False): omlcore's batch samplers shard themselves, and shard "
                "evaluation loaders with omlcore_torch.distributed.shard_eval_loader."
            )
        return
    trainer._data_connector._prepare_dataloader = _Prepare(trainer, original)


def gather_predictions(predictions: list[Any]) -> torch.Tensor:
    """The embeddings of ``trainer.predict(...)`` on every rank as one CPU tensor, in dataset order.

    ``predictions`` is this rank's list of per-batch tensors (what ``trainer.predict`` returns for one loader); under
    DDP the ranks' blocks are gathered (every rank must call this), on one process they are concatenated.
    """
    local = torch.cat([p.detach() for p in predictions]) if predictions else torch.zeros(0, 0)
    return torch.cat([part.cpu() for part in all_gather_padded(local)])
