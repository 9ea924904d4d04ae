"""k-reciprocal re-ranking against the dense published algorithm (Zhong et al. 2017), re-implemented with loops over
full N x N matrices, with the distance scale and tie rule that KReciprocalReranker documents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omlcore.postprocessing import PostprocessorError, RetrievalContext, build_postprocessor
from omlcore.postprocessing.k_reciprocal import KReciprocalReranker
from omlcore.retrieval import QueryGallerySplit, RetrievalResults

from .naive import (
    LAYOUTS,
    METRICS,
    Layout,
    allowed,
    array,
    assert_other_splits_are_named,
    assert_rows_equal,
    clustered,
    integer_points,
    make_split,
    retrieve,
    unit,
)


def naive_k_reciprocal(
    results: RetrievalResults,
    split: QueryGallerySplit,
    metric: str,
    k1: int,
    k2: int,
    lambda_value: float,
    graph_k: int | None = None,
) -> np.ndarray:
    """``(Q, G)`` final distances ``(1 - lambda) d_J + lambda d``, inf where excluded; with ``graph_k`` only for the
    candidates (gallery items among the query's ``max(k1, k2 - 1, width, graph_k)`` nearest nodes or in its row)."""
    gallery, queries = array(split.gallery), array(split.queries)
    gallery_ids = [] if split.gallery_ids is None else split.gallery_ids.tolist()
    query_ids = [None] * len(queries) if split.query_ids is None else split.query_ids.tolist()
    query_nodes = [gallery_ids.index(i) if i in gallery_ids else None for i in query_ids]
    extra = [q for q, node in enumerate(query_nodes) if node is None]
    for position, q in enumerate(extra):
        query_nodes[q] = len(gallery) + position
    points = np.concatenate([gallery, queries[extra]])
    points = unit(points) if metric == "cosine" else points
    n = len(points)
    d = np.array([[np.sum((a - b) ** 2) for b in points] for a in points])
    d /= d.sum() / (n * (n - 1))  # the mean over pairs of distinct nodes
    ranks = [sorted(range(n), key=lambda j, i=i: (j != i, d[i, j], j)) for i in range(n)]

    def reciprocal(i: int, k: int) -> list[int]:
        return [j for j in ranks[i][: k + 1] if i in ranks[j][: k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        neighbours = reciprocal(i, k1)
        expansion = set(neighbours)
        for candidate in neighbours:
            theirs = reciprocal(candidate, round(k1 / 2))
            if len(set(theirs) & set(neighbours)) > 2 / 3 * len(theirs):
                expansion |= set(theirs)
        members = sorted(expansion)
        weights = np.exp(-d[i, members])
        v[i, members] = weights / weights.sum()
    if k2 != 1:
        v = np.array([v[ranks[i][:k2]].mean(axis=0) for i in range(n)])

    out = np.full((len(queries), len(gallery)), np.inf)
    mask = allowed(split)
    width = results.top_k
    graph_width = min(max(k1, k2 - 1, width, graph_k or n), n - 1)
    for q, p in enumerate(query_nodes):
        candidates = set(ranks[p][1 : graph_width + 1]) | set(results.retrieved_ids[q].tolist())
        for g in range(len(gallery)):
            if mask[q, g] and g in candidates:
                jaccard = 1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum()
                out[q, g] = (1 - lambda_value) * jaccard + lambda_value * d[p, g]
    return out


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("k1", "k2", "lambda_value"), [(6, 3, 0.3), (4, 1, 0.0), (20, 6, 0.5)])
def test_equals_the_dense_algorithm_when_the_graph_covers_every_item(
    layout: Layout, metric: str, k1: int, k2: int, lambda_value: float
) -> None:
    split = make_split(layout, clustered(seed=k1 + k2))
    results, context = retrieve(split, metric, top_k=6)
    reranked = KReciprocalReranker(k1, k2, lambda_value, graph_k=100).process(results, context)
    assert_rows_equal(reranked, naive_k_reciprocal(results, split, metric, k1, k2, lambda_value), width=6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ties_and_duplicates_as_the_dense_algorithm(layout: Layout) -> None:
    """Integer points: exact distances, ties broken by the smaller index, duplicates of one point."""
    split = make_split(layout, integer_points(seed=2))
    results, context = retrieve(split, "l2", top_k=8)
    reranked = KReciprocalReranker(k1=5, k2=3, graph_k=100).process(results, context)
    assert_rows_equal(reranked, naive_k_reciprocal(results, split, "l2", 5, 3, 0.3), width=8)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_small_graph_equals_the_dense_one_on_its_candidates_and_stays_close(layout: Layout, metric: str) -> None:
    split = make_split(layout, clustered(seed=11, n_labels=12, per_label=6, dim=8, noise=0.7))
    results, context = retrieve(split, metric, top_k=5)
    smallest = KReciprocalReranker(k1=6, k2=3).process(results, context)  # K = max(k1, k2 - 1, width) = 6
    assert_rows_equal(smallest, naive_k_reciprocal(results, split, metric, 6, 3, 0.3, graph_k=6), width=5)
    full = KReciprocalReranker(k1=6, k2=3, graph_k=100).process(results, context)
    assert_rows_equal(full, naive_k_reciprocal(results, split, metric, 6, 3, 0.3), width=5)
    assert (smallest.retrieved_ids[:, 0] == full.retrieved_ids[:, 0]).float().mean() >= 0.9
    wider = KReciprocalReranker(k1=6, k2=3, graph_k=18).process(results, context)
    pairs = zip(wider.retrieved_ids.tolist(), full.retrieved_ids.tolist(), strict=True)
    shared = sum(len(set(a) & set(b)) for a, b in pairs)
    assert shared >= 0.9 * full.retrieved_ids.numel()


def test_lambda_one_keeps_the_original_ranking() -> None:
    split = make_split("overlap", clustered(seed=12))
    results, context = retrieve(split, "l2", top_k=5)
    reranked = KReciprocalReranker(k1=5, lambda_value=1.0).process(results, context)
    assert torch.equal(reranked.retrieved_ids, results.retrieved_ids)


def test_reranking_lifts_cmc_and_precision_on_noisy_clusters() -> None:
    points = torch.nn.functional.normalize(clustered(seed=13, n_labels=60, per_label=8, dim=16, noise=0.8), dim=1)
    split = QueryGallerySplit.from_items(points, torch.arange(len(points)) // 8)
    results, context = retrieve(split, "l2", top_k=7)
    before, after = results.is_relevant.float(), KReciprocalReranker().process(results, context).is_relevant.float()
    assert after[:, 0].mean() > before[:, 0].mean() + 0.02  # CMC@1: 0.80 -> 0.83
    assert after.mean() > before.mean() + 0.05  # precision@7: 0.58 -> 0.68


def test_k_and_k1_beyond_the_gallery_are_clipped() -> None:
    split = make_split("sets", clustered(seed=14, n_labels=2, per_label=3))  # 2 queries, 4 gallery items
    results, context = retrieve(split, "cosine", top_k=2)
    reranked = KReciprocalReranker(k1=50, k2=50, k=50).process(results, context)
    assert reranked.top_k == 4
    assert_rows_equal(reranked, naive_k_reciprocal(results, split, "cosine", 50, 50, 0.3), width=4)


def test_results_of_another_split_are_an_error_naming_the_fix() -> None:
    assert_other_splits_are_named(KReciprocalReranker())


class HoleyBackend:
    """A backend that, like an approximate index, finds fewer neighbours than asked."""

    metric = "l2"

    def search(self, queries: torch.Tensor, gallery: torch.Tensor, k: int, exclude: object = None) -> tuple:
        distances = torch.full((len(queries), k), torch.inf)
        return distances, torch.full((len(queries), k), -1)


def test_an_incomplete_graph_is_an_error_naming_the_backend() -> None:
    split = make_split("leave_one_out", clustered(seed=16))
    results, _ = retrieve(split, "l2")
    with pytest.raises(PostprocessorError, match=r"HoleyBackend.*fewer than graph_k=20 neighbours.*exact backend"):
        KReciprocalReranker().process(results, RetrievalContext(split, backend=HoleyBackend()))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"k1": 0}, "k1 must be a positive integer"),
        ({"k2": None}, "k2 must be a positive integer"),
        ({"lambda_value": 1.5}, r"lambda_value must be a number in \[0.0, 1.0\]"),
        ({"graph_k": -3}, "graph_k must be a positive integer or None"),
    ],
)
def test_bad_arguments_name_the_argument(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KReciprocalReranker(**arguments)


def test_registered_name_builds_the_class() -> None:
    step = build_postprocessor({"name": "k_reciprocal", "args": {"k1": 10, "k2": 3}})
    assert isinstance(step, KReciprocalReranker) and (step.k1, step.k2) == (10, 3)
