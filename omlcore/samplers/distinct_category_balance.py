"""DistinctCategoryBalanceSampler: category-balanced batches that use each label once before repeating (OML's)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from omlcore.samplers.base import _check_int
from omlcore.samplers.category_balance import CategoryBatchSampler

__all__ = ["DistinctCategoryBalanceSampler"]


class DistinctCategoryBalanceSampler(CategoryBatchSampler):
    """Batches of ``n_categories`` x ``n_labels`` x ``n_instances``, labels distinct until they run out.

    The semantics of OML's ``oml.samplers.DistinctCategoryBalanceSampler``. An epoch has ``epoch_size``
    batches. Each batch draws ``n_categories`` distinct categories uniformly among the categories that still
    have unused labels, and ``n_labels`` unused labels of each (a random permutation of the category's labels
    is consumed in order). A category with fewer than ``n_labels`` unused labels gives all of them plus
    distinct already-used ones, and is then exhausted. When fewer than ``n_categories`` categories have unused
    labels, every label becomes unused again. Items: ``n_instances`` per label, OML's ``smart_sample``.

    The label draws are sequential by nature (a Python loop over batches and categories, not over labels);
    the item draws are vectorised.

    Args:
        labels: the label of every dataset item.
        label2category: the category of every label (exactly the labels present in ``labels``).
        n_categories: categories per batch, ``1 <= n_categories <=`` number of categories.
        n_labels: labels per category in a batch, at least 2; every category needs at least this many labels.
        n_instances: items per label in a batch, at least 2.
        epoch_size: batches per epoch (over all ranks).
        seed, rank, world_size: see :class:`~omlcore.samplers.base.EpochBatchSampler`.
    """

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray,
        label2category: Mapping[Any, Hashable],
        n_categories: int,
        n_labels: int,
        n_instances: int,
        epoch_size: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            labels, label2category, n_categories, n_labels, n_instances, seed=seed, rank=rank, world_size=world_size
        )
        name = type(self).__name__
        self.epoch_size = _check_int(name, "epoch_size", epoch_size, 1)
        self.index.check_at_least_two(name)
        self.categories.check_labels_per_category(name, self.n_labels, "lower n_labels")

    def num_batches(self) -> int:
        return self.epoch_size

    def _epoch_batches(self, rng: np.random.Generator) -> np.ndarray:
        cats, n_labels = self.categories, self.n_labels
        label_ids = np.empty((self.epoch_size, self.n_categories * n_labels), dtype=np.int64)
        permutations: list[np.ndarray] = []
        used = np.zeros(cats.num_categories, dtype=np.int64)  # labels of each category's permutation used so far
        available: list[int] = []
        for batch in range(self.epoch_size):
            if len(available) < self.n_categories:  # (re)start: every label unused
                permutations = [
                    rng.permutation(cats.labels[s : s + n]) for s, n in zip(cats.starts, cats.counts, strict=True)
                ]
                used[:] = 0
                available = list(range(cats.num_categories))
            chosen = rng.choice(len(available), size=self.n_categories, replace=False)
            for slot, category in enumerate([available[i] for i in chosen]):
                permutation, start = permutations[category], int(used[category])
                fresh = permutation[start : start + n_labels]
                if len(fresh) < n_labels:  # the rest of the category, topped up with distinct used labels
                    fresh = np.concatenate(
                        [fresh, rng.choice(permutation[:start], n_labels - len(fresh), replace=False)]
                    )
                used[category] = start + n_labels
                label_ids[batch, slot * n_labels : (slot + 1) * n_labels] = fresh
            available = [category for category in available if used[category] < cats.counts[category]]
        items = self.index.sample(rng, label_ids.reshape(-1), self.n_instances)
        return items.reshape(self.epoch_size, self.batch_size)
