"""The category samplers' errors about category weights stay short for thousands of categories."""

from __future__ import annotations

import numpy as np
import pytest

from omlcore.samplers import CategoryBalanceSampler

N_CATEGORIES = 3000


def labels_and_categories() -> tuple[np.ndarray, dict[int, str]]:
    """Two labels of two items in each of :data:`N_CATEGORIES` categories."""
    labels = np.repeat(np.arange(2 * N_CATEGORIES), 2)
    return labels, {label: f"category_{label // 2}" for label in range(2 * N_CATEGORIES)}


def test_invalid_weights_are_counted_and_the_first_shown() -> None:
    labels, label2category = labels_and_categories()
    weights = {f"category_{c}": -1.0 if c % 2 else float("nan") for c in range(N_CATEGORIES)}
    with pytest.raises(ValueError) as info:
        CategoryBalanceSampler(labels, label2category, 2, 2, 2, weight_categories=weights)
    assert str(info.value) == (
        "CategoryBalanceSampler: category weights must be finite and non-negative, but 3000 are not, e.g. "
        "'category_0': nan, 'category_1': -1, 'category_10': nan"
    )


def test_missing_weights_are_counted() -> None:
    labels, label2category = labels_and_categories()
    with pytest.raises(ValueError) as info:
        CategoryBalanceSampler(labels, label2category, 2, 2, 2, weight_categories={"category_0": 1.0})
    message = str(info.value)
    assert message.startswith("CategoryBalanceSampler: weight_categories has no weight for 2999 categor(ies), e.g. [")
    assert message.endswith("]; give every category a weight") and len(message) < 250
