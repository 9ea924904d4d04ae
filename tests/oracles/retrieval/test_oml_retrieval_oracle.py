"""omlcore's retrieval and EmbeddingMetrics against OML 4.0 (and PML 2.9 with its default faiss kNN).

Random tie-free embeddings; query / gallery overlap, categories, sequences and queries without any relevant
gallery item (lone queries). Every item has a sequence id here: OML factorizes a missing sequence to -1 and
then treats all such items as one sequence, while omlcore's -1 means "no sequence".
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from oml.datasets.dataframe import DFLabeledDataset, DFQueryGalleryLabeledDataset
from oml.interfaces.datasets import IBaseDataset
from oml.metrics.embeddings import EmbeddingMetrics as OMLEmbeddingMetrics
from oml.retrieval.retrieval_results import RetrievalResults as OMLRetrievalResults
from oml.utils.misc import flatten_dict

from omlcore.metrics import PML_METRICS, EmbeddingMetrics
from omlcore.retrieval import RetrievalResults

pytestmark = pytest.mark.filterwarnings("ignore:Note, computing FNMR@FMR:UserWarning")


class Items(IBaseDataset):
    """The smallest OML dataset: n items known by their index (the embeddings come from outside)."""

    def __init__(self, n: int) -> None:
        self.n, self.extra_data, self.index_key, self.input_tensors_key = n, {}, "idx", "x"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: int) -> dict[str, Any]:
        return {"idx": item}


def make_case(seed: int, n: int, leave_one_out: bool, n_sequences: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n // 5, n)
    labels[:4] = [10_000, 10_001, 10_002, 10_003]  # lone queries
    if leave_one_out:
        is_query = is_gallery = np.ones(n, dtype=bool)
    else:
        is_query, is_gallery = rng.random(n) < 0.7, rng.random(n) < 0.8
        is_query[:4] = is_gallery[:4] = True
    return {
        "embeddings": torch.from_numpy(rng.standard_normal((n, 16)).astype(np.float32)),
        "labels": labels,
        "is_query": is_query,
        "is_gallery": is_gallery,
        "categories": np.array(["shoes", "bags", "hats"])[rng.integers(0, 3, n)],
        "sequences": rng.integers(0, n_sequences, n),
    }


def oml_metrics(case: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, float]:
    n = len(case["labels"])
    df = pd.DataFrame(
        {
            "label": case["labels"],
            "is_query": case["is_query"],
            "is_gallery": case["is_gallery"],
            "category": case["categories"],
            "sequence": case["sequences"],
        }
    )
    metrics = OMLEmbeddingMetrics(DFQueryGalleryLabeledDataset(Items(n), df), verbose=False, **kwargs)
    metrics.setup(n)
    metrics.update(case["embeddings"], list(range(n)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {key: float(value) for key, value in flatten_dict(metrics.compute_metrics()).items()}


def our_metrics(case: dict[str, Any], kwargs: dict[str, Any], batch_size: int = 37) -> dict[str, float]:
    metrics = EmbeddingMetrics(**kwargs)
    n = len(case["labels"])
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        metrics.update(
            {
                "embeddings": case["embeddings"][rows],
                "labels": torch.from_numpy(case["labels"][rows]),
                "is_query": torch.from_numpy(case["is_query"][rows]),
                "is_gallery": torch.from_numpy(case["is_gallery"][rows]),
                "idx": torch.arange(n)[rows],
                "categories": list(case["categories"][rows]),
                "sequences": torch.from_numpy(case["sequences"][rows]),
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {key: value for key, value in metrics.compute().items() if "/" in key}


KWARGS = {
    "cmc_top_k": (1, 3, 5, 10),
    "precision_top_k": (1, 5, 10),
    "map_top_k": (1, 5, 10),
    "fmr_vals": (0.01, 0.1, 0.5),
    "pcf_variance": (0.3, 0.5, 0.9),
}


@pytest.mark.parametrize("leave_one_out", [False, True])
@pytest.mark.parametrize(("seed", "n_sequences"), [(0, 10_000), (1, 150), (2, 60)])
def test_embedding_metrics_equal_oml(seed: int, leave_one_out: bool, n_sequences: int) -> None:
    case = make_case(seed, 300, leave_one_out, n_sequences)
    expected = oml_metrics(case, KWARGS)
    got = our_metrics(case, KWARGS)
    assert set(expected) <= set(got)
    assert len(expected) >= 50
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert math.isnan(expected["OVERALL/precision/5"])  # the lone queries: OML's precision is 0 / 0


def test_queries_with_nothing_to_retrieve_equal_oml_and_the_warning_says_so() -> None:
    """The gallery is one sequence: its own queries have nothing to retrieve (an empty row), the others do."""
    rng = np.random.default_rng(6)
    n = 40
    sequences = np.arange(n)
    sequences[:6] = 0
    case = {
        "embeddings": torch.from_numpy(rng.standard_normal((n, 8)).astype(np.float32)),
        "labels": np.array([0, 0, 0, 1, 1, 1, *rng.integers(0, 4, n - 6)]),
        "is_query": np.ones(n, dtype=bool),
        "is_gallery": np.arange(n) < 6,
        "categories": np.array(["shoes", "bags"])[rng.integers(0, 2, n)],
        "sequences": sequences,
    }
    kwargs = {"cmc_top_k": (1, 5), "precision_top_k": (5,), "map_top_k": (5,), "pcf_variance": ()}
    expected = oml_metrics(case, kwargs)
    got = our_metrics(case, kwargs)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    metrics = EmbeddingMetrics(**kwargs)
    metrics.update(
        {
            "embeddings": case["embeddings"],
            "labels": torch.from_numpy(case["labels"]),
            "is_query": torch.from_numpy(case["is_query"]),
            "is_gallery": torch.from_numpy(case["is_gallery"]),
            "sequences": torch.from_numpy(case["sequences"]),
        }
    )
    with pytest.warns(RuntimeWarning, match=r"except 6 with nothing to retrieve: CMC, precision and mAP 1"):
        metrics.compute()
    assert metrics.summary["n_queries_with_empty_gallery"] == 6


def test_retrieval_results_equal_oml() -> None:
    case = make_case(3, 250, False, 80)
    n = len(case["labels"])
    df = pd.DataFrame(
        {
            "label": case["labels"],
            "is_query": case["is_query"],
            "is_gallery": case["is_gallery"],
            "sequence": case["sequences"],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = OMLRetrievalResults.from_embeddings(
            case["embeddings"], DFQueryGalleryLabeledDataset(Items(n), df), n_items=12
        )
    ours = RetrievalResults.from_embeddings(
        case["embeddings"], case["labels"], case["is_query"], case["is_gallery"], case["sequences"], top_k=12
    )
    distances, retrieved, gt = ours.to_lists()
    assert gt is not None and expected.gt_ids is not None
    for q in range(ours.n_queries):
        assert retrieved[q].tolist() == expected.retrieved_ids[q].tolist()
        assert torch.allclose(distances[q], expected.distances[q], atol=1e-5)
        assert gt[q].tolist() == expected.gt_ids[q].tolist()


def test_separate_sets_equal_oml() -> None:
    rng = np.random.default_rng(4)
    n_query, n_gallery = 80, 200
    frames = [pd.DataFrame({"label": rng.integers(0, 40, n)}) for n in (n_query, n_gallery)]
    queries, gallery = torch.randn(n_query, 16), torch.randn(n_gallery, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = OMLRetrievalResults.from_embeddings_qg(
            queries,
            gallery,
            DFLabeledDataset(Items(n_query), frames[0]),
            DFLabeledDataset(Items(n_gallery), frames[1]),
            n_items=9,
        )
    ours = RetrievalResults.from_embeddings_qg(
        queries, gallery, frames[0]["label"].to_numpy(), frames[1]["label"].to_numpy(), top_k=9
    )
    distances, retrieved, gt = ours.to_lists()
    assert gt is not None and expected.gt_ids is not None
    for q in range(n_query):
        assert retrieved[q].tolist() == expected.retrieved_ids[q].tolist()
        assert torch.allclose(distances[q], expected.distances[q], atol=1e-5)
        assert gt[q].tolist() == expected.gt_ids[q].tolist()


def test_pml_metrics_equal_pml_with_its_default_faiss_knn() -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    torch.manual_seed(5)
    embeddings, labels = torch.randn(600, 32), torch.randint(0, 100, (600,))
    calculator = AccuracyCalculator(include=PML_METRICS, device=torch.device("cpu"))  # k=None: the full ranking
    expected = calculator.get_accuracy(embeddings, labels)
    metrics = EmbeddingMetrics(
        cmc_top_k=(1,), precision_top_k=(), map_top_k=(), pcf_variance=(), pml_metrics=PML_METRICS
    )
    everything = torch.ones(600, dtype=torch.bool)
    metrics.update({"embeddings": embeddings, "labels": labels, "is_query": everything, "is_gallery": everything})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = metrics.compute()
    for name in PML_METRICS:
        assert got[f"OVERALL/{name}"] == pytest.approx(expected[name], abs=1e-6), name
