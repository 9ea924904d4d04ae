"""DDP with the standard Lightning idiom: ``trainer.fit(module, train_loader, val_loader)`` with ``strategy="ddp"``.

Under a multi-process strategy Lightning injects a ``DistributedSampler`` into every loader. That breaks omlcore's
batch samplers (Lightning cannot rebuild them: "Lightning can't inject a (distributed) sampler into your batch
sampler") although they shard themselves, and it pads evaluation loaders with repeated items, so metrics over a
whole validation set are no longer exact. :func:`install_distributed_sampling`, called by
:class:`~omlcore_lightning.RetrievalModule` and :class:`~omlcore_lightning.MetricValCallback` in their ``setup``
hooks, takes over exactly the loaders Lightning would have changed:

- training loaders with a distributed-aware batch sampler (omlcore's) are left as they are;
- training loaders with another custom batch sampler get :class:`~omlcore_torch.distributed.ShardedBatchSampler`;
- plain training loaders get Lightning's own ``DistributedSampler``, as before;
- evaluation loaders (validation, test, predict) get a contiguous, batch-aligned, unpadded block per rank
  (:func:`~omlcore_torch.distributed.shard_eval_loader`), so merged metrics and gathered predictions equal the
  one-process ones.

``Trainer(use_distributed_sampler=False)`` is respected: then nothing is changed. This is the one place where
omlcore reaches into Lightning's internals (the trainer's data connector); tested with Lightning 2.6.
"""

from __future__ import annotations

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

__all__ = ["gather_predictions", "install_distributed_sampling"]


class _Prepare:
    """Stands in for the data connector's ``_prepare_dataloader``; calls the original for what it leaves alone."""

    def __init__(self, trainer: Any, original: Any) -> None:
        self.trainer = trainer
        self.original = original

    def __call__(self, dataloader: object, shuffle: bool, mode: Any) -> object:
        connector = self.trainer._data_connector
        if isinstance(dataloader, DataLoader) and connector._requires_distributed_sampler(dataloader):
            kwargs = self.trainer.distributed_sampler_kwargs or {}
            rank, world_size = kwargs.get("rank", 0), kwargs.get("num_replicas", 1)
            if mode != RunningStage.TRAINING:
                dataloader = shard_eval_loader(dataloader, rank, world_size)
            elif is_distributed_aware(dataloader.batch_sampler):
                return dataloader
            elif type(dataloader.batch_sampler) is not BatchSampler:
                sharded = ShardedBatchSampler(dataloader.batch_sampler, rank, world_size)
                return rebuild_loader(dataloader, batch_sampler=sharded)
        return self.original(dataloader, shuffle=shuffle, mode=mode)


def install_distributed_sampling(trainer: Any) -> None:
    """Make ``trainer`` shard loaders the omlcore way (see the module docstring); idempotent, a no-op on one process."""
    connector = getattr(trainer, "_data_connector", None)
    original = getattr(connector, "_prepare_dataloader", None)
    if isinstance(original, _Prepare):
        return
    if original is None or not hasattr(connector, "_requires_distributed_sampler"):
        if trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
            raise OmlcoreError(
                f"omlcore cannot adapt Lightning {pl.__version__}'s distributed sampling. Pass "
                "Trainer(use_distributed_sampler=False): omlcore's batch samplers shard themselves, and shard "
                "evaluation loaders with omlcore_torch.distributed.shard_eval_loader."
            )
        return
    trainer._data_connector._prepare_dataloader = _Prepare(trainer, original)


def gather_predictions(predictions: list[Any]) -> Any:
    """The embeddings of ``trainer.predict(...)`` on every rank as one CPU tensor, in dataset order.

    ``predictions`` is this rank's list of per-batch tensors (what ``trainer.predict`` returns for one loader); under
    DDP the ranks' blocks are gathered (every rank must call this), on one process they are concatenated.
    """
    local = torch.cat([p.detach() for p in predictions]) if predictions else torch.zeros(0, 0)
    return torch.cat([part.cpu() for part in all_gather_padded(local)])
