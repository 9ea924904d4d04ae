"""omlcore's raw-PyTorch adapter: a training loop, inference and evaluation, torch.distributed helpers.

- :func:`fit`: a small training loop (epochs, AMP on CUDA, gradient clipping, validation, checkpoints, exact resume).
- :func:`inference`: the embeddings of a dataset, in dataset order, DDP-aware; :func:`evaluate`: its metrics.
- :class:`Callback`: hooks into :func:`fit` (epoch start / end, each step, after validation, after each checkpoint);
  :class:`EarlyStopping`, :class:`TopKCheckpoints`, :class:`LearningRateMonitor`, :class:`FreezeBackbone`.
- :mod:`omlcore_torch.loggers`: experiment loggers (CSV, TensorBoard, MLflow, W&B ...) for ``fit(loggers=...)``.
- :mod:`omlcore_torch.distributed`: shard loaders across ranks, gather uneven tensors, merge metric states exactly.
- :class:`TorchRunner`: the config pipelines' ``torch`` runner, which drives these loops (DDP under ``torchrun``).

Its plugin, :mod:`omlcore_torch.plugin` (entry point ``torch``), registers the runner by name. Torch is a core
dependency, so everything here is always available; the names above are imported on first use, so loading the
plugin imports nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omlcore_torch.callbacks import (
        Callback,
        EarlyStopping,
        FitState,
        FreezeBackbone,
        LearningRateMonitor,
        TopKCheckpoints,
    )
    from omlcore_torch.checks import IncompatibleComponentError
    from omlcore_torch.distributed import all_gather_padded, shard_eval_loader, shard_train_loader, sync_accumulator
    from omlcore_torch.evaluation import evaluate, inference
    from omlcore_torch.runner import TorchRunner
    from omlcore_torch.training import fit, load_checkpoint

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitState",
    "FreezeBackbone",
    "IncompatibleComponentError",
    "LearningRateMonitor",
    "TopKCheckpoints",
    "TorchRunner",
    "all_gather_padded",
    "evaluate",
    "fit",
    "inference",
    "load_checkpoint",
    "shard_eval_loader",
    "shard_train_loader",
    "sync_accumulator",
]

_HOMES = {
    "Callback": "omlcore_torch.callbacks",
    "FitState": "omlcore_torch.callbacks",
    "EarlyStopping": "omlcore_torch.callbacks",
    "FreezeBackbone": "omlcore_torch.callbacks",
    "LearningRateMonitor": "omlcore_torch.callbacks",
    "TopKCheckpoints": "omlcore_torch.callbacks",
    "TorchRunner": "omlcore_torch.runner",
    "IncompatibleComponentError": "omlcore_torch.checks",
    "all_gather_padded": "omlcore_torch.distributed",
    "shard_eval_loader": "omlcore_torch.distributed",
    "shard_train_loader": "omlcore_torch.distributed",
    "sync_accumulator": "omlcore_torch.distributed",
    "fit": "omlcore_torch.training",
    "load_checkpoint": "omlcore_torch.training",
    "evaluate": "omlcore_torch.evaluation",
    "inference": "omlcore_torch.evaluation",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
