"""Batched embedding extraction and evaluation over a dataset, on any device, DDP-aware.

Under ``torch.distributed`` each rank embeds a contiguous, batch-aligned block of the dataset
(:func:`omlcore_torch.distributed.eval_shard`): no item is padded or repeated, and every item is computed in the
same batch as in a one-process run, so the gathered embeddings and merged metrics equal the one-process ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from omlcore.keys import EMBEDDINGS, IMAGES
from omlcore.postprocessing import build_postprocessor
from omlcore.protocols import MetricAccumulator
from omlcore_torch.distributed import ShardSampler, all_gather_padded, eval_shard, rank_and_world_size, sync_accumulator

__all__ = ["evaluate", "inference", "model_device", "progress_bar"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def progress_bar(loader: DataLoader[Any], desc: str, enabled: bool) -> tqdm[Any]:
    """A progress bar over ``len(loader)`` batches that the loop advances with ``bar.update()``.

    It never touches the loader: handing the loader to tqdm would iterate it an extra time (``tqdm.auto`` calls
    ``iter()`` in its constructor), which starts its workers and loads batches for nothing.
    """
    try:
        total: int | None = len(loader)
    except TypeError:  # an iterable-style dataset without a length
        total = None
    return tqdm(total=total, desc=desc, disable=not enabled)


def _shard_loader(dataset: Dataset[Any], batch_size: int, num_workers: int) -> DataLoader[Any]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    block = eval_shard(len(dataset), batch_size, rank, world_size)  # type: ignore[arg-type]
    sampler = ShardSampler(dataset, block, rank, world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)


def _run(
    model: nn.Module,
    dataset: Dataset[Any],
    on_batch: Callable[[Mapping[str, Any], Tensor], None],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device | str | None,
    input_key: str,
    progress: bool,
    desc: str,
) -> None:
    """Embed this rank's share of ``dataset`` in eval mode without autograd; ``on_batch(batch, embeddings)`` each."""
    module = model.module if isinstance(model, DistributedDataParallel) else model
    target = torch.device(device) if device is not None else model_device(module)
    module.to(target)
    loader = _shard_loader(dataset, batch_size, num_workers)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(), progress_bar(loader, desc, progress and rank_and_world_size()[0] == 0) as bar:
            for batch in loader:
                if not isinstance(batch, Mapping) or input_key not in batch:
                    found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
                    raise KeyError(
                        f"the dataset's items must be dicts with the model input under '{input_key}' (omlcore's "
                        f"datasets are); got {found}. Pass input_key=... to name another key."
                    )
                on_batch(batch, module(batch[input_key].to(target, non_blocking=True)))
                bar.update()
    finally:
        module.train(was_training)


def inference(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    input_key: str = IMAGES,
    progress: bool = True,
) -> Tensor:
    """The embeddings of every item of ``dataset``, ``(len(dataset), D)``, in dataset order, on the CPU.

    Args:
        model: maps ``batch[input_key]`` to ``(B, D)`` embeddings; run in eval mode without autograd (its mode is
            restored afterwards). A ``DistributedDataParallel`` wrapper is unwrapped.
        dataset: items are dicts (omlcore's datasets); ``batch[input_key]`` is the model input.
        batch_size, num_workers: of the ``DataLoader`` (no shuffling).
        device: where to run (the model is moved there); default: the model's device.
        progress: a progress bar (on rank 0 only).

    Under ``torch.distributed`` every rank embeds its own block and gets all embeddings back (gathered in dataset
    order, without padding duplicates); call it on every rank.
    """
    parts: list[Tensor] = []
    _run(
        model,
        dataset,
        lambda _, embeddings: parts.append(embeddings.detach()),
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        input_key=input_key,
        progress=progress,
        desc="inference",
    )
    local = torch.cat(parts) if parts else torch.zeros(0, 0)
    return torch.cat([part.cpu() for part in all_gather_padded(local)])


def evaluate(
    model: nn.Module,
    dataset: Dataset[Any],
    metrics: MetricAccumulator,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    input_key: str = IMAGES,
    progress: bool = True,
    postprocessor: Any = None,
) -> dict[str, Any]:
    """Feed ``metrics`` the embeddings of ``dataset`` and return ``metrics.compute()``.

    Each batch goes to ``metrics.update`` as the dataset's batch (labels, query / gallery flags, categories ...)
    without ``input_key``, plus ``"embeddings"``. ``metrics`` is reset first; under ``torch.distributed`` the
    ranks' states are merged (:func:`~omlcore_torch.distributed.sync_accumulator`) and every rank gets the
    same result. Arguments as for :func:`inference`; ``postprocessor`` (a
    :class:`~omlcore.protocols.Postprocessor`, a registered name, a spec or a list) is set on ``metrics``, which
    then reports the metrics after it too (``"postprocessed/..."``). Metrics that read items (``metrics.dataset``,
    as :class:`~omlcore.metrics.EmbeddingMetrics` for learned postprocessors) get ``dataset``.
    """
    if postprocessor is not None:
        if not hasattr(metrics, "postprocessor"):
            raise TypeError(f"{type(metrics).__name__} takes no postprocessor; use omlcore's EmbeddingMetrics")
        metrics.postprocessor = build_postprocessor(postprocessor)
    if hasattr(metrics, "dataset"):
        metrics.dataset = dataset
    metrics.reset()

    def update(batch: Mapping[str, Any], embeddings: Tensor) -> None:
        metrics.update({**{k: v for k, v in batch.items() if k != input_key}, EMBEDDINGS: embeddings})

    _run(
        model,
        dataset,
        update,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        input_key=input_key,
        progress=progress,
        desc="evaluation",
    )
    sync_accumulator(metrics)
    return metrics.compute()
