"""Retrieval results: per query the retrieved gallery items, their distances, and how many relevant items exist.

A query's *relevant* gallery items share its label and are not excluded (not the query item itself, not in
its sequence). Their number ``n_relevant`` comes from label histograms of the gallery, so precision, mAP,
MAP@R and R-precision are exact without the query x gallery matrix: with ``n(l)`` gallery items of label
``l`` and ``n(l, s)`` of label ``l`` in sequence ``s``,

    n_relevant(q) = n(label_q) - n(label_q, seq_q)          if q has a sequence (it contains q itself)
    n_relevant(q) = n(label_q) - [q is a gallery item]      otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from omlcore.protocols import KNNBackend
from omlcore.retrieval.knn import DistanceMetric, ExactKNN
from omlcore.retrieval.validation import (
    RetrievalInputError,
    as_bool_mask,
    as_embeddings,
    as_int_keys,
    as_labels,
    check_finite,
    check_same_dim,
)

__all__ = ["QueryGallerySplit", "RetrievalResults", "equal_key_pairs", "relevant_counts"]

_FORMAT = "omlcore.RetrievalResults/1"


def _pair_codes(labels: Tensor, sequences: Tensor) -> Tensor:
    """One int64 code per ``(label, sequence)`` pair: equal pairs share a code."""
    _, label_codes = torch.unique(labels, return_inverse=True)
    _, sequence_codes = torch.unique(sequences, return_inverse=True)
    n_sequences = int(sequence_codes.max()) + 1 if len(sequence_codes) else 1
    return label_codes * n_sequences + sequence_codes


def _count_in(values: Tensor, reference: Tensor) -> Tensor:
    """For every entry of ``values``, how often it occurs in ``reference``."""
    if len(reference) == 0:
        return torch.zeros_like(values)
    unique, counts = torch.unique(reference, return_counts=True)
    position = torch.searchsorted(unique, values).clamp_max(len(unique) - 1)
    return torch.where(unique[position] == values, counts[position], 0)


def relevant_counts(
    query_labels: Tensor,
    gallery_labels: Tensor,
    query_sequences: Tensor | None = None,
    gallery_sequences: Tensor | None = None,
    query_in_gallery: Tensor | None = None,
) -> Tensor:
    """``n_relevant`` of every query (see the module docstring), from label / sequence histograms of the gallery.

    Args:
        query_labels, gallery_labels: int64 ``(Q,)`` / ``(G,)``.
        query_sequences, gallery_sequences: int64 sequence ids, ``-1`` (any negative) for none.
        query_in_gallery: bool ``(Q,)``: the query item itself is in the gallery (and excluded there).
    """
    counts = _count_in(query_labels, gallery_labels)
    self_count = torch.zeros_like(counts) if query_in_gallery is None else query_in_gallery.long()
    if query_sequences is None or gallery_sequences is None:
        return counts - self_count
    codes = _pair_codes(torch.cat([query_labels, gallery_labels]), torch.cat([query_sequences, gallery_sequences]))
    query_codes, gallery_codes = codes[: len(query_labels)], codes[len(query_labels) :]
    same_sequence = _count_in(query_codes, gallery_codes[gallery_sequences >= 0])
    return counts - torch.where(query_sequences >= 0, same_sequence, self_count)


def equal_key_pairs(query_keys: Tensor, gallery_keys: Tensor, non_negative: bool = True) -> tuple[Tensor, Tensor]:
    """All ``(query, gallery)`` position pairs with equal keys (only keys ``>= 0`` with ``non_negative``), sorted by
    query then gallery position; from one sort of the gallery keys, never a ``Q x G`` mask."""
    order = torch.sort(gallery_keys, stable=True).indices
    sorted_keys = gallery_keys[order]
    start = torch.searchsorted(sorted_keys, query_keys, side="left")
    stop = torch.searchsorted(sorted_keys, query_keys, side="right")
    lengths = torch.where(query_keys >= 0, stop - start, 0) if non_negative else stop - start
    owner = torch.repeat_interleave(torch.arange(len(query_keys), device=lengths.device), lengths)
    offsets = torch.arange(len(owner), device=owner.device) - (torch.cumsum(lengths, 0) - lengths)[owner]
    return owner, order[start[owner] + offsets]


@dataclass(frozen=True, eq=False)
class QueryGallerySplit:
    """Validated queries and gallery with their labels, sequences and item ids; ``gallery is queries`` when equal.

    Build it with :meth:`from_items` (one set of items flagged ``is_query`` / ``is_gallery``, OML's layout) or
    :meth:`from_sets` (separate query and gallery sets, no item in both).
    """

    queries: Tensor
    gallery: Tensor
    query_labels: Tensor | None = None
    gallery_labels: Tensor | None = None
    query_sequences: Tensor | None = None
    gallery_sequences: Tensor | None = None
    query_ids: Tensor | None = None
    gallery_ids: Tensor | None = None
    query_in_gallery: Tensor | None = None

    @classmethod
    def from_items(
        cls,
        embeddings: Tensor,
        labels: Any = None,
        is_query: Any = None,
        is_gallery: Any = None,
        sequences: Any = None,
        ids: Tensor | None = None,
    ) -> QueryGallerySplit:
        """See :meth:`RetrievalResults.from_embeddings` for the arguments."""
        embeddings = as_embeddings("embeddings", embeddings)
        n, device = len(embeddings), embeddings.device
        query_mask = torch.ones(n, dtype=torch.bool, device=device) if is_query is None else is_query
        gallery_mask = torch.ones(n, dtype=torch.bool, device=device) if is_gallery is None else is_gallery
        query_mask = as_bool_mask("is_query", query_mask, n, device)
        gallery_mask = as_bool_mask("is_gallery", gallery_mask, n, device)
        label_t = None if labels is None else as_labels("labels", labels, n, device)
        sequence_t = None if sequences is None else as_int_keys("sequences", sequences, n, device)
        item_ids = torch.arange(n, device=device) if ids is None else as_int_keys("ids", ids, n, device)
        check_finite("embeddings", embeddings, None if ids is None else item_ids)
        _check_not_empty(int(query_mask.sum()), int(gallery_mask.sum()), "is_query", "is_gallery")
        queries = embeddings if bool(query_mask.all()) else embeddings[query_mask]
        if torch.equal(query_mask, gallery_mask):
            gallery = queries
        else:
            gallery = embeddings if bool(gallery_mask.all()) else embeddings[gallery_mask]

        def pick(values: Tensor | None, mask: Tensor) -> Tensor | None:
            return None if values is None else values[mask]

        return cls(
            queries,
            gallery,
            pick(label_t, query_mask),
            pick(label_t, gallery_mask),
            pick(sequence_t, query_mask),
            pick(sequence_t, gallery_mask),
            item_ids[query_mask],
            item_ids[gallery_mask],
            gallery_mask[query_mask],
        )

    @classmethod
    def from_sets(
        cls,
        queries: Tensor,
        gallery: Tensor,
        query_labels: Any = None,
        gallery_labels: Any = None,
        query_sequences: Any = None,
        gallery_sequences: Any = None,
    ) -> QueryGallerySplit:
        """See :meth:`RetrievalResults.from_embeddings_qg` for the arguments."""
        queries = as_embeddings("queries", queries)
        gallery = as_embeddings("gallery", gallery)
        check_same_dim(("queries", "gallery"), (queries, gallery))
        _check_not_empty(len(queries), len(gallery), "queries", "gallery")
        if (query_labels is None) != (gallery_labels is None):
            raise RetrievalInputError("give both query_labels and gallery_labels, or neither")
        if (query_sequences is None) != (gallery_sequences is None):
            raise RetrievalInputError("give both query_sequences and gallery_sequences, or neither")
        check_finite("queries", queries)
        check_finite("gallery", gallery)
        device, n_q, n_g = queries.device, len(queries), len(gallery)
        return cls(
            queries,
            gallery,
            None if query_labels is None else as_labels("query_labels", query_labels, n_q, device),
            None if gallery_labels is None else as_labels("gallery_labels", gallery_labels, n_g, device),
            None if query_sequences is None else as_int_keys("query_sequences", query_sequences, n_q, device),
            None if gallery_sequences is None else as_int_keys("gallery_sequences", gallery_sequences, n_g, device),
        )

    @property
    def exclude(self) -> list[tuple[Tensor, Tensor]]:
        """The key pairs a :class:`~omlcore.protocols.KNNBackend` excludes: the same item, the same sequence."""
        pairs: list[tuple[Tensor, Tensor]] = []
        if self.query_ids is not None and self.gallery_ids is not None:
            pairs.append((self.query_ids, self.gallery_ids))
        if self.query_sequences is not None and self.gallery_sequences is not None:
            pairs.append((self.query_sequences, self.gallery_sequences))
        return pairs

    def n_relevant(self) -> Tensor:
        """:func:`relevant_counts` of the queries; ``-1`` everywhere without labels."""
        if self.query_labels is None or self.gallery_labels is None:
            return torch.full((len(self.queries),), -1, dtype=torch.long, device=self.queries.device)
        return relevant_counts(
            self.query_labels, self.gallery_labels, self.query_sequences, self.gallery_sequences, self.query_in_gallery
        )


@dataclass(frozen=True, eq=False)
class RetrievalResults:
    """The top-k gallery items of every query, plus what metrics need to be exact.

    Attributes:
        distances: float32 ``(Q, K)``, ascending per row; ``inf`` pads rows shortened by exclusions.
        retrieved_ids: int64 ``(Q, K)`` gallery positions (``0 .. G-1``); ``-1`` pads.
        n_relevant: int64 ``(Q,)`` relevant gallery items per query (``-1`` when labels are unknown).
        query_labels, gallery_labels: int64 labels, or None.
        query_sequences, gallery_sequences: int64 sequence ids (``-1`` none), or None.
        query_ids, gallery_ids: dataset indices of the queries / gallery items (built by :meth:`from_embeddings`),
            or None; an index in both is the same item and never retrieved for itself.
        n_gallery: G, the size of the gallery.
        metric: the distance, ``"l2"`` or ``"cosine"``.
    """

    distances: Tensor
    retrieved_ids: Tensor
    n_relevant: Tensor
    n_gallery: int
    query_labels: Tensor | None = None
    gallery_labels: Tensor | None = None
    query_sequences: Tensor | None = None
    gallery_sequences: Tensor | None = None
    query_ids: Tensor | None = None
    gallery_ids: Tensor | None = None
    metric: str = "l2"

    def __post_init__(self) -> None:
        if self.distances.shape != self.retrieved_ids.shape or self.distances.dim() != 2:
            raise RetrievalInputError(
                f"distances {tuple(self.distances.shape)} and retrieved_ids {tuple(self.retrieved_ids.shape)} "
                "must have the same (Q, K) shape"
            )
        if len(self.n_relevant) != len(self.distances):
            raise RetrievalInputError(
                f"n_relevant has {len(self.n_relevant)} entries for {len(self.distances)} queries"
            )

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_embeddings(
        cls,
        embeddings: Tensor,
        labels: Any = None,
        is_query: Any = None,
        is_gallery: Any = None,
        sequences: Any = None,
        *,
        ids: Tensor | None = None,
        top_k: int = 5,
        cover_relevant: bool = False,
        metric: DistanceMetric = "l2",
        backend: KNNBackend | None = None,
    ) -> RetrievalResults:
        """Retrieve within one set of items, some of them queries, some gallery, possibly both (OML's layout).

        Args:
            embeddings: float ``(N, D)``.
            labels: int ``(N,)``; optional (then no ``n_relevant``, no metrics).
            is_query, is_gallery: bool ``(N,)``; default: every item is both (leave-one-out, as PML).
            sequences: int ``(N,)`` sequence ids, ``-1`` for none: items of a query's sequence are not retrieved.
            ids: unique int64 ``(N,)`` item ids (dataset indices) stored as ``query_ids`` / ``gallery_ids``;
                default ``0 .. N-1``.
            top_k: neighbours per query. Larger than the gallery is allowed (OML clips it): rows just end early.
            cover_relevant: retrieve at least ``max(n_relevant)`` items, as MAP@R and R-precision need.
            metric: ``"l2"`` or ``"cosine"``, for the default backend.
            backend: any :class:`~omlcore.protocols.KNNBackend`; default :class:`ExactKNN`.

        An item that is both query and gallery is never retrieved for itself. When queries and gallery are
        the same items, the exact backend computes each distance once.
        """
        split = QueryGallerySplit.from_items(embeddings, labels, is_query, is_gallery, sequences, ids)
        return cls.from_split(split, top_k=top_k, cover_relevant=cover_relevant, metric=metric, backend=backend)

    @classmethod
    def from_embeddings_qg(
        cls,
        queries: Tensor,
        gallery: Tensor,
        query_labels: Any = None,
        gallery_labels: Any = None,
        query_sequences: Any = None,
        gallery_sequences: Any = None,
        *,
        top_k: int = 5,
        cover_relevant: bool = False,
        metric: DistanceMetric = "l2",
        backend: KNNBackend | None = None,
    ) -> RetrievalResults:
        """Retrieve separate queries in a separate gallery (no item in both); arguments as :meth:`from_embeddings`."""
        split = QueryGallerySplit.from_sets(
            queries, gallery, query_labels, gallery_labels, query_sequences, gallery_sequences
        )
        return cls.from_split(split, top_k=top_k, cover_relevant=cover_relevant, metric=metric, backend=backend)

    @classmethod
    def from_split(
        cls,
        split: QueryGallerySplit,
        *,
        top_k: int = 5,
        cover_relevant: bool = False,
        metric: DistanceMetric = "l2",
        backend: KNNBackend | None = None,
    ) -> RetrievalResults:
        """Retrieve for a prepared :class:`QueryGallerySplit` (arguments as :meth:`from_embeddings`)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        n_relevant = split.n_relevant()
        if cover_relevant and len(n_relevant):
            top_k = max(top_k, int(n_relevant.max()))
        knn = backend if backend is not None else ExactKNN(metric)
        distances, retrieved = knn.search(split.queries, split.gallery, min(top_k, len(split.gallery)), split.exclude)
        width = int((retrieved >= 0).sum(dim=1).max())
        return cls.of_split(
            split,
            distances[:, :width].contiguous(),
            retrieved[:, :width].contiguous(),
            n_relevant,
            str(getattr(knn, "metric", metric)),
        )

    @classmethod
    def of_split(
        cls, split: QueryGallerySplit, distances: Tensor, retrieved_ids: Tensor, n_relevant: Tensor, metric: str
    ) -> RetrievalResults:
        """Rows already retrieved for ``split`` (one per query), with the split's labels, sequences and ids."""
        return cls(
            distances=distances,
            retrieved_ids=retrieved_ids,
            n_relevant=n_relevant,
            n_gallery=len(split.gallery),
            query_labels=split.query_labels,
            gallery_labels=split.gallery_labels,
            query_sequences=split.query_sequences,
            gallery_sequences=split.gallery_sequences,
            query_ids=split.query_ids,
            gallery_ids=split.gallery_ids,
            metric=metric,
        )

    # --- views --------------------------------------------------------------------------------------------------

    @property
    def n_queries(self) -> int:
        return len(self.distances)

    @property
    def top_k(self) -> int:
        """K, the number of columns (the longest row)."""
        return int(self.distances.shape[1])

    @property
    def n_retrieved(self) -> Tensor:
        """int64 ``(Q,)``: how many items each row holds (fewer than K where exclusions left too few)."""
        return (self.retrieved_ids >= 0).sum(dim=1)

    @property
    def is_relevant(self) -> Tensor:
        """bool ``(Q, K)``: the retrieved item has the query's label (False on padding)."""
        if self.query_labels is None or self.gallery_labels is None:
            raise RetrievalInputError("these results have no labels, so relevance is unknown")
        valid = self.retrieved_ids >= 0
        retrieved_labels = self.gallery_labels[self.retrieved_ids.clamp_min(0)]
        return valid & (retrieved_labels == self.query_labels[:, None])

    @property
    def n_queries_without_relevant(self) -> int:
        """Queries with no relevant gallery item at all (``n_relevant == 0``)."""
        return int((self.n_relevant == 0).sum())

    def retrieved(self, query: int) -> tuple[Tensor, Tensor]:
        """``(distances, gallery positions)`` of one query, without padding."""
        n = int(self.n_retrieved[query])
        return self.distances[query, :n], self.retrieved_ids[query, :n]

    def relevant_ids(self) -> list[Tensor]:
        """Per query, the sorted gallery positions of all its relevant items (``O(sum n_relevant)`` memory)."""
        if self.query_labels is None or self.gallery_labels is None:
            raise RetrievalInputError("these results have no labels, so relevance is unknown")
        owner, candidates = equal_key_pairs(self.query_labels, self.gallery_labels, non_negative=False)
        keep = torch.ones(len(owner), dtype=torch.bool, device=owner.device)
        if self.query_ids is not None and self.gallery_ids is not None:
            keep &= self.query_ids[owner] != self.gallery_ids[candidates]
        if self.query_sequences is not None and self.gallery_sequences is not None:
            seq = self.query_sequences[owner]
            keep &= ~((seq >= 0) & (seq == self.gallery_sequences[candidates]))
        owner, candidates = owner[keep], candidates[keep]
        counts = torch.bincount(owner, minlength=self.n_queries).tolist()
        return [ids.sort().values for ids in torch.split(candidates, counts)]

    def to_lists(self) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
        """OML's ragged layout: per-query ``distances``, ``retrieved_ids`` and (with labels) ``gt_ids`` lists."""
        lengths = self.n_retrieved.tolist()
        distances = [row[:n] for row, n in zip(self.distances, lengths, strict=True)]
        retrieved = [row[:n] for row, n in zip(self.retrieved_ids, lengths, strict=True)]
        gt = self.relevant_ids() if self.query_labels is not None else None
        return distances, retrieved, gt

    # --- persistence --------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to ``path`` (``torch.save`` of plain tensors; read back with :meth:`load`)."""
        payload: dict[str, Any] = {"format": _FORMAT}
        for item in fields(self):
            value = getattr(self, item.name)
            payload[item.name] = value.cpu() if isinstance(value, Tensor) else value
        torch.save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device | None = None) -> RetrievalResults:
        """Read results written by :meth:`save` (safely: ``weights_only=True``)."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise RetrievalInputError(f"{os.fspath(path)!r} is not a file written by RetrievalResults.save")
        return cls(**{item.name: payload[item.name] for item in fields(cls)})

    def __repr__(self) -> str:
        return (
            f"RetrievalResults(n_queries={self.n_queries}, n_gallery={self.n_gallery}, top_k={self.top_k}, "
            f"metric={self.metric!r}, labels={self.query_labels is not None})"
        )


def _check_not_empty(n_queries: int, n_gallery: int, query_name: str, gallery_name: str) -> None:
    if n_queries == 0:
        raise RetrievalInputError(
            f"the query set is empty ({query_name} selects no item): mark the items to search with as queries"
        )
    if n_gallery == 0:
        raise RetrievalInputError(
            f"the gallery is empty ({gallery_name} selects no item): mark the items to search in as gallery items"
        )
