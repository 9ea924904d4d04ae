"""RetrievalResults: relevant counts from histograms, ragged rows, OML's list layout, save / load, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from omlcore.labels import InvalidLabelsError
from omlcore.retrieval import QueryGallerySplit, RetrievalInputError, RetrievalResults, relevant_counts


def naive_relevant(
    labels: Tensor, is_query: Tensor, is_gallery: Tensor, sequences: Tensor | None
) -> tuple[list[list[int]], list[int]]:
    """Per query, the gallery positions with its label that are neither itself nor in its sequence (loops)."""
    gallery_items = is_gallery.nonzero().flatten().tolist()
    relevant = []
    for q in is_query.nonzero().flatten().tolist():
        row = []
        for position, g in enumerate(gallery_items):
            same_sequence = sequences is not None and sequences[q] >= 0 and sequences[q] == sequences[g]
            if labels[q] == labels[g] and q != g and not same_sequence:
                row.append(position)
        relevant.append(row)
    return relevant, [len(row) for row in relevant]


def random_items(seed: int, n: int = 120) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    is_query = torch.rand(n, generator=generator) < 0.6
    is_gallery = torch.rand(n, generator=generator) < 0.7
    is_query[:2] = is_gallery[:2] = True
    return {
        "embeddings": torch.randn(n, 8, generator=generator),
        "labels": torch.randint(0, 25, (n,), generator=generator),
        "is_query": is_query,
        "is_gallery": is_gallery,
        "sequences": torch.randint(-1, 40, (n,), generator=generator),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_sequences", [True, False])
def test_relevant_counts_and_ids_match_loops(seed: int, with_sequences: bool) -> None:
    items = random_items(seed)
    sequences = items["sequences"] if with_sequences else None
    results = RetrievalResults.from_embeddings(
        items["embeddings"], items["labels"], items["is_query"], items["is_gallery"], sequences, top_k=4
    )
    expected_ids, expected_counts = naive_relevant(items["labels"], items["is_query"], items["is_gallery"], sequences)
    assert results.n_relevant.tolist() == expected_counts
    assert [ids.tolist() for ids in results.relevant_ids()] == expected_ids
    assert results.n_queries_without_relevant == sum(c == 0 for c in expected_counts)


def test_relevant_counts_of_separate_sets() -> None:
    counts = relevant_counts(
        torch.tensor([1, 1, 2, 3]),
        torch.tensor([1, 1, 1, 2, 2]),
        torch.tensor([5, -1, 6, 5]),
        torch.tensor([5, 5, -1, 6, 6]),
    )
    # query 0 (label 1, seq 5): three label-1 items, two of them in sequence 5; query 2: both label-2 items in seq 6
    assert counts.tolist() == [1, 3, 0, 0]


@pytest.mark.parametrize("seed", [3, 4])
def test_retrieval_matches_brute_force(seed: int) -> None:
    items = random_items(seed)
    results = RetrievalResults.from_embeddings(
        items["embeddings"], items["labels"], items["is_query"], items["is_gallery"], items["sequences"], top_k=6
    )
    query_rows, gallery_rows = items["is_query"].nonzero().flatten(), items["is_gallery"].nonzero().flatten()
    distances = torch.cdist(items["embeddings"][query_rows].double(), items["embeddings"][gallery_rows].double())
    sequences = items["sequences"]
    excluded = (query_rows[:, None] == gallery_rows[None, :]) | (
        (sequences[query_rows][:, None] == sequences[gallery_rows][None, :]) & (sequences[query_rows][:, None] >= 0)
    )
    distances[excluded] = float("inf")
    for q in range(len(query_rows)):
        valid = int((~excluded[q]).sum())
        expected = torch.sort(distances[q], stable=True).indices[: min(6, valid)]
        got_distances, got_ids = results.retrieved(q)
        assert got_ids.tolist() == expected.tolist()
        assert torch.allclose(got_distances.double(), distances[q, expected], atol=1e-5)
    assert torch.equal(results.query_ids, query_rows) and torch.equal(results.gallery_ids, gallery_rows)
    expected_relevant = items["labels"][gallery_rows][results.retrieved_ids.clamp_min(0)] == items["labels"][
        query_rows
    ].unsqueeze(1)
    assert torch.equal(results.is_relevant, expected_relevant & (results.retrieved_ids >= 0))


def test_ragged_rows_and_oml_lists() -> None:
    embeddings = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    labels = torch.tensor([0, 0, 1, 1])
    sequences = torch.tensor([3, 3, 3, -1])
    results = RetrievalResults.from_embeddings(embeddings, labels, sequences=sequences, top_k=10)
    assert results.top_k == 3 and results.n_retrieved.tolist() == [1, 1, 1, 3]
    distances, retrieved, gt = results.to_lists()
    assert [r.tolist() for r in retrieved] == [[3], [3], [3], [2, 1, 0]]
    assert [d.tolist() for d in distances][3] == pytest.approx([8.0, 9.0, 10.0], abs=1e-4)
    assert gt is not None and [g.tolist() for g in gt] == [[], [], [3], [2]]
    assert results.n_relevant.tolist() == [0, 0, 1, 1]


def test_cover_relevant_retrieves_the_largest_r() -> None:
    labels = torch.tensor([0] * 9 + [1, 2])
    results = RetrievalResults.from_embeddings(torch.randn(11, 4), labels, top_k=2, cover_relevant=True)
    assert results.top_k == 8  # label 0 has 9 items: 8 relevant for each of them


def test_separate_query_and_gallery_sets() -> None:
    torch.manual_seed(5)
    queries, gallery = torch.randn(10, 4), torch.randn(30, 4)
    results = RetrievalResults.from_embeddings_qg(
        queries, gallery, torch.arange(10) % 3, torch.arange(30) % 3, top_k=5, metric="cosine"
    )
    assert results.query_ids is None and results.metric == "cosine"
    assert results.n_relevant.tolist() == [10] * 10
    cosine = 1 - torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    assert torch.equal(results.retrieved_ids, torch.sort(cosine, dim=1, stable=True).indices[:, :5])


def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    items = random_items(6)
    results = RetrievalResults.from_embeddings(
        items["embeddings"], items["labels"], items["is_query"], items["is_gallery"], items["sequences"], top_k=3
    )
    results.save(tmp_path / "results.pt")
    loaded = RetrievalResults.load(tmp_path / "results.pt")
    for name in ("distances", "retrieved_ids", "n_relevant", "query_labels", "gallery_sequences", "query_ids"):
        assert torch.equal(getattr(loaded, name), getattr(results, name))
    assert (loaded.n_gallery, loaded.metric) == (results.n_gallery, results.metric)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(RetrievalInputError, match=r"is not a file written by RetrievalResults\.save"):
        RetrievalResults.load(tmp_path / "other.pt")


def test_without_labels_there_is_no_relevance() -> None:
    results = RetrievalResults.from_embeddings(torch.randn(5, 3), top_k=2)
    assert results.n_relevant.tolist() == [-1] * 5
    with pytest.raises(RetrievalInputError, match="no labels"):
        results.is_relevant  # noqa: B018


def test_bad_input_errors() -> None:
    embeddings = torch.randn(6, 3)
    labels = torch.arange(6)
    with pytest.raises(
        InvalidLabelsError, match=r"labels must be class ids.*float32 values \[2\.5\] at positions \[2\]"
    ):
        RetrievalResults.from_embeddings(embeddings, labels.float().index_fill(0, torch.tensor([2]), 2.5))
    with pytest.raises(TypeError, match=r"labels must hold integer class ids, got dtype torch\.bool"):
        RetrievalResults.from_embeddings(embeddings, labels > 2)
    with pytest.raises(RetrievalInputError, match=r"labels must be 1-D with one entry per row of the embeddings \(6\)"):
        RetrievalResults.from_embeddings(embeddings, labels[:4])
    with pytest.raises(RetrievalInputError, match=r"the query set is empty \(is_query selects no item\)"):
        RetrievalResults.from_embeddings(embeddings, labels, is_query=torch.zeros(6, dtype=torch.bool))
    with pytest.raises(RetrievalInputError, match=r"the gallery is empty \(is_gallery selects no item\)"):
        RetrievalResults.from_embeddings(embeddings, labels, is_gallery=[0] * 6)
    with pytest.raises(TypeError, match=r"is_query must be booleans \(or 0/1 integers\)"):
        RetrievalResults.from_embeddings(embeddings, labels, is_query=torch.arange(6))
    with pytest.raises(RetrievalInputError, match="give both query_labels and gallery_labels"):
        RetrievalResults.from_embeddings_qg(embeddings, embeddings, query_labels=labels)
    with pytest.raises(RetrievalInputError, match="the gallery is empty"):
        QueryGallerySplit.from_sets(embeddings, torch.zeros(0, 3))
    embeddings[4, 2] = float("nan")
    with pytest.raises(RetrievalInputError, match=r"embeddings contain NaN or Inf in 1 of 6 rows: items with index 14"):
        RetrievalResults.from_embeddings(embeddings, labels, ids=torch.arange(10, 16))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        RetrievalResults.from_embeddings(torch.randn(3, 2), top_k=0)
