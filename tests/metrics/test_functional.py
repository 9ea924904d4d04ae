"""Functional metrics against OML's documented examples and against naive per-query loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from omlcore.metrics import (
    cmc_at_k,
    flatten_metrics,
    map_at_k,
    map_at_r,
    mean_reciprocal_rank,
    pcf,
    precision_at_1,
    precision_at_k,
    r_precision,
    reduce_mean,
    worst_queries,
)


def padded(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    """OML's ragged ``gt_tops`` as a padded (Q, K) bool matrix plus row lengths."""
    width = max((len(r) for r in rows), default=0)
    matrix = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        matrix[i, : len(row)] = torch.tensor(row, dtype=torch.bool)
    return matrix, torch.tensor([len(r) for r in rows])


def test_oml_docstring_examples() -> None:
    """The examples of OML 4.0's calc_cmc, calc_precision and calc_map docstrings, edge cases included."""
    relevant, lengths = padded([[1, 0], [0, 1, 1], [0, 0], []])
    n = torch.tensor([2, 2, 1, 0])
    assert cmc_at_k(relevant, lengths, n, 1).tolist() == [1, 0, 0, 1]
    assert cmc_at_k(relevant, lengths, n, 2).tolist() == [1, 1, 0, 1]
    n = torch.tensor([2, 3, 5, 2])
    assert precision_at_k(relevant, lengths, n, 1).tolist() == [1, 0, 0, 0]
    assert precision_at_k(relevant, lengths, n, 2).tolist() == [0.5, 0.5, 0, 0]
    relevant, lengths = padded([[1, 0], [0, 1], [0, 0, 0, 0], []])
    n = torch.tensor([1, 1, 2, 0])
    assert map_at_k(relevant, lengths, n, 1).tolist() == [1, 0, 0, 1]
    assert map_at_k(relevant, lengths, n, 2).tolist() == [1, 0.5, 0, 1]


def test_oml_edge_case_no_relevant_but_retrieved() -> None:
    relevant, lengths = padded([[0, 0, 0]])
    n = torch.tensor([0])
    assert cmc_at_k(relevant, lengths, n, 2).tolist() == [0]
    assert map_at_k(relevant, lengths, n, 2).tolist() == [0]
    assert math.isnan(precision_at_k(relevant, lengths, n, 2).item())  # OML: 0 / min(0, k) = NaN


def oml_loops(row: list[bool], n: int, k: int) -> tuple[float, float, float]:
    """cmc@k, precision@k, map@k of one query, transcribed from OML 4.0's per-query functions."""
    if not row:
        value = 1.0 if n == 0 else 0.0
        return value, value, value
    cut = min(k, len(row))
    hits = [sum(row[: i + 1]) for i in range(len(row))]
    cmc = float(any(row[:k]))
    precision = hits[cut - 1] / min(n, cut) if min(n, cut) else math.nan
    total = hits[cut - 1]
    average = sum(hits[i] / (i + 1) * row[i] for i in range(cut)) / total if total else 0.0
    return cmc, precision, average


def pml_loops(row: list[bool], n: int) -> tuple[float, float, float, float]:
    """precision@1, R-precision, MAP@R and reciprocal rank of one query, from PML's definitions."""
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    hits = [sum(row[: i + 1]) for i in range(len(row))]
    r_prec = sum(row[:n]) / n
    map_r = sum(hits[i] / (i + 1) * row[i] for i in range(n)) / n
    rank = next((i + 1 for i, rel in enumerate(row) if rel), None)
    return float(row[0]), r_prec, map_r, 1.0 / rank if rank else 0.0


@pytest.mark.parametrize("seed", range(4))
def test_against_naive_loops(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n_queries, width = 60, 12
    n_relevant = torch.randint(0, 8, (n_queries,), generator=generator)
    lengths = torch.randint(0, width + 1, (n_queries,), generator=generator)
    lengths[:3] = torch.tensor([0, width, width])
    n_relevant[:2] = 0
    relevant = torch.zeros(n_queries, width, dtype=torch.bool)
    for q in range(n_queries):  # at most n_relevant hits, placed at random within the row
        length, n = int(lengths[q]), int(n_relevant[q])
        hits = torch.randperm(length, generator=generator)[: min(n, length)]
        relevant[q, hits] = torch.rand(len(hits), generator=generator) < 0.7
    rows = [relevant[q, : int(lengths[q])].tolist() for q in range(n_queries)]
    for k in (1, 3, 5, 20):
        expected = [oml_loops(rows[q], int(n_relevant[q]), k) for q in range(n_queries)]
        for column, function in enumerate((cmc_at_k, precision_at_k, map_at_k)):
            got = function(relevant, lengths, n_relevant, k).tolist()
            want = [e[column] for e in expected]
            assert got == pytest.approx(want, nan_ok=True), function.__name__
    full = lengths >= n_relevant  # R-metrics need the top-R
    relevant, n_relevant = relevant[full], n_relevant[full]
    rows = [row for row, keep in zip(rows, full.tolist(), strict=True) if keep]
    expected_pml = [pml_loops(rows[q] + [False] * width, int(n_relevant[q])) for q in range(len(rows))]
    functions = (
        lambda: precision_at_1(relevant, n_relevant),
        lambda: r_precision(relevant, n_relevant),
        lambda: map_at_r(relevant, n_relevant),
        lambda: mean_reciprocal_rank(relevant, n_relevant),
    )
    for column, function in enumerate(functions):
        assert function().tolist() == pytest.approx([e[column] for e in expected_pml], nan_ok=True)


def test_mrr_cutoff_and_r_metrics_need_the_top_r() -> None:
    relevant = torch.tensor([[False, False, True], [True, False, False]])
    n_relevant = torch.tensor([1, 1])
    assert mean_reciprocal_rank(relevant, n_relevant).tolist() == pytest.approx([1 / 3, 1.0])
    assert mean_reciprocal_rank(relevant, n_relevant, k=2).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="retrieve with cover_relevant=True"):
        r_precision(relevant, torch.tensor([4, 1]))


def test_pcf_matches_oml_example_and_svd() -> None:
    assert pcf(torch.eye(4, 10), (0.5,)).tolist() == [0.2]  # OML's docstring example
    torch.manual_seed(0)
    embeddings = torch.randn(200, 16) @ torch.randn(16, 16)
    centered = embeddings.double() - embeddings.double().mean(0)
    singular = torch.linalg.svdvals(centered)
    ratio = torch.cumsum(singular**2 / (singular**2).sum(), 0)
    for level in (0.1, 0.5, 0.9, 0.99):
        expected = (int((ratio <= level).sum()) + 1) / 16
        assert pcf(embeddings, (level,)).item() == pytest.approx(expected)
    assert math.isnan(pcf(torch.randn(1, 4), (0.5,)).item())
    with pytest.raises(ValueError, match=r"numbers in \[0, 1\]"):
        pcf(embeddings, (1.5,))


def test_reduce_worst_and_flatten() -> None:
    values = torch.tensor([0.5, float("nan"), 0.0, 1.0, 0.0])
    assert math.isnan(reduce_mean(values))
    assert reduce_mean(values, skip_nan=True) == pytest.approx(0.375)
    assert math.isnan(reduce_mean(torch.tensor([float("nan")]), skip_nan=True))
    assert worst_queries(values, 3) == [2, 4, 0]  # NaN skipped, ties by position
    nested = {"OVERALL": {"cmc": {1: 0.5, 5: 0.9}, "r_precision": 0.3}, "cat": {"map": {5: 0.1}}}
    assert flatten_metrics(nested) == {
        "OVERALL/cmc/1": 0.5,
        "OVERALL/cmc/5": 0.9,
        "OVERALL/r_precision": 0.3,
        "cat/map/5": 0.1,
    }


def test_bad_k() -> None:
    relevant, lengths = padded([[1]])
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        cmc_at_k(relevant, lengths, torch.tensor([1]), 0)
