"""Helpers over ``torch.distributed``: shard loaders across ranks, gather uneven tensors, merge metric states exactly.

They work under ``torchrun``, ``torch.multiprocessing`` or Lightning, with any backend (gloo, nccl), and are
no-ops without a process group (``world_size == 1``).

- Training: :func:`shard_train_loader` leaves a distributed-aware loader alone (omlcore's batch samplers shard
  themselves) and otherwise gives each rank a disjoint share (``DistributedSampler`` for plain loaders,
  :class:`ShardedBatchSampler` for other batch samplers).
- Evaluation: :func:`shard_eval_loader` / :func:`eval_shard` give each rank a *contiguous*, batch-aligned block
  of the dataset, without padding: every item is seen exactly once, in the same batch as in a one-process run,
  and the blocks concatenated in rank order are the dataset order. So gathered embeddings and merged metrics
  equal the one-process ones exactly.
- :func:`all_gather_padded` gathers tensors whose first dimension differs across ranks;
  :func:`sync_accumulator` merges a :class:`~omlcore.protocols.MetricAccumulator` across ranks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from omlcore.protocols import MetricAccumulator

__all__ = [
    "ShardSampler",
    "ShardedBatchSampler",
    "all_gather_padded",
    "eval_shard",
    "gather_states",
    "is_distributed_aware",
    "is_sharded",
    "rank_and_world_size",
    "rebuild_loader",
    "shard_eval_loader",
    "shard_train_loader",
    "sync_accumulator",
]

#: DataLoader arguments copied by :func:`rebuild_loader` (those that exist in the installed torch).
_LOADER_ARGS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def rank_and_world_size(group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group`` (default: the default group), or ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _resolve(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError(f"pass both rank and world_size or neither, got rank={rank}, world_size={world_size}")
    if rank is None or world_size is None:
        return rank_and_world_size()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return rank, world_size


def is_distributed_aware(batch_sampler: object) -> bool:
    """True for a batch sampler that yields only this rank's batches: it has ``rank`` and ``world_size``.

    omlcore's samplers (:class:`omlcore.samplers.EpochBatchSampler`) and :class:`ShardedBatchSampler` are.
    """
    return hasattr(batch_sampler, "rank") and hasattr(batch_sampler, "world_size")


def is_sharded(loader: DataLoader[Any]) -> bool:
    """True when ``loader`` already gives each rank its own share (a ``DistributedSampler`` or an aware batch
    sampler)."""
    return isinstance(loader.sampler, DistributedSampler) or is_distributed_aware(loader.batch_sampler)


class ShardedBatchSampler:
    """This rank's share of a batch sampler that knows nothing of ranks: batches ``rank, rank + W, ...``.

    Of each epoch's ``n`` batches, the first ``(n // W) * W`` are dealt out in turn, so every rank gets ``n // W``
    batches (equal lengths keep DDP's collectives in step) and the last ``n % W`` are dropped. The wrapped sampler
    must produce the same batches on every rank (seed it identically). ``set_epoch`` is passed on.
    """

    def __init__(self, batch_sampler: Any, rank: int | None = None, world_size: int | None = None) -> None:
        _resolve(rank, world_size)
        self.batch_sampler = batch_sampler
        self._rank = rank
        self._world_size = world_size

    @property
    def rank(self) -> int:
        return _resolve(self._rank, self._world_size)[0]

    @property
    def world_size(self) -> int:
        return _resolve(self._rank, self._world_size)[1]

    def _per_rank(self) -> int:
        total, world_size = len(self.batch_sampler), self.world_size
        if total < world_size:
            raise ValueError(
                f"ShardedBatchSampler: {type(self.batch_sampler).__name__} gives {total} batch(es) per epoch, fewer "
                f"than world_size={world_size}; some ranks would get none. Use smaller batches or fewer processes."
            )
        return total // world_size

    def set_epoch(self, epoch: int) -> None:
        for owner in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
                return

    def __len__(self) -> int:
        return self._per_rank()

    def __iter__(self) -> Iterator[list[int]]:
        rank, world_size, per_rank = self.rank, self.world_size, self._per_rank()
        for position, batch in enumerate(self.batch_sampler):
            if position >= per_rank * world_size:
                break
            if position % world_size == rank:
                yield list(batch)

    def __repr__(self) -> str:
        return f"ShardedBatchSampler({self.batch_sampler!r}, rank={self._rank}, world_size={self._world_size})"


def eval_shard(num_items: int, batch_size: int, rank: int, world_size: int) -> range:
    """The positions ``[start, stop)`` that ``rank`` evaluates: contiguous, batch-aligned, no padding.

    The ``ceil(num_items / batch_size)`` batches are split into ``world_size`` contiguous blocks whose sizes differ
    by at most one batch, so each item lands in the same batch as in a one-process run. With fewer batches than
    ranks the items themselves are split (as evenly as possible; every rank gets one if ``num_items >= world_size``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    batches = math.ceil(num_items / batch_size)
    if batches >= world_size:
        first, last = rank * batches // world_size, (rank + 1) * batches // world_size
        return range(first * batch_size, min(last * batch_size, num_items))
    return range(rank * num_items // world_size, (rank + 1) * num_items // world_size)


class ShardSampler(DistributedSampler[int]):
    """A fixed, unpadded list of dataset indices for one rank (see :func:`eval_shard`).

    A ``DistributedSampler`` subclass, so that frameworks (Lightning) see the loader as sharded already and leave it.
    """

    def __init__(self, dataset: Dataset[Any], indices: Sequence[int], rank: int, world_size: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
        self.indices = list(indices)
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _FixedBatches:
    """A list of batches, replayed every epoch."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def rebuild_loader(loader: DataLoader[Any], **changes: Any) -> DataLoader[Any]:
    """A new ``DataLoader`` over ``loader.dataset`` with the same workers, collate function, pinning ... and
    ``changes`` (``sampler=..., batch_size=...`` or ``batch_sampler=...``). A ``DataLoader`` subclass comes back as a
    plain ``DataLoader``.
    """
    accepted = inspect.signature(DataLoader.__init__).parameters
    kwargs = {name: getattr(loader, name) for name in _LOADER_ARGS if name in accepted and hasattr(loader, name)}
    if not kwargs.get("num_workers"):
        kwargs.pop("prefetch_factor", None)
    kwargs.update(changes)
    return DataLoader(loader.dataset, **kwargs)


def shard_train_loader(
    loader: DataLoader[Any], rank: int | None = None, world_size: int | None = None, *, seed: int = 0
) -> DataLoader[Any]:
    """``loader`` as this rank's share of the training data (``loader`` itself when it already is one, or W == 1).

    - an omlcore batch sampler (or any distributed-aware one, see :func:`is_distributed_aware`): unchanged;
    - a plain loader over a sequential or random sampler: a ``DistributedSampler`` (shuffled with ``seed`` when the
      loader shuffled; call its ``set_epoch`` every epoch, as :func:`omlcore_torch.training` does);
    - any other batch sampler: wrapped in :class:`ShardedBatchSampler` (it must yield the same batches on every rank).
    """
    rank, world_size = _resolve(rank, world_size)
    if world_size == 1 or is_sharded(loader):
        return loader
    if loader.batch_size is not None and isinstance(loader.sampler, RandomSampler | SequentialSampler):
        sampler: DistributedSampler[Any] = DistributedSampler(
            loader.dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
            drop_last=loader.drop_last,
        )
        return rebuild_loader(loader, sampler=sampler, batch_size=loader.batch_size, drop_last=loader.drop_last)
    return rebuild_loader(loader, batch_sampler=ShardedBatchSampler(loader.batch_sampler, rank, world_size))


def shard_eval_loader(
    loader: DataLoader[Any], rank: int | None = None, world_size: int | None = None
) -> DataLoader[Any]:
    """``loader`` restricted to this rank's contiguous, batch-aligned block of its batches (see :func:`eval_shard`).

    The loader must iterate the same order on every rank (no shuffling). Raises when there are fewer items than
    ranks, since a rank without any batch would skip the evaluation and stall the others.
    """
    rank, world_size = _resolve(rank, world_size)
    if world_size == 1:
        return loader
    if loader.batch_size is None:  # a custom batch sampler: split its batches
        batches = [list(batch) for batch in loader.batch_sampler]  # type: ignore[union-attr]
        if len(batches) < world_size:
            raise ValueError(
                f"the evaluation loader has {len(batches)} batch(es) for {world_size} processes; every process "
                "needs at least one. Use smaller batches or fewer processes."
            )
        block = eval_shard(len(batches), 1, rank, world_size)
        return rebuild_loader(loader, batch_sampler=_FixedBatches(batches[block.start : block.stop]))
    order = list(iter(loader.sampler))
    if loader.drop_last:
        order = order[: len(order) // loader.batch_size * loader.batch_size]
    if len(order) < world_size:
        raise ValueError(
            f"the evaluation loader has {len(order)} item(s) for {world_size} processes; every process needs at "
            "least one. Evaluate with fewer processes."
        )
    block = eval_shard(len(order), loader.batch_size, rank, world_size)
    sampler = ShardSampler(loader.dataset, order[block.start : block.stop], rank, world_size)
    return rebuild_loader(loader, sampler=sampler, batch_size=loader.batch_size, drop_last=False)


def _comm_device(group: Any = None) -> torch.device:
    """Where collectives need their tensors: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_like(tensors: Sequence[Tensor], group: Any = None) -> list[list[Tensor]]:
    """All-gather each tensor of ``tensors`` from every rank; first dimensions may differ, the rest must agree
    (ranks with an empty tensor may have any shape: they take the others' trailing shape and dtype)."""
    world_size = dist.get_world_size(group)
    meta = [(tuple(t.shape), str(t.dtype)) for t in tensors]
    metas: list[Any] = [None] * world_size
    dist.all_gather_object(metas, meta, group=group)
    if len({len(m) for m in metas}) != 1:
        raise ValueError(f"ranks gather different numbers of tensors: {[len(m) for m in metas]}")
    device = _comm_device(group)
    gathered: list[list[Tensor]] = []
    for position, tensor in enumerate(tensors):
        shapes = [m[position][0] for m in metas]
        dtypes = [m[position][1] for m in metas]
        scalar = all(len(shape) == 0 for shape in shapes)
        shapes = [shape if shape else (1,) for shape in shapes]
        full = [rank for rank, shape in enumerate(shapes) if shape[0] > 0]
        reference = full[0] if full else 0
        trailing, dtype_name = shapes[reference][1:], dtypes[reference]
        clash = [rank for rank in full if shapes[rank][1:] != trailing or dtypes[rank] != dtype_name]
        if clash:
            described = ", ".join(f"rank {r}: {shapes[r]} {dtypes[r]}" for r in range(world_size))
            raise ValueError(f"tensor {position} differs across ranks beyond its first dimension ({described})")
        local = tensor.detach().reshape(1) if tensor.dim() == 0 else tensor.detach()
        is_bool = dtype_name == "torch.bool"
        comm_dtype = torch.uint8 if is_bool else getattr(torch, dtype_name.removeprefix("torch."))
        longest = max(shape[0] for shape in shapes)
        buffer = torch.zeros((longest, *trailing), dtype=comm_dtype, device=device)
        if local.shape[0]:
            buffer[: local.shape[0]] = local.to(device=device, dtype=comm_dtype)
        received = [torch.empty_like(buffer) for _ in range(world_size)]
        dist.all_gather(received, buffer, group=group)
        results = []
        for rank, part in enumerate(received):
            part = part[: shapes[rank][0]]
            part = part.bool() if is_bool else part
            results.append((part.reshape(()) if scalar else part).to(tensor.device))
        gathered.append(results)
    return gathered


def all_gather_padded(tensor: Tensor, group: Any = None) -> list[Tensor]:
    """``tensor`` from every rank, in rank order, on ``tensor.device``; first dimensions may differ across ranks.

    Each rank pads to the longest first dimension, ``all_gather`` runs once, and the padding is cut off again.
    Without a process group: ``[tensor]``.
    """
    if rank_and_world_size(group)[1] == 1:
        return [tensor]
    return [parts[0] for parts in zip(*_gather_like([tensor], group), strict=True)]


def gather_states(state: Mapping[str, Tensor], group: Any = None) -> list[dict[str, Tensor]]:
    """The ``get_state()`` of every rank, in rank order (each entry gathered with :func:`all_gather_padded`)."""
    if rank_and_world_size(group)[1] == 1:
        return [dict(state)]
    names = sorted(state)
    everyone: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, names, group=group)
    if any(other != names for other in everyone):
        raise ValueError(f"ranks hold different state entries: {everyone}")
    columns = _gather_like([state[name] for name in names], group)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def sync_accumulator(accumulator: MetricAccumulator, group: Any = None) -> None:
    """Give every rank the merged state of all ranks: gather every ``get_state()``, ``reset()``, ``merge_state()``.

    Exact when each item was fed to exactly one rank (see :func:`shard_eval_loader`); ``"cat"`` entries are
    concatenated in rank order. Call it once per evaluation, on every rank; a no-op without a process group.
    """
    if rank_and_world_size(group)[1] == 1:
        return
    state = accumulator.get_state()
    missing = set(accumulator.state_reductions) - set(state)
    if missing:
        raise ValueError(
            f"{type(accumulator).__name__}.get_state() lacks {sorted(missing)}, declared in its state_reductions"
        )
    states = gather_states(state, group)
    accumulator.reset()
    accumulator.merge_state(states)
