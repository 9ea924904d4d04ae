"""BalanceSampler: ``n_labels`` labels x ``n_instances`` items per batch, every label once per epoch (OML's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from omlcore.samplers.base import EpochBatchSampler, LabelIndex, _check_labels_and_instances

__all__ = ["BalanceSampler"]


class BalanceSampler(EpochBatchSampler):
    """Batches of ``n_labels`` labels with ``n_instances`` items each (P x K sampling).

    From "In Defense of the Triplet Loss for Person Re-Identification" (Hermans et al., 2017,
    https://arxiv.org/abs/1703.07737); the semantics of OML's ``oml.samplers.BalanceSampler``:

    - an epoch is a random permutation of the ``L`` labels cut into ``L // n_labels`` batches of ``n_labels``
      labels (every label appears at most once per epoch; the last ``L % n_labels`` labels of the
      permutation are left out);
    - each label contributes ``n_instances`` distinct items, or, when it has fewer, all of its items followed
      by repeats drawn with replacement.

    Vectorised: one epoch costs ``O(L * n_instances)`` numpy work after an ``O(N log N)`` set-up, and memory is
    ``O(N)``. See :class:`~omlcore.samplers.base.EpochBatchSampler` for ``seed``, ``set_epoch`` and the
    distributed split (``rank`` / ``world_size``).

    Args:
        labels: the label of every dataset item (ints or any sortable values).
        n_labels: labels per batch, at least 2.
        n_instances: items per label in a batch, at least 2.

    Raises:
        ValueError: fewer than ``n_labels`` labels, a label with a single item, or ``n_labels`` /
            ``n_instances`` below 2.
    """

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray,
        n_labels: int,
        n_instances: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        name = type(self).__name__
        self.n_labels, self.n_instances = _check_labels_and_instances(name, n_labels, n_instances)
        self.index = LabelIndex(name, labels)
        if self.index.num_labels < self.n_labels:
            raise ValueError(
                f"{name}: n_labels={self.n_labels} but the dataset has only {self.index.num_labels} labels; "
                f"lower n_labels to at most {self.index.num_labels}"
            )
        self.index.check_at_least_two(name)

    @property
    def batch_size(self) -> int:
        return self.n_labels * self.n_instances

    def num_batches(self) -> int:
        return self.index.num_labels // self.n_labels

    def _epoch_batches(self, rng: np.random.Generator) -> np.ndarray:
        n_batches = self.num_batches()
        label_ids = rng.permutation(self.index.num_labels)[: n_batches * self.n_labels]
        return self.index.sample(rng, label_ids, self.n_instances).reshape(n_batches, self.batch_size)
