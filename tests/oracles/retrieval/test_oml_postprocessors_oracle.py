"""omlcore's thresholds and pairwise re-ranker against OML 4.0's postprocessors, on the same results.

Rows are ragged (OML's lists; omlcore's padding), distances sit on a 0.1 grid (ties, zeros), some rows become
empty. The re-ranker's scores come from one table model used by both libraries: an item's input is its dataset
index, the model looks the pair up. Tied scores only with top_n <= 16, where the CPU's unstable sort (OML) equals
the stable one (omlcore); beyond that the scores are tie-free.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from oml.retrieval.postprocessors.algo import AdaptiveThresholding as OMLAdaptiveThresholding
from oml.retrieval.postprocessors.algo import ConstantThresholding as OMLConstantThresholding
from oml.retrieval.postprocessors.pairwise import PairwiseReranker as OMLPairwiseReranker
from oml.retrieval.retrieval_results import RetrievalResults as OMLRetrievalResults
from torch import Tensor, nn

from omlcore.postprocessing import RetrievalContext
from omlcore.postprocessing.pairwise import PairwiseReranker
from omlcore.postprocessing.thresholds import AdaptiveThresholding, ConstantThresholding
from omlcore.retrieval import QueryGallerySplit, RetrievalResults

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch.autocast(cuda) on a CPU machine, in OML


def ragged_results(seed: int, n_queries: int, width: int, n_gallery: int, min_length: int = 0) -> RetrievalResults:
    rng = np.random.default_rng(seed)
    distances = np.full((n_queries, width), np.inf, dtype=np.float32)
    ids = np.full((n_queries, width), -1, dtype=np.int64)
    for row in range(n_queries):
        n = width if row < 2 else int(rng.integers(min_length, width + 1))
        distances[row, :n] = 0.0 if row == 1 else np.sort(np.round(rng.uniform(0, 2, n), 1))
        ids[row, :n] = rng.permutation(n_gallery)[:n]
    return RetrievalResults(
        distances=torch.from_numpy(distances),
        retrieved_ids=torch.from_numpy(ids),
        n_relevant=torch.zeros(n_queries, dtype=torch.long),
        n_gallery=n_gallery,
    )


def to_oml(results: RetrievalResults) -> OMLRetrievalResults:
    distances, retrieved, _ = results.to_lists()
    return OMLRetrievalResults(distances=distances, retrieved_ids=retrieved)


def assert_same_rows(ours: RetrievalResults, theirs: OMLRetrievalResults) -> None:
    distances, retrieved, _ = ours.to_lists()
    rows = zip(distances, retrieved, theirs.distances, theirs.retrieved_ids, strict=True)
    for row, (d, r, d_oml, r_oml) in enumerate(rows):
        assert torch.equal(r, r_oml.long()), row
        assert torch.equal(d, d_oml.float()), row


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("th", [-1.0, 0.0, 0.3, 0.7, 1.2, 1.95, math.inf])
def test_constant_thresholding_equals_oml(seed: int, th: float) -> None:
    results = ragged_results(seed, 40, 10, 50)
    ours = ConstantThresholding(th).process(results)
    assert_same_rows(ours, OMLConstantThresholding(th).process(to_oml(results)))
    if th <= 0.3:
        assert int((ours.n_retrieved == 0).sum()) > int((results.n_retrieved == 0).sum())  # rows became empty


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_std", [0.0, 0.3, 1.0, 1.5, 2.5, 6.0])
def test_adaptive_thresholding_equals_oml(seed: int, n_std: float) -> None:
    results = ragged_results(seed, 40, 10, 50)
    ours = AdaptiveThresholding(n_std).process(results)
    assert_same_rows(ours, OMLAdaptiveThresholding(n_std).process(to_oml(results)))


def test_adaptive_thresholding_where_oml_divides_by_zero() -> None:
    """OML fails when its first query has fewer than two items; omlcore leaves that row as it is."""
    results = ragged_results(0, 10, 6, 20, min_length=2)
    first_short = RetrievalResults(
        distances=torch.cat([torch.tensor([[0.5] + [math.inf] * 5]), results.distances]),
        retrieved_ids=torch.cat([torch.tensor([[3] + [-1] * 5]), results.retrieved_ids]),
        n_relevant=torch.zeros(11, dtype=torch.long),
        n_gallery=20,
    )
    with pytest.raises(ZeroDivisionError):
        OMLAdaptiveThresholding(1.0).process(to_oml(first_short))
    ours = AdaptiveThresholding(1.0).process(first_short)
    assert ours.retrieved(0)[1].tolist() == [3]
    rest = dataclasses.replace(
        ours, distances=ours.distances[1:], retrieved_ids=ours.retrieved_ids[1:], n_relevant=ours.n_relevant[1:]
    )
    assert_same_rows(rest, OMLAdaptiveThresholding(1.0).process(to_oml(results)))


class TableModel(nn.Module):
    """Pairwise scores looked up in a table: an item's input is its dataset index (OML's and omlcore's contract)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)  # OML finds the device by the first parameter

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.table[x1[:, 0].long(), x2[:, 0].long()]

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.forward(x1, x2)


class Items:
    """n items whose input is their index; OML's query/gallery dataset interface on top."""

    input_tensors_key = "images"

    def __init__(self, n: int, query_ids: Tensor, gallery_ids: Tensor) -> None:
        self.n, self.query_ids, self.gallery_ids = n, query_ids, gallery_ids

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": torch.tensor([float(index)]), "idx": index}

    def get_query_ids(self) -> Tensor:
        return self.query_ids

    def get_gallery_ids(self) -> Tensor:
        return self.gallery_ids


def rerank_case(seed: int, n_items: int = 120, n_queries: int = 50, n_gallery: int = 40, width: int = 25) -> Any:
    rng = np.random.default_rng(seed)
    query_ids = torch.from_numpy(rng.permutation(n_items)[:n_queries])
    gallery_ids = torch.from_numpy(rng.permutation(n_items)[:n_gallery])  # may overlap the queries
    results = ragged_results(seed, n_queries, width, n_gallery)
    split = QueryGallerySplit(
        queries=torch.zeros(n_queries, 2),
        gallery=torch.zeros(n_gallery, 2),
        query_ids=query_ids,
        gallery_ids=gallery_ids,
    )
    return results, Items(n_items, query_ids, gallery_ids), split


def scores_table(seed: int, n_items: int, ties: bool, dtype: torch.dtype) -> Tensor:
    rng = np.random.default_rng(seed + 100)
    values = rng.uniform(-0.5, 3.0, (n_items, n_items))  # below and above the distances (0 .. 2): both branches
    return torch.from_numpy(np.round(values, 1) if ties else values).to(dtype)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("top_n", "ties", "dtype"),
    [
        (2, True, torch.float32),
        (5, True, torch.float32),
        (16, True, torch.float32),
        (5, False, torch.float64),
        (20, False, torch.float32),
        (40, False, torch.float32),
    ],
)
def test_pairwise_reranker_equals_oml_given_the_same_scores(
    seed: int, top_n: int, ties: bool, dtype: torch.dtype
) -> None:
    results, items, split = rerank_case(seed)
    model = TableModel(scores_table(seed, len(items), ties, dtype))
    ours = PairwiseReranker(top_n, model, batch_size=16).process(results, RetrievalContext(split, dataset=items))
    theirs = OMLPairwiseReranker(top_n, model, num_workers=0, batch_size=16).process(to_oml(results), items)
    assert_same_rows(ours, theirs)
    changed = ~torch.eq(ours.retrieved_ids, results.retrieved_ids).all(dim=1)
    assert int(changed.sum()) > 10  # the model really re-ranked


def test_pairwise_reranker_equals_oml_on_retrieved_embeddings() -> None:
    """Results from omlcore's kNN over items that are queries, gallery or both (OML's layout)."""
    generator = torch.Generator().manual_seed(7)
    n = 90
    is_query, is_gallery = torch.arange(n) % 3 != 0, torch.arange(n) % 4 != 1
    split = QueryGallerySplit.from_items(
        torch.randn(n, 6, generator=generator), torch.arange(n) % 9, is_query, is_gallery
    )
    results = RetrievalResults.from_split(split, top_k=12)
    assert split.query_ids is not None and split.gallery_ids is not None
    items = Items(n, split.query_ids, split.gallery_ids)
    model = TableModel(torch.rand(n, n, generator=generator) * 4)
    ours = PairwiseReranker(7, model, batch_size=32).process(results, RetrievalContext(split, dataset=items))
    theirs = OMLPairwiseReranker(7, model, num_workers=0, batch_size=32).process(to_oml(results), items)
    assert_same_rows(ours, theirs)
