"""The rank of each query's first relevant gallery item in the full exact ranking, without keeping the ranking.

A kNN search keeps the top k; the mean reciprocal rank over the *full* ranking (PML's default) needs, for the
queries whose top k holds no relevant item, how far down the first one lies. Two passes over the score blocks of
:func:`~omlcore.retrieval.scores.iter_score_blocks` find it in ``O(Q + chunk^2)`` memory:

1. the nearest relevant item ``(s*, g*)`` of every query: the smallest score among gallery items of its label
   that are not excluded, ties by the smaller gallery position (the exact engine's tie rule);
2. ``rank = 1 + #{g not excluded : s_g < s* or (s_g == s* and g < g*)}``.

Relevance and exclusion are those of :class:`~omlcore.retrieval.results.QueryGallerySplit`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.retrieval.results import QueryGallerySplit
from omlcore.retrieval.scores import DistanceMetric, Exclude, iter_score_blocks
from omlcore.retrieval.validation import RetrievalInputError

__all__ = ["first_relevant_ranks"]


def _excluded_block(exclude: Exclude, rows: slice, cols: slice) -> Tensor | None:
    """bool ``(rows, cols)``: pairs that a key pair excludes, or None when nothing can be."""
    mask: Tensor | None = None
    for query_keys, gallery_keys in exclude:
        keys = query_keys[rows, None]
        pair = (keys == gallery_keys[None, cols]) & (keys >= 0)
        mask = pair if mask is None else mask | pair
    return mask


def first_relevant_ranks(
    split: QueryGallerySplit,
    queries: Tensor | None = None,
    metric: DistanceMetric = "l2",
    chunk_size: int | None = None,
) -> Tensor:
    """1-based rank of the first relevant gallery item of each query in the full exact ranking, 0 if it has none.

    Args:
        split: queries, gallery, labels and exclusions.
        queries: int64 positions of the queries to rank (default: all).
        metric: ``"l2"`` or ``"cosine"``; ranking by the exact engine's float32 scores, ties by gallery position.
        chunk_size: rows / columns per score block (see :func:`~omlcore.retrieval.scores.iter_score_blocks`).

    Returns:
        int64 ``(len(queries),)``.
    """
    if split.query_labels is None or split.gallery_labels is None:
        raise RetrievalInputError("ranks of relevant items need labels")
    device = split.queries.device
    positions = torch.arange(len(split.queries), device=device) if queries is None else queries.to(device)
    n = len(positions)
    ranks = torch.zeros(n, dtype=torch.long, device=device)
    if n == 0 or len(split.gallery) == 0:
        return ranks
    subset = split.queries[positions]
    labels = split.query_labels[positions]
    exclude = [(query_keys[positions], gallery_keys) for query_keys, gallery_keys in split.exclude]
    best_score = torch.full((n,), float("inf"), device=device)
    best_index = torch.full((n,), len(split.gallery), dtype=torch.long, device=device)
    for block in iter_score_blocks(subset, split.gallery, metric, chunk_size=chunk_size):
        rows, cols, scores = block.rows, block.cols, block.scores
        relevant = labels[rows, None] == split.gallery_labels[None, cols]
        excluded = _excluded_block(exclude, rows, cols)
        if excluded is not None:
            relevant &= ~excluded
        candidates = torch.where(relevant, scores, float("inf"))
        smallest = candidates.min(dim=1).values
        # the first column holding the minimum among relevant items (argmax returns the first maximum)
        first = ((candidates == smallest[:, None]) & relevant).to(torch.uint8).argmax(dim=1) + cols.start
        better = relevant.any(dim=1) & (smallest < best_score[rows])  # equal scores: the earlier block's is first
        best_score[rows] = torch.where(better, smallest, best_score[rows])
        best_index[rows] = torch.where(better, first, best_index[rows])
    found = best_index < len(split.gallery)
    for block in iter_score_blocks(subset, split.gallery, metric, chunk_size=chunk_size):
        rows, cols, scores = block.rows, block.cols, block.scores
        threshold, index = best_score[rows, None], best_index[rows, None]
        columns = torch.arange(cols.start, cols.stop, device=device)[None, :]
        ahead = (scores < threshold) | ((scores == threshold) & (columns < index))
        excluded = _excluded_block(exclude, rows, cols)
        if excluded is not None:
            ahead &= ~excluded
        ranks[rows] += ahead.sum(dim=1)
    return torch.where(found, ranks + 1, 0)
