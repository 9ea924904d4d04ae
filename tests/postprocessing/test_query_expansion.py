"""AQE, alpha-QE and DBA against dense, naive references: expanded vectors by loops, then a full distance matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from omlcore.postprocessing import build_postprocessor
from omlcore.postprocessing.query_expansion import AlphaQueryExpansion, AverageQueryExpansion, DatabaseAugmentation
from omlcore.retrieval import QueryGallerySplit, RetrievalResults
from omlcore.retrieval.knn import ExactKNN

from .naive import (
    LAYOUTS,
    METRICS,
    Layout,
    allowed,
    array,
    assert_other_splits_are_named,
    assert_rows_equal,
    clustered,
    distances,
    integer_points,
    make_split,
    nearest,
    retrieve,
    unit,
)


def naive_expand(vectors: np.ndarray, pool: np.ndarray, lists: list[list[int]], alpha: float, metric: str) -> Any:
    """Per vector: (v + sum_i w_i g_i) / (1 + sum_i w_i), w_i = max(cos, 0)^alpha; unit vectors for cosine."""
    out = []
    for vector, neighbours in zip(vectors, lists, strict=True):
        total, weights = (unit(vector) if metric == "cosine" else vector).copy(), 1.0
        for j in neighbours:
            weight = max(float(unit(vector) @ unit(pool[j])), 0.0) ** alpha
            total += weight * (unit(pool[j]) if metric == "cosine" else pool[j])
            weights += weight
        out.append(total / weights)
    return np.array(out)


def naive_query_expansion(split: QueryGallerySplit, metric: str, n: int, alpha: float) -> np.ndarray:
    """``(Q, G)`` distances of the expanded queries (each with its top ``n`` allowed gallery items); inf: excluded."""
    queries, gallery, mask = array(split.queries), array(split.gallery), allowed(split)
    before = np.where(mask, distances(queries, gallery, metric), np.inf)
    expanded = naive_expand(queries, gallery, [nearest(row, n) for row in before], alpha, metric)
    return np.where(mask, distances(expanded, gallery, metric), np.inf)


def naive_database_augmentation(split: QueryGallerySplit, metric: str, n: int, alpha: float) -> np.ndarray:
    """``(Q, G)`` distances of the queries to the gallery augmented with each item's top ``n`` other items."""
    queries, gallery = array(split.queries), array(split.gallery)
    among = distances(gallery, gallery, metric)
    np.fill_diagonal(among, np.inf)
    augmented = naive_expand(gallery, gallery, [nearest(row, n) for row in among], alpha, metric)
    return np.where(allowed(split), distances(queries, augmented, metric), np.inf)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("n", "alpha"), [(1, 0.0), (3, 0.0), (4, 3.0), (2, 0.5)])
def test_query_expansion_equals_the_naive_reference(layout: Layout, metric: str, n: int, alpha: float) -> None:
    split = make_split(layout, clustered(seed=n))
    results, context = retrieve(split, metric, top_k=6)
    expanded = AlphaQueryExpansion(n=n, alpha=alpha).process(results, context)
    assert_rows_equal(expanded, naive_query_expansion(split, metric, n, alpha), width=6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("n", "alpha"), [(1, 0.0), (3, 0.0), (2, 3.0)])
def test_database_augmentation_equals_the_naive_reference(layout: Layout, metric: str, n: int, alpha: float) -> None:
    split = make_split(layout, clustered(seed=10 + n))
    results, context = retrieve(split, metric, top_k=6)
    augmented = DatabaseAugmentation(n=n, alpha=alpha).process(results, context)
    assert_rows_equal(augmented, naive_database_augmentation(split, metric, n, alpha), width=6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ties_and_duplicates_are_handled_as_the_reference(layout: Layout) -> None:
    """Integer points: exact distances, many ties; neighbours among tied items are the smaller gallery indices."""
    split = make_split(layout, integer_points(seed=3))
    results, context = retrieve(split, "l2", top_k=8)
    expanded, augmented = AverageQueryExpansion(n=3).process(results, context), DatabaseAugmentation(n=3)
    assert_rows_equal(expanded, naive_query_expansion(split, "l2", 3, 0), 8)
    assert_rows_equal(augmented.process(results, context), naive_database_augmentation(split, "l2", 3, 0), 8)


def test_average_query_expansion_is_alpha_zero() -> None:
    split = make_split("overlap", clustered(seed=4))
    results, context = retrieve(split, "cosine")
    average = AverageQueryExpansion(n=3, k=4).process(results, context)
    alpha_zero = AlphaQueryExpansion(n=3, alpha=0, k=4).process(results, context)
    assert torch.equal(average.retrieved_ids, alpha_zero.retrieved_ids)
    assert torch.equal(average.distances, alpha_zero.distances)


def test_neighbours_come_from_the_incoming_rows_or_a_new_search_when_they_are_narrower() -> None:
    split = make_split("leave_one_out", clustered(seed=5))
    narrow, context = retrieve(split, "l2", top_k=2)
    wide = retrieve(split, "l2", top_k=5)[0]
    from_narrow = AverageQueryExpansion(n=4, k=5).process(narrow, context)
    assert torch.equal(from_narrow.retrieved_ids, AverageQueryExpansion(n=4).process(wide, context).retrieved_ids)
    # an earlier step's order is what the expansion uses: here, the rows reversed
    reversed_rows = RetrievalResults(**{**vars(wide), "retrieved_ids": wide.retrieved_ids.flip(1)})
    expected = naive_expand(
        array(split.queries), array(split.gallery), reversed_rows.retrieved_ids[:, :2].tolist(), 0, "l2"
    )
    reference = np.where(allowed(split), distances(expected, array(split.gallery), "l2"), np.inf)
    assert_rows_equal(AverageQueryExpansion(n=2).process(reversed_rows, context), reference, 5)


@pytest.mark.parametrize(
    ("layout", "top_k", "searches"), [("leave_one_out", 5, 1), ("leave_one_out", 2, 2), ("sets", 5, 2)]
)
def test_database_augmentation_reuses_leave_one_out_rows(
    layout: Layout, top_k: int, searches: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leave-one-out rows at least ``n`` wide are each gallery item's neighbours: only the final search runs."""
    split = make_split(layout, clustered(seed=7))
    results, context = retrieve(split, "l2", top_k=top_k)
    calls = []
    search = ExactKNN.search
    monkeypatch.setattr(ExactKNN, "search", lambda *args: calls.append(args) or search(*args))
    augmented = DatabaseAugmentation(n=3, k=5).process(results, context)
    assert len(calls) == searches
    assert_rows_equal(augmented, naive_database_augmentation(split, "l2", 3, 0), 5)


def test_n_and_k_beyond_the_gallery_are_clipped() -> None:
    split = make_split("sets", clustered(seed=6, n_labels=2, per_label=3))  # 2 queries, 4 gallery items
    results, context = retrieve(split, "l2", top_k=3)
    for step in (AverageQueryExpansion(n=50, k=50), AlphaQueryExpansion(n=50, k=50), DatabaseAugmentation(n=50, k=50)):
        out = step.process(results, context)
        assert out.top_k == 4 and bool((out.retrieved_ids >= 0).all())
    reference = naive_query_expansion(split, "l2", 4, 0)
    assert_rows_equal(AverageQueryExpansion(n=50, k=50).process(results, context), reference, 4)


def test_k_sets_the_width_of_the_new_search() -> None:
    split = make_split("leave_one_out", clustered(seed=7))
    results, context = retrieve(split, "cosine", top_k=3)
    assert AlphaQueryExpansion(k=7).process(results, context).top_k == 7
    assert DatabaseAugmentation().process(results, context).top_k == 3


@pytest.mark.parametrize("step", [AverageQueryExpansion(), AlphaQueryExpansion(), DatabaseAugmentation()])
def test_results_of_another_split_are_an_error_naming_the_fix(step: object) -> None:
    assert_other_splits_are_named(step)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AverageQueryExpansion(n=0), "n must be a positive integer"),
        (lambda: AlphaQueryExpansion(alpha=-1), r"alpha must be a number in \[0.0, inf\]"),
        (lambda: DatabaseAugmentation(k=0), "k must be a positive integer or None"),
        (lambda: DatabaseAugmentation(n=2.5), "n must be a positive integer"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_name_the_argument(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_registered_names_build_the_classes() -> None:
    assert isinstance(build_postprocessor({"name": "aqe", "args": {"n": 3}}), AverageQueryExpansion)
    assert isinstance(build_postprocessor("alpha_qe"), AlphaQueryExpansion)
    assert isinstance(build_postprocessor("dba"), DatabaseAugmentation)


def precision_at(results: RetrievalResults, k: int) -> float:
    return float(results.is_relevant[:, :k].float().mean())


def test_expansion_lifts_precision_on_noisy_clusters() -> None:
    points = torch.nn.functional.normalize(clustered(seed=13, n_labels=60, per_label=8, dim=16, noise=0.8), dim=1)
    split = QueryGallerySplit.from_items(points, torch.arange(len(points)) // 8)
    results, context = retrieve(split, "cosine", top_k=7)
    before = precision_at(results, 7)  # 0.58; after: 0.645, 0.643, 0.66
    for step in (AverageQueryExpansion(), AlphaQueryExpansion(), DatabaseAugmentation()):
        assert precision_at(step.process(results, context), 7) > before + 0.04, step
    assert precision_at(AlphaQueryExpansion().process(results, context), 1) > precision_at(results, 1) + 0.02
