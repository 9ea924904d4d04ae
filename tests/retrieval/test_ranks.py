"""first_relevant_ranks against a brute-force full ranking: ties, exclusions of items and sequences, many blocks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from omlcore.retrieval import QueryGallerySplit, RetrievalInputError, first_relevant_ranks
from omlcore.retrieval.scores import iter_score_blocks


def brute_force_ranks(split: QueryGallerySplit, metric: str) -> Tensor:
    """Rank every gallery item of every query by the engine's own float32 scores, ties by gallery position."""
    assert split.query_labels is not None and split.gallery_labels is not None
    full = torch.empty(len(split.queries), len(split.gallery))
    for block in iter_score_blocks(split.queries, split.gallery, metric, chunk_size=100_000):  # type: ignore[arg-type]
        full[block.rows, block.cols] = block.scores
    ranks = []
    for q in range(len(split.queries)):
        excluded = torch.zeros(len(split.gallery), dtype=torch.bool)
        for query_keys, gallery_keys in split.exclude:
            excluded |= (gallery_keys == query_keys[q]) & (query_keys[q] >= 0)
        order = sorted((float(full[q, g]), g) for g in range(len(split.gallery)) if not excluded[g])
        relevant = [g for _, g in order if split.gallery_labels[g] == split.query_labels[q]]
        ranks.append(1 + [g for _, g in order].index(relevant[0]) if relevant else 0)
    return torch.tensor(ranks)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_ranks_equal_brute_force_with_ties_and_exclusions(metric: str, chunk: int) -> None:
    generator = torch.Generator().manual_seed(0)
    n = 150
    embeddings = torch.randint(-1, 2, (n, 3), generator=generator).float()  # few distinct points: ties everywhere
    embeddings[:5] = 0.0  # zero rows: cosine's "no direction"
    labels = torch.randint(0, 12, (n,), generator=generator)
    labels[:3] = torch.tensor([100, 101, 102])  # labels of their own: no relevant item
    sequences = torch.randint(-1, 30, (n,), generator=generator)
    is_query, is_gallery = torch.rand(n, generator=generator) < 0.6, torch.rand(n, generator=generator) < 0.7
    split = QueryGallerySplit.from_items(embeddings, labels, is_query, is_gallery, sequences)
    expected = brute_force_ranks(split, metric)
    assert bool((expected == 0).any()) and int(expected.max()) > 10  # lone queries and deep first hits
    got = first_relevant_ranks(split, metric=metric, chunk_size=chunk)  # type: ignore[arg-type]
    assert torch.equal(got, expected)
    some = torch.tensor([3, 0, 17])
    assert torch.equal(first_relevant_ranks(split, some, metric, chunk), expected[some])  # type: ignore[arg-type]


def test_separate_sets_and_errors() -> None:
    generator = torch.Generator().manual_seed(1)
    queries, gallery = torch.randn(40, 5, generator=generator), torch.randn(90, 5, generator=generator)
    labels = torch.randint(0, 9, (130,), generator=generator)
    split = QueryGallerySplit.from_sets(queries, gallery, labels[:40], labels[40:])
    assert torch.equal(first_relevant_ranks(split, chunk_size=16), brute_force_ranks(split, "l2"))
    assert first_relevant_ranks(split, torch.zeros(0, dtype=torch.long)).tolist() == []
    with pytest.raises(RetrievalInputError, match="need labels"):
        first_relevant_ranks(QueryGallerySplit.from_sets(queries, gallery))
