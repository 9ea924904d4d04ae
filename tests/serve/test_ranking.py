"""The explorer's cells against the validation grids' own rows (retrieval_rows over RetrievalResults.from_split)."""

from __future__ import annotations

import pytest
import torch

from omlcore.retrieval import QueryGallerySplit, RetrievalResults
from omlcore.serve.ranking import Gallery, Query, rank
from omlcore.visualization import retrieval_rows


@pytest.mark.parametrize("sequences", [False, True])
def test_cells_match_the_grids(sequences: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(60, 8, generator=generator)
    labels = torch.randint(0, 5, (60,), generator=generator)
    sequence = torch.randint(-1, 6, (60,), generator=generator) if sequences else None
    rows = torch.arange(100, 160)  # index rows differ from gallery positions
    gallery = Gallery(embeddings, rows, labels, sequence)
    for position in (0, 17, 59):
        query = Query(
            embeddings[position],
            int(rows[position]),
            int(labels[position]),
            None if sequence is None else int(sequence[position]),
        )
        stop = 12
        exclude = torch.tensor([gallery.position(query.row)])
        neighbours = gallery.scan.search(query.embedding[None], gallery.depth(query, stop), exclude)
        ranking = rank(gallery, query, neighbours, start=4, stop=stop, n_missed=6)
        split = QueryGallerySplit(
            query.embedding[None],
            embeddings,
            labels[position : position + 1],
            labels,
            None if sequence is None else sequence[position : position + 1],
            sequence,
            rows[position : position + 1],
            rows,
            torch.tensor([True]),
        )
        results = RetrievalResults.from_split(split, top_k=stop)
        expected = retrieval_rows(results, [0], top_k=stop, n_missed=6)[0][1:]
        ranked = [cell for cell in expected if cell.kind != "missed"][4:]
        assert [(c.kind, c.row, c.rank, c.label) for c in ranking.cells] == [
            (c.kind, c.item, c.rank, c.label) for c in ranked
        ]
        assert [c.distance for c in ranking.cells] == pytest.approx([c.distance for c in ranked], abs=1e-5)
        assert [c.row for c in ranking.missed] == [c.item for c in expected if c.kind == "missed"]
        assert ranking.n_relevant == int(results.n_relevant[0])
