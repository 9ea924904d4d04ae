"""CSLS against a dense, naive reference: the paper's 2 cos - r_T - r_S from full similarity matrices (cosine), the
same local scaling with Euclidean distances (l2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omlcore.postprocessing import build_postprocessor
from omlcore.postprocessing.normalization import CSLS
from omlcore.retrieval import QueryGallerySplit

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
)


def naive_csls(split: QueryGallerySplit, metric: str, neighbourhood: int, candidates: int | None = None) -> np.ndarray:
    """``(Q, G)``: ``-CSLS / 2`` (cosine) or ``d - (rho_T + rho_S) / 2`` (l2), inf where excluded or, with
    ``candidates``, outside the query's ``candidates`` nearest items."""
    mask = allowed(split)
    d = np.where(mask, distances(array(split.queries), array(split.gallery), metric), np.inf)
    out = np.full(d.shape, np.inf)
    if metric == "cosine":
        similarity = np.where(mask, 1 - d, -np.inf)
        r_t = [np.mean(sorted(row[np.isfinite(row)])[::-1][:neighbourhood]) for row in similarity]
        r_s = [np.mean(sorted(col[np.isfinite(col)])[::-1][:neighbourhood]) for col in similarity.T]
        for q, g in zip(*np.nonzero(mask), strict=True):
            out[q, g] = -(2 * similarity[q, g] - r_t[q] - r_s[g]) / 2
    else:
        rho_t = [np.mean(sorted(row[np.isfinite(row)])[:neighbourhood]) for row in d]
        rho_s = [np.mean(sorted(col[np.isfinite(col)])[:neighbourhood]) for col in d.T]
        for q, g in zip(*np.nonzero(mask), strict=True):
            out[q, g] = d[q, g] - (rho_t[q] + rho_s[g]) / 2
    if candidates is not None:
        for q, row in enumerate(d):
            outside = np.ones(len(row), dtype=bool)
            outside[nearest(row, candidates)] = False
            out[q, outside] = np.inf
    return out


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("neighbourhood", "candidates"), [(1, 100), (3, 100), (4, 8), (10, 6)])
def test_csls_equals_the_naive_reference(layout: Layout, metric: str, neighbourhood: int, candidates: int) -> None:
    split = make_split(layout, clustered(seed=neighbourhood))
    results, context = retrieve(split, metric, top_k=6)
    normalised = CSLS(neighbourhood, candidates).process(results, context)
    assert_rows_equal(normalised, naive_csls(split, metric, neighbourhood, candidates), width=6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ties_and_duplicates_as_the_reference(layout: Layout) -> None:
    split = make_split(layout, integer_points(seed=4))
    results, context = retrieve(split, "l2", top_k=8)
    assert_rows_equal(CSLS(3, candidates=12).process(results, context), naive_csls(split, "l2", 3, 12), width=8)


def test_hubs_are_pushed_down() -> None:
    """Gallery items along the offset that all points share are near every query without sharing its label."""
    offset = torch.ones(16)
    points = clustered(seed=5, n_labels=40, per_label=5, dim=16, noise=0.8) + offset
    hubs = offset + 0.3 * torch.randn(10, 16, generator=torch.Generator().manual_seed(5))
    embeddings = torch.nn.functional.normalize(torch.cat([points, hubs]), dim=1)
    labels = torch.cat([torch.arange(200) // 5, 100 + torch.arange(10)])
    split = QueryGallerySplit.from_items(embeddings, labels, is_query=torch.arange(210) < 200)
    results, context = retrieve(split, "cosine", top_k=5)
    normalised = CSLS().process(results, context)
    hubs_before, hubs_after = int((results.retrieved_ids >= 200).sum()), int((normalised.retrieved_ids >= 200).sum())
    assert hubs_after < 0.6 * hubs_before  # 112 -> 61
    assert normalised.is_relevant[:, 0].float().mean() > results.is_relevant[:, 0].float().mean() + 0.02  # CMC@1


def test_k_neighbourhood_and_candidates_beyond_the_sets_are_clipped() -> None:
    split = make_split("sets", clustered(seed=6, n_labels=2, per_label=3))  # 2 queries, 4 gallery items
    results, context = retrieve(split, "cosine", top_k=2)
    normalised = CSLS(neighbourhood=50, candidates=50, k=50).process(results, context)
    assert normalised.top_k == 4
    assert_rows_equal(normalised, naive_csls(split, "cosine", 50), width=4)


def test_k_sets_the_width_and_candidates_grow_to_it() -> None:
    split = make_split("leave_one_out", clustered(seed=7))
    results, context = retrieve(split, "l2", top_k=3)
    normalised = CSLS(neighbourhood=3, candidates=2, k=7).process(results, context)
    assert_rows_equal(normalised, naive_csls(split, "l2", 3, candidates=7), width=7)


def test_results_of_another_split_are_an_error_naming_the_fix() -> None:
    assert_other_splits_are_named(CSLS())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"neighbourhood": 0}, "neighbourhood must be a positive integer"),
        ({"candidates": 1.5}, "candidates must be a positive integer"),
        ({"k": -1}, "k must be a positive integer or None"),
    ],
)
def test_bad_arguments_name_the_argument(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CSLS(**arguments)


def test_registered_name_builds_the_class() -> None:
    step = build_postprocessor({"name": "csls", "args": {"neighbourhood": 5}})
    assert isinstance(step, CSLS) and step.neighbourhood == 5
