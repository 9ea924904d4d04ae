"""The running top-k of the exact kNN: block screening by group minima, and merging of the few candidates.

Per query the ``k`` smallest ``(score, gallery index)`` pairs: equal scores are ordered by the smaller gallery index
(``-0.0`` and ``0.0`` are equal), the engine's tie rule. Blocks of scores are folded in with :func:`absorb`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from omlcore.retrieval.scores import Exclude, Exclusions, ScoreBlock

__all__ = ["RunningTopK", "absorb", "fold", "smallest_pairs", "sortable"]

_INF = float("inf")
_GROUP = 32  # entries per group whose minimum screens them (see _candidates)


def sortable(values: Tensor) -> Tensor:
    """float32 -> int64 in ``[0, 2^32)`` with the same order (``-0.0`` and ``0.0`` equal)."""
    bits = (values + 0.0).view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return ordered.to(torch.int64) + 2**31


class RunningTopK:
    """Per query the ``k`` smallest ``(score, gallery index)`` seen so far, ``(inf, -1)`` where fewer were seen.

    Candidates of a chunk of queries are kept pending and merged in once they are as many as the chunk's
    top-k entries (or when some query still lacks k neighbours), so that merging costs O(candidates): the
    thresholds used meanwhile are those of the last merge, which are never too tight.
    """

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        self.k = k
        self.values = torch.full((n, k), _INF, device=device)
        self.indices = torch.full((n, k), -1, dtype=torch.long, device=device)
        self._pending: dict[int, list[tuple[Tensor, Tensor, Tensor]]] = {}
        self._pending_count: dict[int, int] = {}

    def add(self, rows: slice, query: Tensor, gallery: Tensor, values: Tensor, merge_now: bool) -> None:
        """Queue candidates (``query`` local to ``rows``; ``gallery`` indices larger than any queued before)."""
        pending = self._pending.setdefault(rows.start, [])
        pending.append((query, gallery, values))
        count = self._pending_count.get(rows.start, 0) + len(query)
        self._pending_count[rows.start] = count
        if merge_now or count >= (rows.stop - rows.start) * self.k:
            self.merge(rows)

    def flush(self, chunks: list[slice]) -> None:
        for rows in chunks:
            self.merge(rows)

    def merge(self, rows: slice) -> None:
        """Fold the pending candidates of ``rows`` into their top-k."""
        pending = self._pending.pop(rows.start, [])
        self._pending_count.pop(rows.start, None)
        if not pending or not sum(len(part[0]) for part in pending):
            return
        query, gallery, values = (torch.cat(parts) for parts in zip(*pending, strict=True))
        k, device = self.k, values.device
        present = torch.bincount(query, minlength=rows.stop - rows.start) > 0
        touched = present.nonzero().flatten()
        local = (torch.cumsum(present, 0) - 1)[query]  # query -> its position among the touched ones
        positions = touched + rows.start
        n = len(touched)
        all_query = torch.cat([torch.arange(n, device=device).repeat_interleave(k), local])
        all_values = torch.cat([self.values[positions].reshape(-1), values])
        all_gallery = torch.cat([self.indices[positions].reshape(-1), gallery])
        # Stable sort by (query, score); equal scores keep their order, which is increasing gallery index.
        order = torch.sort((all_query << 32) | sortable(all_values), stable=True).indices
        sorted_query = all_query[order]
        counts = torch.bincount(sorted_query, minlength=n)
        rank = torch.arange(len(order), device=device) - (torch.cumsum(counts, 0) - counts)[sorted_query]
        kept = order[rank < k]  # exactly k per touched query, in (query, rank) order
        self.values[positions] = all_values[kept].view(n, k)
        self.indices[positions] = all_gallery[kept].view(n, k)


def _candidates(scores: Tensor, threshold: Tensor, transposed: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Entries with ``scores <= threshold`` (per row, or per column when ``transposed``), as ``(row, col, value)``.

    The block is reduced to minima of groups of 32 entries along the thresholded direction, and only the
    groups whose minimum passes are expanded: far cheaper than comparing every entry when, as usual, few pass.
    Rows (columns) come out in increasing order, and within each its entries by increasing position.
    """
    n_rows, n_cols = scores.shape
    if (n_rows if transposed else n_cols) % _GROUP:
        mask = scores <= (threshold[None, :] if transposed else threshold[:, None])
        rows, cols = mask.nonzero().unbind(1)
        return rows, cols, scores[rows, cols]
    offsets = torch.arange(_GROUP, device=scores.device)
    if transposed:  # groups run down the columns: (row group, col) hits, entries strided by n_cols
        minima = scores.view(n_rows // _GROUP, _GROUP, n_cols).amin(dim=1)
        group, col = (minima <= threshold[None, :]).nonzero().unbind(1)
        first = group * (_GROUP * n_cols) + col
        flat = first[:, None] + offsets[None, :] * n_cols
        owner = col
    else:  # groups run along the rows: (row, col group) hits, entries contiguous
        minima = scores.view(n_rows, n_cols // _GROUP, _GROUP).amin(dim=2)
        row, group = (minima <= threshold[:, None]).nonzero().unbind(1)
        flat = (row * n_cols + group * _GROUP)[:, None] + offsets[None, :]
        owner = row
    values = torch.take(scores, flat)
    hit = (values <= threshold.index_select(0, owner)[:, None]).view(-1).nonzero().flatten()
    flat = flat.view(-1).index_select(0, hit)
    return flat // n_cols, flat % n_cols, values.view(-1).index_select(0, hit)


def _excluded(query: Tensor, gallery: Tensor, exclude: Exclude) -> Tensor:
    """For pairs ``(query[i], gallery[i])`` (global indices): whether any key pair excludes them."""
    bad = torch.zeros(len(query), dtype=torch.bool, device=query.device)
    for query_keys, gallery_keys in exclude:
        keys = query_keys[query]
        bad |= (keys == gallery_keys[gallery]) & (keys >= 0)
    return bad


def absorb(topk: RunningTopK, scores: Tensor, rows: slice, cols: slice, transposed: bool, exclude: Exclude) -> None:
    """Fold one block into the top-k of the queries ``rows`` (the block's columns when ``transposed``)."""
    k = topk.k
    threshold = topk.values[rows, k - 1].clone()
    unfilled = torch.isinf(threshold).nonzero().flatten()
    if len(unfilled) and scores.shape[0 if transposed else 1] >= k:
        # tighten the bound of queries without k neighbours yet by the block's own k-th smallest valid score
        sub = scores[:, unfilled].T.contiguous() if transposed else scores[unfilled]
        for query_keys, gallery_keys in exclude:
            keys = query_keys[rows][unfilled, None]
            sub.masked_fill_((keys == gallery_keys[cols][None, :]) & (keys >= 0), _INF)
        kth = sub.topk(k, dim=1, largest=False, sorted=False).values.amax(dim=1)
        threshold[unfilled] = torch.minimum(threshold[unfilled], kth)
    block_rows, block_cols, values = _candidates(scores, threshold, transposed)
    query_local, gallery_local = (block_cols, block_rows) if transposed else (block_rows, block_cols)
    query, gallery = query_local + rows.start, gallery_local + cols.start
    keep = torch.isfinite(values) if len(unfilled) else None  # finite thresholds pass finite scores only
    if exclude:
        allowed = ~_excluded(query, gallery, exclude)
        keep = allowed if keep is None else keep & allowed
    if keep is not None and not bool(keep.all()):
        query_local, gallery, values = query_local[keep], gallery[keep], values[keep]
    topk.add(rows, query_local, gallery, values, merge_now=bool(len(unfilled)))


def fold(topk: RunningTopK, blocks: Iterable[ScoreBlock], exclusions: Exclusions) -> float:
    """Fold every block into ``topk`` (mirrored ones in both directions) and flush it; returns the blocks' scale."""
    scale = 1.0
    chunks: dict[int, slice] = {}
    for block in blocks:
        scale = block.scale
        absorb(topk, block.scores, block.rows, block.cols, False, exclusions.between(block.rows, block.cols))
        if block.mirrored:
            absorb(topk, block.scores, block.cols, block.rows, True, exclusions.between(block.cols, block.rows))
        chunks[block.rows.start] = block.rows
        chunks[block.cols.start] = block.cols
    topk.flush(list(chunks.values()))
    return scale


def smallest_pairs(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row the ``k`` smallest ``(score, id)`` pairs among ``ids >= 0`` (ids below ``2^31``), ascending: the
    engine's order; ``(inf, -1)`` pads. Merges partial top-k lists exactly."""
    key = (sortable(scores) << 31) | ids.clamp_min(0)
    key = key.masked_fill(ids < 0, torch.iinfo(torch.int64).max)
    order = key.topk(k, dim=1, largest=False, sorted=True).indices
    chosen = ids.gather(1, order)
    return scores.gather(1, order).masked_fill(chosen < 0, _INF), chosen
