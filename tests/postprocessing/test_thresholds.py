"""ConstantThresholding and AdaptiveThresholding against naive per-row loops (OML 4.0's rules, in numpy float32)."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
import torch

from omlcore.postprocessing import PostprocessorChain, RetrievalContext, build_postprocessor
from omlcore.postprocessing.thresholds import AdaptiveThresholding, ConstantThresholding
from omlcore.retrieval import QueryGallerySplit, RetrievalResults

Rows = list[tuple[list[float], list[int]]]


def ragged_results(seed: int, n_queries: int = 30, width: int = 8, n_gallery: int = 40) -> RetrievalResults:
    """Rows of 0..width items (the first row has one), distances on a 0.1 grid (ties), padded with (inf, -1)."""
    rng = np.random.default_rng(seed)
    distances = np.full((n_queries, width), np.inf, dtype=np.float32)
    ids = np.full((n_queries, width), -1, dtype=np.int64)
    for row in range(n_queries):
        n = 1 if row == 0 else int(rng.integers(0, width + 1))
        distances[row, :n] = np.sort(np.round(rng.uniform(0, 2, n), 1))
        ids[row, :n] = rng.permutation(n_gallery)[:n]
    return RetrievalResults(
        distances=torch.from_numpy(distances),
        retrieved_ids=torch.from_numpy(ids),
        n_relevant=torch.from_numpy(rng.integers(0, 5, n_queries)),
        n_gallery=n_gallery,
    )


def rows_of(results: RetrievalResults) -> Rows:
    return [(d.tolist(), i.tolist()) for d, i in zip(*results.to_lists()[:2], strict=True)]


def naive_constant(rows: Rows, th: float) -> Rows:
    limit = np.float32(th)
    kept = [[(d, i) for d, i in zip(ds, ids, strict=True) if np.float32(d) < limit] for ds, ids in rows]
    return [([d for d, _ in row], [i for _, i in row]) for row in kept]


def naive_adaptive(rows: Rows, n_std: float) -> Rows:
    gaps = [float(np.float32(b) - np.float32(a)) for ds, _ in rows for a, b in itertools.pairwise(ds)]
    if not gaps:
        return rows
    limit = np.float32(n_std) * np.float32(statistics.fmean(gaps))
    out = []
    for ds, ids in rows:
        n = len(ds)
        for i in range(len(ds) - 1):
            if np.float32(ds[i + 1]) - np.float32(ds[i]) > limit:
                n = i + 1
                break
        out.append((ds[:n], ids[:n]))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("th", [-math.inf, 0.0, 0.35, 0.5, 1.0, 1.7, math.inf])
def test_constant_threshold_equals_naive_loop(seed: int, th: float) -> None:
    results = ragged_results(seed)
    out = ConstantThresholding(th).process(results, None)
    assert rows_of(out) == naive_constant(rows_of(results), th)
    assert out.top_k == max([0, *out.n_retrieved.tolist()])  # unused columns are gone
    assert torch.equal(out.n_relevant, results.n_relevant) and out.n_gallery == results.n_gallery


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_std", [0.0, 0.5, 1.0, 2.0, 4.0])
def test_adaptive_threshold_equals_naive_loop(seed: int, n_std: float) -> None:
    results = ragged_results(seed)
    out = AdaptiveThresholding(n_std).process(results, None)
    assert rows_of(out) == naive_adaptive(rows_of(results), n_std)
    assert torch.equal(out.n_retrieved > 0, results.n_retrieved > 0)  # never empties a row


def test_thresholds_pad_dropped_items_with_inf_and_minus_one() -> None:
    results = RetrievalResults(
        distances=torch.tensor([[0.1, 0.2, 0.9], [0.3, 1.0, 1.1], [0.8, math.inf, math.inf]]),
        retrieved_ids=torch.tensor([[4, 2, 0], [1, 3, 2], [0, -1, -1]]),
        n_relevant=torch.tensor([1, 2, 0]),
        n_gallery=5,
    )
    out = ConstantThresholding(0.5).process(results, None)
    assert out.retrieved_ids.tolist() == [[4, 2], [1, -1], [-1, -1]]
    assert torch.equal(out.distances, torch.tensor([[0.1, 0.2], [0.3, math.inf], [math.inf, math.inf]]))
    # the mean gap is (0.1 + 0.7 + 0.7 + 0.1) / 4 = 0.4: only the gaps of 0.7 exceed it
    cut = AdaptiveThresholding(1.0).process(results, None)
    assert cut.retrieved_ids.tolist() == [[4, 2], [1, -1], [0, -1]]


def test_adaptive_threshold_leaves_rows_without_gaps_unchanged() -> None:
    results = RetrievalResults(
        distances=torch.tensor([[0.4], [math.inf]]),
        retrieved_ids=torch.tensor([[3], [-1]]),
        n_relevant=torch.tensor([1, 1]),
        n_gallery=4,
    )
    assert AdaptiveThresholding(0.0).process(results, None) is results


def test_thresholds_in_a_chain_built_from_configs() -> None:
    generator = torch.Generator().manual_seed(0)
    split = QueryGallerySplit.from_items(torch.randn(50, 4, generator=generator), torch.arange(50) % 10)
    results = RetrievalResults.from_split(split, top_k=10)
    chain = build_postprocessor(
        [{"name": "constant_threshold", "args": {"th": 1.5}}, {"name": "adaptive_threshold", "args": {"n_std": 2.0}}]
    )
    assert isinstance(chain, PostprocessorChain)
    out = chain.process(results, RetrievalContext(split))
    expected = naive_adaptive(naive_constant(rows_of(results), 1.5), 2.0)
    assert rows_of(out) == expected


@pytest.mark.parametrize("make", [ConstantThresholding, AdaptiveThresholding])
@pytest.mark.parametrize("value", [math.nan, "0.5", None, True])
def test_thresholds_refuse_a_value_that_is_not_a_number(make: type, value: object) -> None:
    with pytest.raises(ValueError, match="must be a real number"):
        make(value)
