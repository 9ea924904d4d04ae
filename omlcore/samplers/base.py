"""What omlcore's batch samplers share: a seeded epoch generator, ``set_epoch`` and the distributed split.

A sampler builds the batches of the *whole* epoch (all ranks) from ``numpy.random.default_rng([seed, epoch])``
and each rank iterates its own share: batches ``rank, rank + W, rank + 2W, ...`` of the first
``(n // W) * W``; the last ``n % W`` batches are dropped so that every rank has the same length. The union of
the shares is therefore the one-process epoch minus those few batches, whatever the world size.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["EpochBatchSampler", "LabelIndex", "sample_within_groups"]


def _process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of torch.distributed's default group if one is initialised, else ``(0, 1)``.

    Looks at ``sys.modules`` only: if torch was never imported, no process group can exist, so torch is not
    imported here (the samplers need numpy alone).
    """
    dist: Any = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


def _check_int(owner: str, name: str, value: Any, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}{why}, got {value}")
    return int(value)


def _check_labels_and_instances(owner: str, n_labels: Any, n_instances: Any) -> tuple[int, int]:
    """``n_labels`` and ``n_instances`` of a batch, at least 2 each (else no negatives / no positives)."""
    return (
        _check_int(owner, "n_labels", n_labels, 2, " (a batch needs two labels to have negatives)"),
        _check_int(owner, "n_instances", n_instances, 2, " (a label needs two items in a batch to have positives)"),
    )


class EpochBatchSampler(ABC):
    """Base of omlcore's batch samplers (:class:`omlcore.protocols.Sampler`): seed, epoch and rank aware.

    Subclasses implement :attr:`batch_size`, :meth:`num_batches` (batches of the whole epoch, all ranks
    together) and :meth:`_epoch_batches` (an ``(num_batches, batch_size)`` int64 array of dataset indices).

    Epochs: iterating produces epoch :attr:`epoch` (0 at first), the same batches for the same seed, rank and
    world size however often it is iterated; only ``set_epoch(e)`` moves to another epoch (``DistributedSampler``
    style). Call it before every epoch, as :func:`omlcore_torch.fit` and omlcore's Lightning module do: a
    ``DataLoader`` may iterate its batch sampler more than once per pass (it does with workers), so an epoch that
    advanced on iteration would depend on the loader.

    Args:
        seed: seed of the epoch generator; must be the same on every rank.
        rank, world_size: this process's share; by default read from ``torch.distributed`` when a process
            group is initialised (at iteration time), else ``0`` / ``1``. Pass both or neither.
    """

    def __init__(self, *, seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        name = type(self).__name__
        self.seed = _check_int(name, "seed", seed, 0)
        if (rank is None) != (world_size is None):
            raise ValueError(
                f"{name}: pass both rank and world_size (got rank={rank}, world_size={world_size}), or neither "
                "to take them from torch.distributed"
            )
        if rank is not None and world_size is not None:
            _check_int(name, "world_size", world_size, 1)
            _check_int(name, "rank", rank, 0)
            if rank >= world_size:
                raise ValueError(f"{name}: rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self._rank = rank
        self._world_size = world_size
        self._epoch = 0

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Indices per batch."""

    @abstractmethod
    def num_batches(self) -> int:
        """Batches of one epoch over all ranks (``len(self)`` is this rank's share)."""

    @abstractmethod
    def _epoch_batches(self, rng: np.random.Generator) -> np.ndarray:
        """All ``num_batches()`` batches of one epoch, an int64 array ``(num_batches, batch_size)``."""

    @property
    def epoch(self) -> int:
        """The epoch that iterating produces (set by :meth:`set_epoch`)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make iterating produce epoch ``epoch`` (call it with the same value on every rank)."""
        self._epoch = _check_int(type(self).__name__, "epoch", epoch, 0)

    @property
    def rank(self) -> int:
        return self._rank if self._rank is not None else _process_group()[0]

    @property
    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else _process_group()[1]

    def _share(self) -> tuple[int, int, int]:
        """``(rank, world_size, batches per rank)``."""
        rank, world_size = (
            (self._rank, self._world_size)
            if self._rank is not None and self._world_size is not None
            else _process_group()
        )
        total = self.num_batches()
        if total < world_size:
            raise ValueError(
                f"{type(self).__name__}: an epoch has {total} batch(es), fewer than world_size={world_size} "
                "processes, so some ranks would get none; use fewer processes or smaller batches"
            )
        return rank, world_size, total // world_size

    def __len__(self) -> int:
        return self._share()[2]

    def __iter__(self) -> Iterator[list[int]]:
        rank, world_size, per_rank = self._share()
        rng = np.random.default_rng([self.seed, self._epoch])
        batches = self._epoch_batches(rng)
        return iter(batches[rank : per_rank * world_size : world_size].tolist())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size}, batches={self.num_batches()}, seed={self.seed})"


def sample_within_groups(rng: np.random.Generator, sizes: np.ndarray, k: int) -> np.ndarray:
    """``k`` positions in ``[0, size)`` for every group size, as OML's ``smart_sample`` picks them.

    A group with at least ``k`` members gives ``k`` distinct positions in random order (a uniform random
    subset: Floyd's algorithm, vectorised over groups, then a shuffle); a smaller group gives all its
    positions in random order followed by ``k - size`` positions drawn with replacement.

    Args:
        rng: the generator.
        sizes: ``(M,)`` group sizes, all >= 1.
        k: positions per group.

    Returns:
        ``(M, k)`` int64 positions.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    out = np.empty((len(sizes), k), dtype=np.int64)
    full = sizes >= k
    if full.all():
        out[:] = _floyd(rng, sizes, k)
    else:
        out[full] = _floyd(rng, sizes[full], k)
        short = ~full
        out[short] = _short(rng, sizes[short], k)
    return out


def _floyd(rng: np.random.Generator, sizes: np.ndarray, k: int) -> np.ndarray:
    chosen = np.empty((len(sizes), k), dtype=np.int64)
    for step in range(k):
        top = sizes - k + step  # Floyd: draw t from [0, top]; if t is taken already, take top instead
        draw = rng.integers(0, top + 1)
        taken = (chosen[:, :step] == draw[:, None]).any(1)
        chosen[:, step] = np.where(taken, top, draw)
    return np.take_along_axis(chosen, rng.random(chosen.shape).argsort(1), 1)


def _short(rng: np.random.Generator, sizes: np.ndarray, k: int) -> np.ndarray:
    columns = np.arange(k)
    keys = rng.random((len(sizes), k))
    keys[columns >= sizes[:, None]] = np.inf  # the first `size` slots become a permutation of 0..size-1
    permutation = keys.argsort(1)
    extra = rng.integers(0, np.broadcast_to(sizes[:, None], (len(sizes), k)))
    return np.where(columns < sizes[:, None], permutation, extra)


class LabelIndex:
    """Dataset indices grouped by label: ``order[starts[l] : starts[l] + counts[l]]`` are the items of label ``l``.

    ``labels`` may hold any sortable values (ints, strings); ``unique[l]`` is the value of label id ``l``.
    """

    def __init__(self, owner: str, labels: Sequence[Any] | np.ndarray) -> None:
        array = np.asarray(labels)
        if array.ndim != 1 or len(array) == 0:
            raise ValueError(f"{owner}: labels must be a non-empty 1-D sequence, got shape {array.shape}")
        self.unique, inverse = np.unique(array, return_inverse=True)
        self.inverse = inverse.astype(np.int64, copy=False).reshape(-1)
        self.counts = np.bincount(self.inverse, minlength=len(self.unique)).astype(np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.order = np.argsort(self.inverse, kind="stable").astype(np.int64, copy=False)

    @property
    def num_labels(self) -> int:
        return len(self.unique)

    def check_at_least_two(self, owner: str) -> None:
        single = np.flatnonzero(self.counts < 2)
        if len(single):
            examples = ", ".join(
                f"label {self.unique[i].tolist()!r} (index {self.order[self.starts[i]]})" for i in single[:3]
            )
            raise ValueError(
                f"{owner}: {len(single)} label(s) have a single item, e.g. {examples}; every label needs at least "
                "2 items to form a positive pair. Drop those items (or merge their labels) before sampling."
            )

    def sample(self, rng: np.random.Generator, label_ids: np.ndarray, n_instances: int) -> np.ndarray:
        """``(len(label_ids), n_instances)`` dataset indices, OML's ``smart_sample`` per label."""
        positions = sample_within_groups(rng, self.counts[label_ids], n_instances)
        return self.order[self.starts[label_ids][:, None] + positions]
