"""CategoryBalanceSampler: ``n_categories`` x ``n_labels`` x ``n_instances`` per batch (OML's)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from omlcore.samplers.base import (
    EpochBatchSampler,
    LabelIndex,
    _check_int,
    _check_labels_and_instances,
    sample_within_groups,
)

__all__ = ["CategoryBalanceSampler", "CategoryBatchSampler", "CategoryIndex"]


class CategoryIndex:
    """Label ids grouped by category, validated against a :class:`LabelIndex` (shared by the category samplers)."""

    def __init__(self, owner: str, index: LabelIndex, label2category: Mapping[Any, Hashable]) -> None:
        if not isinstance(label2category, Mapping):
            raise TypeError(f"{owner}: label2category must be a mapping label -> category, got {type(label2category)}")
        known = set(index.unique.tolist())
        no_items = [label for label in label2category if label not in known]
        if no_items:
            raise ValueError(
                f"{owner}: label2category names {len(no_items)} label(s) without any item in `labels`, "
                f"e.g. {no_items[:5]}; remove them from label2category"
            )
        no_category = [label for label in index.unique.tolist() if label not in label2category]
        if no_category:
            raise ValueError(
                f"{owner}: {len(no_category)} label(s) have no category in label2category, e.g. {no_category[:5]}; "
                "every label needs one"
            )
        categories = [label2category[label] for label in index.unique.tolist()]
        self.unique = sorted(set(categories), key=lambda category: (type(category).__name__, category))
        position = {category: i for i, category in enumerate(self.unique)}
        self.of_label = np.array([position[c] for c in categories], dtype=np.int64)  # category id of every label id
        self.counts = np.bincount(self.of_label, minlength=len(self.unique)).astype(np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.labels = np.argsort(self.of_label, kind="stable").astype(np.int64)  # label ids grouped by category

    @property
    def num_categories(self) -> int:
        return len(self.unique)

    def check_labels_per_category(self, owner: str, n_labels: int, fix: str) -> None:
        short = np.flatnonzero(self.counts < n_labels)
        if len(short):
            examples = ", ".join(f"{self.unique[c]!r} ({self.counts[c]})" for c in short[:3])
            raise ValueError(
                f"{owner}: n_labels={n_labels} but {len(short)} categor(ies) have fewer labels, e.g. {examples}; {fix}"
            )


class CategoryBatchSampler(EpochBatchSampler):
    """What the category samplers share: batches of ``n_categories`` x ``n_labels`` x ``n_instances`` items, and
    the checks of these numbers, of the labels (:class:`LabelIndex`) and of ``label2category``
    (:class:`CategoryIndex`)."""

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray,
        label2category: Mapping[Any, Hashable],
        n_categories: int,
        n_labels: int,
        n_instances: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        name = type(self).__name__
        self.n_categories = _check_int(name, "n_categories", n_categories, 1)
        self.n_labels, self.n_instances = _check_labels_and_instances(name, n_labels, n_instances)
        self.index = LabelIndex(name, labels)
        self.categories = CategoryIndex(name, self.index, label2category)
        n_cat = self.categories.num_categories
        if self.n_categories > n_cat:
            raise ValueError(
                f"{name}: n_categories={self.n_categories} but label2category has only {n_cat} categories; "
                f"lower n_categories to at most {n_cat}"
            )

    @property
    def batch_size(self) -> int:
        return self.n_categories * self.n_labels * self.n_instances


class CategoryBalanceSampler(CategoryBatchSampler):
    """Batches of ``n_categories`` categories x ``n_labels`` labels x ``n_instances`` items.

    The semantics of OML's ``oml.samplers.CategoryBalanceSampler``: an epoch has ``ceil(L / n_labels)``
    batches, drawn independently (labels may repeat across batches). Each batch draws ``n_categories``
    distinct categories, with probability proportional to their number of labels (``weight_categories=True``),
    uniformly (``False``) or to given weights (a mapping category -> weight; sequential weighted draws without
    replacement, like ``numpy.random.choice(p=..., replace=False)``); then ``n_labels`` labels of each category
    and ``n_instances`` items of each label, OML's ``smart_sample`` both times (distinct when there are enough,
    else all of them plus repeats).

    Args:
        labels: the label of every dataset item.
        label2category: the category of every label (exactly the labels present in ``labels``).
        n_categories: categories per batch, ``1 <= n_categories <=`` number of categories.
        n_labels: labels per category in a batch, at least 2.
        n_instances: items per label in a batch, at least 2.
        resample_labels: allow categories with fewer than ``n_labels`` labels (their labels are repeated);
            by default such a category is an error.
        weight_categories: ``True``, ``False`` or a mapping category -> non-negative weight.
        seed, rank, world_size: see :class:`~omlcore.samplers.base.EpochBatchSampler`.
    """

    def __init__(
        self,
        labels: Sequence[Any] | np.ndarray,
        label2category: Mapping[Any, Hashable],
        n_categories: int,
        n_labels: int,
        n_instances: int,
        resample_labels: bool = False,
        weight_categories: bool | Mapping[Any, float] = True,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            labels, label2category, n_categories, n_labels, n_instances, seed=seed, rank=rank, world_size=world_size
        )
        name = type(self).__name__
        self.resample_labels = bool(resample_labels)
        if self.n_labels > self.index.num_labels:
            raise ValueError(
                f"{name}: n_labels={self.n_labels} but the dataset has only {self.index.num_labels} labels; "
                f"lower n_labels to at most {self.index.num_labels}"
            )
        self.index.check_at_least_two(name)
        if not self.resample_labels:
            self.categories.check_labels_per_category(
                name, self.n_labels, "lower n_labels or pass resample_labels=True to repeat their labels"
            )
        self.category_weights = self._weights(name, weight_categories)

    def _weights(self, name: str, weight_categories: bool | Mapping[Any, float]) -> np.ndarray | None:
        if isinstance(weight_categories, bool):
            return self.categories.counts / self.categories.counts.sum() if weight_categories else None
        if not isinstance(weight_categories, Mapping):
            raise TypeError(f"{name}: weight_categories must be a bool or a mapping category -> weight")
        missing = [c for c in self.categories.unique if c not in weight_categories]
        if missing:
            raise ValueError(
                f"{name}: weight_categories has no weight for {len(missing)} categor(ies), e.g. {missing[:5]}; "
                "give every category a weight"
            )
        weights = np.array([float(weight_categories[c]) for c in self.categories.unique])
        bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
        if len(bad):
            examples = ", ".join(f"{self.categories.unique[c]!r}: {weights[c]:g}" for c in bad[:3])
            raise ValueError(
                f"{name}: category weights must be finite and non-negative, but {len(bad)} are not, e.g. {examples}"
            )
        if (weights > 0).sum() < self.n_categories:
            raise ValueError(
                f"{name}: only {(weights > 0).sum()} categories have a positive weight, fewer than "
                f"n_categories={self.n_categories}"
            )
        return weights / weights.sum()

    def num_batches(self) -> int:
        return math.ceil(self.index.num_labels / self.n_labels)

    def _epoch_batches(self, rng: np.random.Generator) -> np.ndarray:
        n_batches = self.num_batches()
        shape = (n_batches, self.categories.num_categories)
        if self.category_weights is None:
            keys = rng.random(shape)
        else:  # Efraimidis & Spirakis: the top keys u^(1/w) are sequential weighted draws without replacement
            with np.errstate(divide="ignore"):
                keys = np.log(rng.random(shape)) / self.category_weights
        categories = np.argsort(-keys, axis=1)[:, : self.n_categories].reshape(-1)
        cats = self.categories
        positions = sample_within_groups(rng, cats.counts[categories], self.n_labels)
        label_ids = cats.labels[cats.starts[categories][:, None] + positions].reshape(-1)
        return self.index.sample(rng, label_ids, self.n_instances).reshape(n_batches, self.batch_size)
