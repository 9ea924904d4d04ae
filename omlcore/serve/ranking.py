"""One query's ranking in a gallery: the exact top of the scan, post-processed on request, as framed cells.

The cells are the HTML grids' (:func:`~omlcore.visualization.retrieval_rows`): ``correct`` / ``wrong`` where labels
are known (``retrieved`` where not) and ``missed`` relevant items beyond the page, each with its rank, distance and
label, plus the rank it had before the postprocessor re-ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from omlcore.postprocessing import RetrievalContext, check_postprocessed
from omlcore.protocols import Postprocessor
from omlcore.retrieval import QueryGallerySplit, RetrievalResults
from omlcore.retrieval.scores import DistanceMetric
from omlcore.serve.scan import GalleryScan
from omlcore.visualization import CellKind

__all__ = ["Gallery", "Query", "RankedCell", "Ranking", "rank"]


class Gallery:
    """The gallery rows a ranking searches: their embeddings, the index row of each, labels / sequences if known.

    Args:
        embeddings: float32 ``(G, D)``.
        rows: int64 ``(G,)``: the index row (position in the index's items) of each gallery row.
        labels, sequences: int64 ``(G,)`` or None (sequence ``-1``: none).
        metric: the index's distance.
    """

    def __init__(
        self,
        embeddings: Tensor,
        rows: Tensor,
        labels: Tensor | None = None,
        sequences: Tensor | None = None,
        metric: DistanceMetric = "l2",
    ) -> None:
        self.embeddings, self.rows, self.labels, self.sequences, self.metric = (
            embeddings,
            rows,
            labels,
            sequences,
            metric,
        )
        self.scan = GalleryScan(embeddings, metric)
        self._position = {row: position for position, row in enumerate(rows.tolist())}
        self._labels: np.ndarray | None = None
        self._by_label: np.ndarray | None = None  # gallery positions sorted by label (stable)
        self._sorted_labels: np.ndarray | None = None
        if labels is not None:
            self._labels = labels.numpy()
            self._by_label = np.argsort(self._labels, kind="stable")
            self._sorted_labels = self._labels[self._by_label]

    def __len__(self) -> int:
        return len(self.rows)

    def position(self, row: int | None) -> int:
        """The gallery position of index row ``row``; ``-1`` when it is not in the gallery (or None)."""
        return -1 if row is None else self._position.get(row, -1)

    def excluded(self, query: Query) -> np.ndarray:
        """Gallery positions the query never retrieves: itself and the items of its sequence."""
        own = self.position(query.row)
        excluded = {own} if own >= 0 else set()
        if self.sequences is not None and query.sequence is not None and query.sequence >= 0:
            excluded |= set(torch.nonzero(self.sequences == query.sequence).flatten().tolist())
        return np.array(sorted(excluded), dtype=np.int64)

    def label(self, position: int) -> int | None:
        """The label of gallery position ``position`` (None without labels)."""
        return None if self._labels is None else int(self._labels[position])

    def relevant(self, query: Query, excluded: np.ndarray) -> np.ndarray | None:
        """The gallery positions relevant to ``query`` (its label, not ``excluded``), ascending; None when either
        side has no labels."""
        if query.label is None or self._sorted_labels is None or self._by_label is None:
            return None
        first = np.searchsorted(self._sorted_labels, query.label, side="left")
        last = np.searchsorted(self._sorted_labels, query.label, side="right")
        same = np.sort(self._by_label[first:last])
        return same[~np.isin(same, excluded)]

    def depth(self, query: Query, stop: int) -> int:
        """How many neighbours to scan so that ``stop`` remain once :meth:`excluded` ones are dropped."""
        return min(len(self), stop + len(self.excluded(query)))


@dataclass(frozen=True)
class Query:
    """A query: its embedding ``(D,)``, and where it is an indexed item, its index row, label and sequence."""

    embedding: Tensor
    row: int | None = None
    label: int | None = None
    sequence: int | None = None


@dataclass(frozen=True)
class RankedCell:
    """One item of a ranking: its frame (``correct``, ``wrong``, ``missed``, ``retrieved``), index row, rank (from 1;
    None for a missed item beyond the ranks searched), distance, label, and its rank before post-processing (None
    when it was not among the ranks searched, or when nothing was post-processed)."""

    kind: CellKind
    row: int
    rank: int | None
    distance: float | None
    label: int | None
    before: int | None = None


@dataclass(frozen=True)
class Ranking:
    """Ranks ``start + 1 .. stop`` of one query (``cells``), the relevant items not ranked up to ``stop``
    (``missed``, closest first, only with labels), how many gallery items the query can retrieve (``total``), how many
    are relevant (``n_relevant``, None without labels) and the postprocessor's name (None: the plain kNN)."""

    cells: list[RankedCell]
    missed: list[RankedCell]
    start: int
    stop: int
    total: int
    n_relevant: int | None
    postprocessor: str | None


def rank(
    gallery: Gallery,
    query: Query,
    neighbours: tuple[Tensor, Tensor],
    *,
    start: int,
    stop: int,
    postprocessor: tuple[str, Postprocessor] | None = None,
    n_missed: int = 8,
) -> Ranking:
    """Ranks ``start + 1 .. stop`` of ``query``, framed as :func:`~omlcore.visualization.retrieval_rows` frames them
    (computed from the gallery's label index here: a request touches the query's label, not the whole gallery).

    Args:
        neighbours: ``(distances, positions)`` ``(1, gallery.depth(query, stop))`` from ``gallery.scan.search``, the
            query's own gallery position excluded.
        postprocessor: ``(name, postprocessor)`` that re-ranks the ``stop`` nearest items, or None.
        n_missed: at most this many missed relevant items.
    """
    distances, positions = neighbours
    excluded = gallery.excluded(query)
    keep = ~torch.from_numpy(np.isin(positions.numpy(), excluded)) & (positions >= 0)
    distances, positions = distances[keep][:stop].unsqueeze(0), positions[keep][:stop].unsqueeze(0)
    relevant = gallery.relevant(query, excluded)
    before: dict[int, int] | None = None
    if postprocessor is not None:
        name, step = postprocessor
        before = {int(gallery.rows[p]): r for r, p in enumerate(positions[0].tolist(), start=1)}
        split = _split(gallery, query)
        n_relevant = torch.tensor([-1 if relevant is None else len(relevant)])
        results = RetrievalResults.of_split(split, distances, positions, n_relevant, gallery.metric)
        results = check_postprocessed(results, step.process(results, RetrievalContext(split, gallery.metric)), name)
        distances, positions = results.retrieved(0)
    else:
        distances, positions = distances[0], positions[0]
    ranked = positions.tolist()
    page = []
    for at, (distance, position) in enumerate(zip(distances.tolist(), ranked, strict=True), start=1):
        if at <= start:
            continue
        label = gallery.label(position)
        kind: CellKind = "retrieved" if relevant is None else "correct" if label == query.label else "wrong"
        row = int(gallery.rows[position])
        page.append(RankedCell(kind, row, at, distance, label, None if before is None else before.get(row)))
    missed = []
    if relevant is not None and n_missed:
        seen = set(ranked)
        for position in relevant.tolist():
            if position not in seen:
                missed.append(RankedCell("missed", int(gallery.rows[position]), None, None, query.label))
                if len(missed) == n_missed:
                    break
    return Ranking(
        page,
        missed,
        start,
        stop,
        len(gallery) - len(excluded),
        None if relevant is None else len(relevant),
        None if postprocessor is None else postprocessor[0],
    )


def _split(gallery: Gallery, query: Query) -> QueryGallerySplit:
    """The one-query split (with the exclusions of :meth:`Gallery.excluded`) that results and postprocessors see."""
    labelled = query.label is not None and gallery.labels is not None
    sequenced = query.sequence is not None and gallery.sequences is not None
    query_labels = torch.tensor([query.label]) if labelled else None
    in_gallery = torch.tensor([gallery.position(query.row) >= 0])
    return QueryGallerySplit(
        query.embedding.unsqueeze(0),
        gallery.embeddings,
        query_labels,
        gallery.labels if labelled else None,
        torch.tensor([query.sequence]) if sequenced else None,
        gallery.sequences if sequenced else None,
        torch.tensor([-1 if query.row is None else query.row]),
        gallery.rows,
        in_gallery,
    )
