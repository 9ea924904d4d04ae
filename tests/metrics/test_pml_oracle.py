"""PML 2.9's AccuracyCalculator as the oracle of precision@1, R-precision, MAP@R and MRR (tie-free random data)."""

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
        include=PML_METRICS, k="max_bin_count", knn_func=CustomKNN(DISTANCES[metric]), device=torch.device("cpu")
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
        include=PML_METRICS, k="max_bin_count", knn_func=CustomKNN(DISTANCES[metric]), device=torch.device("cpu")
    )
    expected = calculator.get_accuracy(
        embeddings[queries], labels[queries], embeddings[~queries], labels[~queries], ref_includes_query=False
    )
    got = ours(embeddings, labels, queries, ~queries, metric)
    for name in PML_METRICS:
        assert got[f"OVERALL/{name}"] == pytest.approx(expected[name], abs=1e-6), name
