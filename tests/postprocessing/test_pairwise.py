"""PairwiseReranker against a naive per-query loop (OML's rule in numpy float32), how it calls the model, bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from omlcore.postprocessing import PostprocessorChain, PostprocessorError, RetrievalContext, build_postprocessor
from omlcore.postprocessing.pairwise import PairwiseReranker
from omlcore.postprocessing.thresholds import ConstantThresholding
from omlcore.retrieval import QueryGallerySplit, RetrievalResults

EPS = 1000 * float(np.finfo(np.float32).eps)


class Items:
    """n items ``{"images": a 1 x 4 x 4 image holding the index, "idx": index}``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": torch.full((1, 4, 4), float(index)), "idx": index}


class TableModel(nn.Module):
    """Scores looked up by the items' indices; records how it was called."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.dropout = nn.Dropout(0.5)
        self.calls: list[tuple[int, bool, bool]] = []

    def forward(self, query: Tensor, gallery: Tensor) -> Tensor:
        self.calls.append((len(query), self.dropout.training, torch.is_grad_enabled()))
        return self.dropout(self.table[query[:, 0, 0, 0].long(), gallery[:, 0, 0, 0].long()])


def case(seed: int, n_items: int = 60, n_queries: int = 25, n_gallery: int = 30, width: int = 12) -> Any:
    """Ragged results (ties, a row of zeros, empty rows) of queries and gallery drawn from n_items, and a table."""
    rng = np.random.default_rng(seed)
    distances = np.full((n_queries, width), np.inf, dtype=np.float32)
    ids = np.full((n_queries, width), -1, dtype=np.int64)
    for row in range(n_queries):
        n = width if row < 2 else int(rng.integers(0, width + 1))
        distances[row, :n] = 0.0 if row == 1 else np.sort(np.round(rng.uniform(0, 2, n), 1))
        ids[row, :n] = rng.permutation(n_gallery)[:n]
    results = RetrievalResults(
        distances=torch.from_numpy(distances),
        retrieved_ids=torch.from_numpy(ids),
        n_relevant=torch.ones(n_queries, dtype=torch.long),
        n_gallery=n_gallery,
    )
    split = QueryGallerySplit(
        queries=torch.zeros(n_queries, 2),
        gallery=torch.zeros(n_gallery, 2),
        query_ids=torch.from_numpy(rng.permutation(n_items)[:n_queries]),
        gallery_ids=torch.from_numpy(rng.permutation(n_items)[:n_gallery]),
    )
    table = torch.from_numpy(np.round(rng.uniform(-0.5, 3.0, (n_items, n_items)), 1).astype(np.float32))
    return results, RetrievalContext(split, dataset=Items(n_items)), table


def naive_rerank(results: RetrievalResults, context: RetrievalContext, table: Tensor, top_n: int) -> list[Any]:
    """Per query: sort the first top_n by score (kNN order among ties), rescale below the next distance if needed."""
    split, out = context.split, []
    assert split.query_ids is not None and split.gallery_ids is not None
    for q, (ds, ids) in enumerate(zip(*results.to_lists()[:2], strict=True)):
        ds, ids = ds.tolist(), ids.tolist()
        head = [(np.float32(table[split.query_ids[q], split.gallery_ids[g]]), g) for g in ids[:top_n]]
        head = sorted(head, key=lambda pair: pair[0])
        scores = [score for score, _ in head]
        if len(ds) > top_n and scores[-1] > ds[top_n]:
            scale = np.float32(ds[top_n]) / scores[-1]
            scores = [score * scale - np.float32(EPS) for score in scores]
        out.append(([float(s) for s in scores] + ds[top_n:], [g for _, g in head] + ids[top_n:]))
    return out


def rows_of(results: RetrievalResults) -> list[Any]:
    return [(d.tolist(), i.tolist()) for d, i in zip(*results.to_lists()[:2], strict=True)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_n", [2, 3, 7, 12, 30])
def test_reranker_equals_naive_loop(seed: int, top_n: int) -> None:
    results, context, table = case(seed)
    out = PairwiseReranker(top_n, TableModel(table), batch_size=8).process(results, context)
    assert rows_of(out) == naive_rerank(results, context, table, top_n)
    assert torch.equal(out.n_retrieved, results.n_retrieved)  # re-ranking never changes the row lengths


def test_reranker_calls_the_model_in_batches_in_eval_mode_without_grad_and_restores_its_mode() -> None:
    results, context, table = case(0)
    model = TableModel(table).train()
    PairwiseReranker(4, model, batch_size=8).process(results, context)
    n_pairs = int(results.n_retrieved.clamp_max(4).sum())
    sizes = [size for size, _, _ in model.calls]
    assert sum(sizes) == n_pairs and sizes[:-1] == [8] * (len(sizes) - 1)
    assert {(training, grad) for _, training, grad in model.calls} == {(False, False)}
    assert model.training and model.dropout.training


def test_reranker_with_workers_and_a_plain_callable_equals_the_module() -> None:
    results, context, table = case(1)
    module = PairwiseReranker(5, TableModel(table), batch_size=7).process(results, context)

    def score(query: Tensor, gallery: Tensor) -> Tensor:
        return table[query[:, 0, 0, 0].long(), gallery[:, 0, 0, 0].long()]

    plain = PairwiseReranker(5, score, batch_size=64, num_workers=1).process(results, context)
    assert rows_of(plain) == rows_of(module)


def test_reranker_reads_queries_and_gallery_from_separate_datasets_by_position() -> None:
    """A split of separate sets has no item ids: dataset[i] is query i, gallery_dataset[j] gallery item j."""
    generator = torch.Generator().manual_seed(3)
    split = QueryGallerySplit.from_sets(torch.randn(8, 3, generator=generator), torch.randn(10, 3, generator=generator))
    results = RetrievalResults.from_split(split, top_k=6)
    table = torch.rand(10, 10, generator=generator)

    class Offset(Items):  # gallery item j holds j + 100; the model subtracts it again
        def __getitem__(self, index: int) -> dict[str, Any]:
            return {"images": torch.full((1, 4, 4), float(index + 100))}

    def score(query: Tensor, gallery: Tensor) -> Tensor:
        return table[query[:, 0, 0, 0].long(), gallery[:, 0, 0, 0].long() - 100]

    context = RetrievalContext(split, dataset=Items(8), gallery_dataset=Offset(10))
    out = PairwiseReranker(4, score).process(results, context)
    for q in range(8):
        head = out.retrieved(q)[1][:4]
        assert torch.equal(table[q, head], table[q, results.retrieved(q)[1][:4]].sort().values)


def test_reranker_after_a_threshold_in_a_chain_built_from_a_config() -> None:
    results, context, table = case(2)
    chain = build_postprocessor(
        [ConstantThresholding(1.0), {"name": "pairwise_reranker", "args": {"top_n": 3, "model": TableModel(table)}}]
    )
    assert isinstance(chain, PostprocessorChain)
    out = chain.process(results, context)
    cut = ConstantThresholding(1.0).process(results, context)
    assert rows_of(out) == naive_rerank(cut, context, table, 3)


def test_reranker_returns_results_without_items_unchanged() -> None:
    results, context, table = case(0)
    empty = ConstantThresholding(-1.0).process(results, context)
    model = TableModel(table)
    assert PairwiseReranker(3, model).process(empty, context) is empty
    assert model.calls == []


def test_rescaling_keeps_the_block_below_a_large_next_distance() -> None:
    """OML's ``s * d / m - 1000 eps`` can round above ``d`` when ``d`` is large: the block is capped at ``d``."""
    d, m = torch.tensor(29226.857421875), torch.tensor(49692.203125)
    assert m * (d / m) - EPS > d  # float32 rounding: this pair would end above the next distance
    results = RetrievalResults(
        distances=torch.tensor([[1.0, 2.0, float(d)]]),
        retrieved_ids=torch.tensor([[0, 1, 2]]),
        n_relevant=torch.ones(1, dtype=torch.long),
        n_gallery=3,
    )
    split = QueryGallerySplit(queries=torch.zeros(1, 2), gallery=torch.zeros(3, 2), query_ids=torch.tensor([3]))
    table = torch.zeros(4, 3)
    table[3, :2] = torch.tensor([float(m), 3.0])
    out = PairwiseReranker(2, TableModel(table)).process(results, RetrievalContext(split, dataset=Items(4)))
    assert out.retrieved_ids.tolist() == [[1, 0, 2]]
    assert out.distances[0, 1] == out.distances[0, 2] == d


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_n": 1}, "top_n must be an integer >= 2"),
        ({"top_n": 2.5}, "top_n must be an integer >= 2"),
        ({"top_n": 3, "batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"top_n": 3, "num_workers": -1}, "num_workers must be an integer >= 0"),
    ],
)
def test_reranker_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PairwiseReranker(model=TableModel(torch.zeros(2, 2)), **kwargs)


def test_reranker_refuses_a_model_that_is_not_callable() -> None:
    with pytest.raises(TypeError, match=r"model must be an nn\.Module or a callable"):
        PairwiseReranker(3, "siamese")  # type: ignore[arg-type]


def test_top_n_larger_than_the_gallery_is_an_error_naming_the_fix() -> None:
    results, context, table = case(0, n_gallery=30)
    with pytest.raises(PostprocessorError, match=r"top_n=31\) is larger than the gallery \(30 items\); lower top_n"):
        PairwiseReranker(31, TableModel(table)).process(results, context)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_an_error_naming_the_pairs_and_queries(bad: float) -> None:
    results, context, table = case(0)
    split = context.split
    assert split.query_ids is not None and split.gallery_ids is not None
    for q in (3, 1):
        table[split.query_ids[q], split.gallery_ids[results.retrieved_ids[q, 0]]] = bad
    message = r"returned 2 non-finite scores \(NaN or inf\) among \d+ pairs, for 2 queries \(positions \[1, 3\]"
    with pytest.raises(PostprocessorError, match=message + r".*fix the model"):
        PairwiseReranker(4, TableModel(table)).process(results, context)


def test_a_context_without_items_is_an_error() -> None:
    results, context, table = case(0)
    with pytest.raises(PostprocessorError, match=r"needs the items .* RetrievalContext\(dataset=...\)"):
        PairwiseReranker(3, TableModel(table)).process(results, RetrievalContext(context.split))


def test_results_with_an_empty_gallery_are_an_error() -> None:
    results = RetrievalResults(
        distances=torch.zeros(2, 0),
        retrieved_ids=torch.zeros(2, 0, dtype=torch.long),
        n_relevant=torch.zeros(2, dtype=torch.long),
        n_gallery=0,
    )
    split = QueryGallerySplit(queries=torch.zeros(2, 2), gallery=torch.zeros(0, 2))
    with pytest.raises(PostprocessorError, match="empty gallery: there is nothing to re-rank"):
        PairwiseReranker(3, TableModel(torch.zeros(2, 2))).process(results, RetrievalContext(split, dataset=Items(2)))


def test_results_of_another_split_are_an_error() -> None:
    results, _, table = case(0, n_queries=25)
    _, other, _ = case(0, n_queries=24)
    with pytest.raises(PostprocessorError, match=r"results \(25 queries, .*context's split \(24 queries"):
        PairwiseReranker(3, TableModel(table)).process(results, other)


def test_a_model_returning_the_wrong_shape_is_an_error() -> None:
    results, context, table = case(0)
    model = TableModel(table)

    def column(query: Tensor, gallery: Tensor) -> Tensor:
        return model(query, gallery)[:, None]

    with pytest.raises(PostprocessorError, match=r"returned shape \(8, 1\), torch.float32 for a batch of 8 pairs"):
        PairwiseReranker(3, column, batch_size=8).process(results, context)


def test_items_without_the_input_key_are_an_error_naming_the_argument() -> None:
    results, context, table = case(0)
    with pytest.raises(
        PostprocessorError, match=r"has no 'embeddings' \(it has \['idx', 'images'\]\); pass .*input_key"
    ):
        PairwiseReranker(3, TableModel(table), input_key="embeddings").process(results, context)


def test_negative_distances_after_the_block_are_an_error() -> None:
    results = RetrievalResults(
        distances=torch.tensor([[-0.5, -0.2, -0.1]]),
        retrieved_ids=torch.tensor([[0, 1, 2]]),
        n_relevant=torch.ones(1, dtype=torch.long),
        n_gallery=3,
    )
    split = QueryGallerySplit(queries=torch.zeros(1, 2), gallery=torch.zeros(3, 2), query_ids=torch.tensor([3]))
    table = torch.ones(4, 4)
    with pytest.raises(PostprocessorError, match=r"queries \[0\] have negative distances after the top_n"):
        PairwiseReranker(2, TableModel(table)).process(results, RetrievalContext(split, dataset=Items(4)))
