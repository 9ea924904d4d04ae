"""CategoryBalanceSampler and DistinctCategoryBalanceSampler: OML's batch statistics, weights, errors, DDP split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from omlcore.protocols import Sampler
from omlcore.samplers import CategoryBalanceSampler, DistinctCategoryBalanceSampler


def dataset(labels_per_category: dict[str, int], items: int = 3) -> tuple[np.ndarray, dict[int, str]]:
    labels, label2category, next_label = [], {}, 0
    for category, n in labels_per_category.items():
        for _ in range(n):
            labels += [next_label] * (items + next_label % 2)  # 3 or 4 items per label
            label2category[next_label] = category
            next_label += 1
    return np.random.default_rng(0).permutation(labels), label2category


def composition(batch: list[int], labels: np.ndarray, label2category: dict[int, str]) -> dict[str, Counter[int]]:
    per_category: dict[str, Counter[int]] = {}
    for i in batch:
        label = int(labels[i])
        per_category.setdefault(label2category[label], Counter())[label] += 1
    return per_category


def epochs_of(sampler: CategoryBalanceSampler, epochs: int) -> Iterator[list[int]]:
    """The batches of epochs ``0 .. epochs - 1`` (``set_epoch`` before each, as a training loop calls it)."""
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        yield from sampler


def test_category_balance_batches() -> None:
    labels, l2c = dataset({"a": 5, "b": 4, "c": 6})
    sampler = CategoryBalanceSampler(labels, l2c, n_categories=2, n_labels=3, n_instances=2)
    assert isinstance(sampler, Sampler) and sampler.batch_size == 12
    batches = list(sampler)
    assert len(batches) == len(sampler) == int(np.ceil(15 / 3))
    for batch in batches:
        parts = composition(batch, labels, l2c)
        assert len(parts) == 2  # distinct categories
        for counter in parts.values():
            assert len(counter) == 3 and set(counter.values()) == {2}
        assert len(batch) == len(set(batch))  # every label has >= 2 items: no repeats


def test_category_weights() -> None:
    labels, l2c = dataset({"a": 2, "b": 2, "c": 6}, items=2)
    epochs = 150
    counts: Counter[str] = Counter()
    sampler = CategoryBalanceSampler(labels, l2c, 1, 2, 2, weight_categories=True)
    for batch in epochs_of(sampler, epochs):
        counts.update(composition(batch, labels, l2c).keys())
    total = sum(counts.values())
    assert counts["c"] / total == pytest.approx(0.6, abs=0.05)  # proportional to labels per category
    uniform = CategoryBalanceSampler(labels, l2c, 1, 2, 2, weight_categories=False)
    seen = Counter(c for b in epochs_of(uniform, epochs) for c in composition(b, labels, l2c))
    assert seen["c"] / sum(seen.values()) == pytest.approx(1 / 3, abs=0.05)
    given = CategoryBalanceSampler(labels, l2c, 2, 2, 2, weight_categories={"a": 0.0, "b": 1.0, "c": 3.0})
    assert all(set(composition(b, labels, l2c)) == {"b", "c"} for b in epochs_of(given, 20))


def test_resample_labels_repeats_labels_of_small_categories() -> None:
    labels, l2c = dataset({"a": 2, "b": 5})
    with pytest.raises(ValueError, match=r"n_labels=3 but 1 categor\(ies\) have fewer labels, e.g. 'a' \(2\)"):
        CategoryBalanceSampler(labels, l2c, 2, 3, 2)
    sampler = CategoryBalanceSampler(labels, l2c, 2, 3, 2, resample_labels=True)
    for batch in sampler:
        parts = composition(batch, labels, l2c)
        assert sum(parts["a"].values()) == 6 and set(parts["a"]) == {0, 1}  # both labels, one of them twice


def test_category_errors() -> None:
    labels, l2c = dataset({"a": 3, "b": 3})
    with pytest.raises(
        ValueError, match=r"label2category names 1 label\(s\) without any item in `labels`, e.g. \[99\]"
    ):
        CategoryBalanceSampler(labels, {**l2c, 99: "a"}, 1, 2, 2)
    with pytest.raises(ValueError, match=r"1 label\(s\) have no category in label2category, e.g. \[0\]"):
        CategoryBalanceSampler(labels, {k: v for k, v in l2c.items() if k}, 1, 2, 2)
    with pytest.raises(ValueError, match=r"n_categories=3 but label2category has only 2 categories"):
        CategoryBalanceSampler(labels, l2c, 3, 2, 2)
    with pytest.raises(ValueError, match=r"n_instances must be >= 2"):
        DistinctCategoryBalanceSampler(labels, l2c, 1, 2, 1, epoch_size=3)
    with pytest.raises(ValueError, match=r"only 1 categories have a positive weight"):
        CategoryBalanceSampler(labels, l2c, 2, 2, 2, weight_categories={"a": 1.0, "b": 0.0})


def test_distinct_category_balance_uses_labels_once_until_exhausted() -> None:
    labels, l2c = dataset({"a": 4, "b": 5, "c": 3})
    sampler = DistinctCategoryBalanceSampler(labels, l2c, n_categories=2, n_labels=2, n_instances=2, epoch_size=9)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 9 and sampler.batch_size == 8
    members = {c: {k for k, v in l2c.items() if v == c} for c in "abc"}
    unused = {c: set(members[c]) for c in "abc"}
    for batch in batches:
        if sum(1 for c in "abc" if unused[c]) < 2:  # OML resets once fewer than n_categories have unused labels
            unused = {c: set(members[c]) for c in "abc"}
        parts = composition(batch, labels, l2c)
        assert len(parts) == 2
        for category, counter in parts.items():
            assert unused[category], "a category without unused labels was drawn"
            assert len(counter) == 2 and set(counter.values()) == {2}
            fresh = set(counter) & unused[category]
            # unused labels first; a category with fewer left tops up with distinct used ones
            assert len(fresh) == min(2, len(unused[category]))
            unused[category] -= set(counter)


def test_category_samplers_are_deterministic_and_split_across_ranks() -> None:
    labels, l2c = dataset({"a": 4, "b": 5, "c": 3})
    makers = [
        lambda **kw: CategoryBalanceSampler(labels, l2c, 2, 2, 2, seed=1, **kw),
        lambda **kw: DistinctCategoryBalanceSampler(labels, l2c, 2, 2, 2, epoch_size=7, seed=1, **kw),
    ]
    for make in makers:
        full = list(make(rank=0, world_size=1))
        assert full == list(make())
        shares = [list(make(rank=r, world_size=2)) for r in range(2)]
        assert [len(s) for s in shares] == [len(full) // 2] * 2
        assert shares[0] + shares[1] != [] and sorted(shares[0] + shares[1]) == sorted(full[: len(full) // 2 * 2])
