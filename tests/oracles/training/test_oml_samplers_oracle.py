"""omlcore's samplers against OML 4.0's: the same epoch length and batch statistics (not the same draws)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from oml.samplers import BalanceSampler as OMLBalance
from oml.samplers import CategoryBalanceSampler as OMLCategoryBalance
from oml.samplers import DistinctCategoryBalanceSampler as OMLDistinct

from omlcore.samplers import BalanceSampler, CategoryBalanceSampler, DistinctCategoryBalanceSampler


def labels_and_categories(n_labels: int, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, size=n_labels)  # some labels smaller than n_instances: repeats
    labels = rng.permutation(np.repeat(np.arange(n_labels), sizes))
    label2category = {label: label % 4 for label in range(n_labels)}
    return labels, label2category


def statistics(
    batches: list[list[int]], labels: np.ndarray, label2category: dict[int, int] | None = None
) -> dict[str, object]:
    """Epoch length and the set of per-batch (size, instances per label, labels per category, distinct items)."""
    per_batch = []
    for batch in batches:
        batch_labels = labels[batch]
        counts = Counter(batch_labels.tolist())
        per_category = Counter(label2category[label] for label in counts) if label2category else Counter()
        distinct_items = {label: len(set(np.asarray(batch)[batch_labels == label].tolist())) for label in counts}
        per_batch.append(
            (
                len(batch),
                tuple(sorted(Counter(counts.values()).items())),  # instances per label
                tuple(sorted(Counter(per_category.values()).items())),  # labels per category
                all(distinct_items[label] == min(counts[label], int((labels == label).sum())) for label in counts),
            )
        )
    return {"epoch_length": len(batches), "batches": sorted(set(per_batch))}


@pytest.mark.parametrize("n_labels,n_instances", [(4, 3), (8, 2), (5, 6)])
def test_balance_sampler_statistics_equal_oml(n_labels: int, n_instances: int) -> None:
    labels, _ = labels_and_categories(57)
    np.random.seed(0)
    oml_batches = list(OMLBalance(labels.tolist(), n_labels, n_instances))
    ours = list(BalanceSampler(labels, n_labels, n_instances))
    assert statistics(ours, labels) == statistics(oml_batches, labels)
    # every label at most once per epoch, in both
    for batches in (ours, oml_batches):
        used = [label for batch in batches for label in set(labels[batch].tolist())]
        assert len(used) == len(set(used))


@pytest.mark.parametrize("resample_labels", [False, True])
def test_category_balance_statistics_equal_oml(resample_labels: bool) -> None:
    labels, l2c = labels_and_categories(40)
    n_labels = 12 if resample_labels else 3  # 10 labels per category: 12 needs resampling
    np.random.seed(0)
    oml_batches = list(OMLCategoryBalance(labels.tolist(), l2c, 2, n_labels, 3, resample_labels=resample_labels))
    ours = list(CategoryBalanceSampler(labels, l2c, 2, n_labels, 3, resample_labels=resample_labels))
    assert statistics(ours, labels, l2c) == statistics(oml_batches, labels, l2c)


def test_distinct_category_balance_statistics_equal_oml() -> None:
    labels, l2c = labels_and_categories(42)  # categories of 10 or 11 labels
    np.random.seed(0)
    oml_batches = list(OMLDistinct(labels.tolist(), l2c, 2, 3, 2, epoch_size=25))
    ours = list(DistinctCategoryBalanceSampler(labels, l2c, 2, 3, 2, epoch_size=25))
    ours_stats, oml_stats = statistics(ours, labels, l2c), statistics(oml_batches, labels, l2c)
    assert ours_stats == oml_stats


def test_same_configuration_errors_as_oml() -> None:
    labels, l2c = labels_and_categories(10)
    for make_oml, make_ours in [
        (lambda: OMLBalance(labels.tolist(), 11, 2), lambda: BalanceSampler(labels, 11, 2)),
        (lambda: OMLBalance(labels.tolist(), 2, 1), lambda: BalanceSampler(labels, 2, 1)),
        (lambda: OMLBalance([0, 0, 1], 2, 2), lambda: BalanceSampler([0, 0, 1], 2, 2)),
        (
            lambda: OMLCategoryBalance(labels.tolist(), l2c, 5, 2, 2),
            lambda: CategoryBalanceSampler(labels, l2c, 5, 2, 2),
        ),
        (
            lambda: OMLDistinct(labels.tolist(), l2c, 1, 4, 2, 3),
            lambda: DistinctCategoryBalanceSampler(labels, l2c, 1, 4, 2, 3),
        ),
    ]:
        with pytest.raises((AssertionError, ValueError)):
            make_oml()
        with pytest.raises(ValueError):
            make_ours()
