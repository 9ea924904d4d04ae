"""PML 2.9's AccuracyCalculator as the oracle of precision@1, R-precision, MAP@R and MRR (tie-free random data).

PML's ``k=None`` retrieves the full ranking: every metric at its definition, MRR included.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")

from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from omlcore.metrics import PML_METRICS, EmbeddingMetrics

DISTANCES = {"l2": LpDistance(normalize_embeddings=False), "cosine": CosineSimilarity()}


def ours(
    embeddings: torch.Tensor, labels: torch.Tensor, is_query: torch.Tensor, is_gallery: torch.Tensor, metric: str
) -> dict[str, Any]:
    metrics = EmbeddingMetrics(
        cmc_top_k=(1,),
        precision_top_k=(),
        map_top_k=(),
        pcf_variance=(),
        pml_metrics=PML_METRICS,
        metric=metric,  # type: ignore[arg-type]
    )
    metrics.update({"embeddings": embeddings, "labels": labels, "is_query": is_query, "is_gallery": is_gallery})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return metrics.compute()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_matches_pml(metric: str, seed: int) -> None:
    torch.manual_seed(seed)
    n = 400
    embeddings, labels = torch.randn(n, 16), torch.randint(0, 70, (n,))  # some labels once: PML's lone queries
    calculator = AccuracyCalculator(
        include=PML_METRICS, k=None, knn_func=CustomKNN(DISTANCES[metric]), device=torch.device("cpu")
    )
    expected = calculator.get_accuracy(embeddings, labels)
    everything = torch.ones(n, dtype=torch.bool)
    got = ours(embeddings, labels, everything, everything, metric)
    for name in PML_METRICS:
        assert got[f"OVERALL/{name}"] == pytest.approx(expected[name], abs=1e-6), name


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_separate_reference_matches_pml(metric: str) -> None:
    torch.manual_seed(2)
    embeddings, labels = torch.randn(500, 16), torch.randint(0, 60, (500,))
    queries = torch.arange(500) < 180
    calculator = AccuracyCalculator(
        include=PML_METRICS, k=None, knn_func=CustomKNN(DISTANCES[metric]), device=torch.device("cpu")
    )
    expected = calculator.get_accuracy(
        embeddings[queries], labels[queries], embeddings[~queries], labels[~queries], ref_includes_query=False
    )
    got = ours(embeddings, labels, queries, ~queries, metric)
    for name in PML_METRICS:
        assert got[f"OVERALL/{name}"] == pytest.approx(expected[name], abs=1e-6), name


def pml_mrr(embeddings: torch.Tensor, labels: torch.Tensor, k: int | None, queries: torch.Tensor | None) -> float:
    # PML 2.9 computes no kNN for "mean_reciprocal_rank" alone (its requires_knn() omits it): ask for P@1 too
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_reciprocal_rank"),
        k=k,
        knn_func=CustomKNN(DISTANCES["l2"]),
        device=torch.device("cpu"),
    )
    if queries is None:
        return float(calculator.get_accuracy(embeddings, labels)["mean_reciprocal_rank"])
    return float(
        calculator.get_accuracy(
            embeddings[queries], labels[queries], embeddings[~queries], labels[~queries], ref_includes_query=False
        )["mean_reciprocal_rank"]
    )


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_mrr_alone_is_over_the_full_ranking_whatever_the_other_cutoffs(leave_one_out: bool) -> None:
    torch.manual_seed(3)
    n = 300
    embeddings, labels = torch.randn(n, 8), torch.randint(0, 40, (n,))
    queries = None if leave_one_out else torch.arange(n) < 100
    expected = pml_mrr(embeddings, labels, None, queries)
    is_query = torch.ones(n, dtype=torch.bool) if queries is None else queries
    is_gallery = torch.ones(n, dtype=torch.bool) if queries is None else ~queries
    batch = {"embeddings": embeddings, "labels": labels, "is_query": is_query, "is_gallery": is_gallery}
    for cmc in ((1,), (5,), (39,), ()):
        for pml in (("mean_reciprocal_rank",), PML_METRICS):
            metrics = EmbeddingMetrics(
                cmc_top_k=cmc, precision_top_k=(), map_top_k=(), pcf_variance=(), pml_metrics=pml
            )
            metrics.update(batch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                got = metrics.compute()
            assert got["OVERALL/mean_reciprocal_rank"] == pytest.approx(expected, abs=1e-6), (cmc, pml)


@pytest.mark.parametrize("mrr_top_k", [1, 3, 10])
def test_mrr_cutoff_is_pml_at_that_k_and_named_in_the_key(mrr_top_k: int) -> None:
    torch.manual_seed(4)
    n = 300
    embeddings, labels = torch.randn(n, 8), torch.randint(0, 40, (n,))
    expected = pml_mrr(embeddings, labels, mrr_top_k, None)
    everything = torch.ones(n, dtype=torch.bool)
    for cmc in ((1,), (20,)):
        metrics = EmbeddingMetrics(
            cmc_top_k=cmc, pcf_variance=(), pml_metrics=("mean_reciprocal_rank",), mrr_top_k=mrr_top_k
        )
        metrics.update({"embeddings": embeddings, "labels": labels, "is_query": everything, "is_gallery": everything})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = metrics.compute()
        assert "OVERALL/mean_reciprocal_rank" not in got
        assert got[f"OVERALL/mean_reciprocal_rank/{mrr_top_k}"] == pytest.approx(expected, abs=1e-6), cmc
