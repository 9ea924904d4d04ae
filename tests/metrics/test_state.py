"""EmbeddingState: accumulation, exact merging, dataset order and deduplication, category names across processes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from omlcore.metrics.state import EmbeddingState
from omlcore.retrieval import RetrievalInputError


def batch(index: list[int] | None, categories: list[str] | None = None, dim: int = 3) -> dict[str, Any]:
    """Items whose values are functions of their dataset index, so that any copy of an item is identical."""
    rows = torch.tensor(index if index is not None else range(4))
    out: dict[str, Any] = {
        "embeddings": rows[:, None].float().expand(-1, dim) + torch.arange(dim),
        "labels": rows % 3,
        "is_query": rows % 2 == 0,
        "is_gallery": torch.ones(len(rows), dtype=torch.bool),
        "sequences": torch.where(rows > 4, rows // 5, -1),
    }
    if index is not None:
        out["idx"] = rows
    if categories is not None:
        out["categories"] = categories
    return out


def test_collect_puts_merged_shards_in_dataset_order_each_item_once() -> None:
    ranks = [EmbeddingState(), EmbeddingState()]
    ranks[0].update(batch([6, 2, 4]))
    ranks[0].update(batch([0]))
    ranks[1].update(batch([5, 1, 3, 0]))  # 0 again: the padding of a DistributedSampler
    merged = EmbeddingState()
    merged.merge_state([rank.get_state() for rank in ranks])
    assert len(merged) == 8
    items = merged.collect()
    expected = batch(list(range(7)))
    assert items.index.tolist() == list(range(7)) and items.n_duplicates_dropped == 1
    for name in ("embeddings", "labels", "is_query", "is_gallery", "sequences"):
        assert torch.equal(getattr(items, name), expected[name]), name
    assert items.category_names == {} and not bool(items.categories.any())


def test_without_indices_items_keep_arrival_order() -> None:
    state = EmbeddingState()
    state.update(batch(None))
    state.merge_state([state.get_state(), EmbeddingState().get_state()])  # an empty state is skipped
    items = state.collect()
    assert items.index.tolist() == list(range(8)) and items.n_duplicates_dropped == 0
    assert torch.equal(items.labels, torch.tensor([0, 1, 2, 0] * 2))
    with_index = EmbeddingState()
    with_index.update(batch([9]))
    with_index.merge_state([state.get_state()])
    with pytest.raises(RetrievalInputError, match="some merged states carry dataset indices"):
        with_index.collect()


def test_category_names_travel_with_the_state() -> None:
    first, second = EmbeddingState(), EmbeddingState()
    first.update(batch([0, 1], ["shoes", "bags"]))
    second.update(batch([2, 3], ["hats", "shoes"]))
    state = first.get_state()
    assert state["category_names"].dtype == torch.uint8 and set(state) == set(EmbeddingState.state_reductions)
    first.merge_state([second.get_state()])
    items = first.collect()
    assert sorted(items.category_names.values()) == ["bags", "hats", "shoes"]
    assert [items.category_names[int(code)] for code in items.categories] == ["shoes", "bags", "hats", "shoes"]
    mixed = EmbeddingState()
    mixed.update(batch([0], ["shoes"]))
    mixed.update(batch([1]))
    with pytest.raises(RetrievalInputError, match="some batches carry 'categories' and some do not"):
        mixed.collect()
    with pytest.raises(RetrievalInputError, match="'OVERALL' is a reserved name"):
        EmbeddingState().update(batch([0], ["OVERALL"]))


def test_empty_state_and_reset() -> None:
    state = EmbeddingState()
    empty = state.get_state()
    assert empty["embeddings"].shape == (0, 0) and len(state) == 0
    state.update(batch([0, 1], dim=5))
    assert state.get_state()["embeddings"].shape == (2, 5)
    with pytest.raises(RetrievalInputError, match="state 0 has 3-dimensional embeddings, this one 5"):
        state.merge_state([batch_state([0, 1])])
    with pytest.raises(RetrievalInputError, match=r"state 0 lacks \['category_names'"):
        state.merge_state([{k: v for k, v in state.get_state().items() if k != "category_names"}])
    state.reset()
    assert len(state) == 0 and state.get_state()["embeddings"].shape == (0, 0)
    state.update(batch(None, dim=3))  # reset also forgets the dimension and whether batches carry indices
    assert len(state) == 4


def batch_state(index: list[int]) -> dict[str, torch.Tensor]:
    state = EmbeddingState()
    state.update(batch(index))
    return state.get_state()
