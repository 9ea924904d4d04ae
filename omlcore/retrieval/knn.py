"""Exact k-nearest-neighbour search in chunks: the default :class:`~omlcore.protocols.KNNBackend`.

The query x gallery distance matrix is never built: blocks of scores come from
:func:`~omlcore.retrieval.scores.iter_score_blocks` (one GEMM each, half of them in a symmetric search) and are
folded into a running top-k per query, so memory is ``O(Q * k + chunk^2)``. Folding is cheap because almost
nothing survives it: a block entry can only enter a query's top-k when it is not farther than the query's current
k-th neighbour. Each block is screened by the minima of groups of 32 entries against that threshold, only passing
groups are expanded, and the few candidates are merged (sorted by ``(query, distance, gallery index)``).

Distances: ``"l2"`` is the Euclidean distance ``||q - g||_2``, ``"cosine"`` is ``1 - cos(q, g)`` (see
:mod:`omlcore.retrieval.scores`). Ties (equal computed distances) are broken by the smaller gallery index, so
results are deterministic.
Exclusion: gallery item ``g`` is never a neighbour of query ``q`` when, for any key pair ``(qk, gk)`` of
``exclude``, ``qk[q] == gk[g] >= 0`` (the same item, the same sequence).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from omlcore.retrieval.scores import (
    CpuGemm,
    DistanceMetric,
    Exclude,
    Exclusions,
    is_symmetric,
    iter_score_blocks,
    scores_to_distances,
)
from omlcore.retrieval.validation import (
    RetrievalInputError,
    as_embeddings,
    as_int_keys,
    check_finite,
    check_same_dim,
)

__all__ = ["CpuGemm", "DistanceMetric", "ExactKNN", "Exclude"]

_INF = float("inf")
_GROUP = 32  # entries per group whose minimum screens them (see _candidates)


def _sortable(values: Tensor) -> Tensor:
    """float32 -> int64 in ``[0, 2^32)`` with the same order (``-0.0`` and ``0.0`` equal)."""
    bits = (values + 0.0).view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return ordered.to(torch.int64) + 2**31


class _RunningTopK:
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
        order = torch.sort((all_query << 32) | _sortable(all_values), stable=True).indices
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


def _absorb(topk: _RunningTopK, scores: Tensor, rows: slice, cols: slice, transposed: bool, exclude: Exclude) -> None:
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


class ExactKNN:
    """Exact top-k search by chunked GEMM with a running top-k (see the module docstring).

    Args:
        metric: ``"l2"`` (Euclidean) or ``"cosine"`` (``1 - cos``).
        chunk_size: rows / columns per block; default 1024 on CPU, 8192 or 16384 on CUDA. Memory beyond the inputs is
            ``O(Q * k + chunk_size^2)``.
        cpu_gemm: ``"auto"`` (oneDNN where :func:`~omlcore.functional.linear.onednn_usable`, else BLAS),
            ``"onednn"`` or ``"blas"`` (``torch.addmm``).

    Inputs of any floating dtype are searched in float32; distances record no gradient.
    """

    def __init__(
        self, metric: DistanceMetric = "l2", chunk_size: int | None = None, cpu_gemm: CpuGemm = "auto"
    ) -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        if cpu_gemm not in ("auto", "onednn", "blas"):
            raise ValueError(f"cpu_gemm must be 'auto', 'onednn' or 'blas', got {cpu_gemm!r}")
        self.metric: DistanceMetric = metric
        self.chunk_size = chunk_size
        self.cpu_gemm: CpuGemm = cpu_gemm

    def __repr__(self) -> str:
        return f"ExactKNN(metric={self.metric!r}, chunk_size={self.chunk_size}, cpu_gemm={self.cpu_gemm!r})"

    def search(self, queries: Tensor, gallery: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest gallery items of every query (see :class:`~omlcore.protocols.KNNBackend`).

        Returns:
            ``(distances, indices)``, float32 / int64 ``(Q, k)`` on the device of ``queries``, ascending by
            distance then gallery index; rows with fewer than ``k`` candidates end in ``(inf, -1)``.
        """
        queries = as_embeddings("queries", queries)
        gallery = as_embeddings("gallery", gallery)
        check_same_dim(("queries", "gallery"), (queries, gallery))
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_finite("queries", queries)
        if gallery is not queries:
            check_finite("gallery", gallery)
        pairs = [
            (
                as_int_keys("exclude query keys", qk, len(queries), queries.device),
                as_int_keys("exclude gallery keys", gk, len(gallery), queries.device),
            )
            for qk, gk in exclude or ()
        ]
        symmetric = is_symmetric(queries, gallery, exclude) and len(queries) > 0
        scale = 1.0
        width = min(k, len(gallery))
        topk = _RunningTopK(len(queries), width, queries.device)
        if width > 0 and len(queries) > 0:
            blocks = iter_score_blocks(
                queries, gallery, self.metric, symmetric=symmetric, chunk_size=self.chunk_size, cpu_gemm=self.cpu_gemm
            )
            chunks: dict[int, slice] = {}
            exclusions = Exclusions(pairs)
            for block in blocks:
                scale = block.scale
                _absorb(topk, block.scores, block.rows, block.cols, False, exclusions.between(block.rows, block.cols))
                if block.mirrored:
                    _absorb(
                        topk, block.scores, block.cols, block.rows, True, exclusions.between(block.cols, block.rows)
                    )
                chunks[block.rows.start] = block.rows
                chunks[block.cols.start] = block.cols
            topk.flush(list(chunks.values()))
        return self._finish(topk, width, k, scale)

    def search_stream(
        self, queries: Tensor, parts: Iterable[Tensor], k: int, exclude: Exclude | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`search` over a gallery given as consecutive parts (e.g. blocks read from disk), never all at once.

        Gallery indices run over the parts in order; ``exclude`` gallery keys cover the whole gallery. Memory:
        ``O(Q * k)`` plus one part. Parts must not need rescaling (see :mod:`~omlcore.retrieval.scores`): entries
        of ``2^40`` or more are an error here.
        """
        queries = as_embeddings("queries", queries)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_finite("queries", queries)
        pairs = [(as_int_keys("exclude query keys", qk, len(queries), queries.device), gk) for qk, gk in exclude or ()]
        topk = _RunningTopK(len(queries), k, queries.device)
        exclusions = Exclusions(pairs)
        chunks: dict[int, slice] = {}
        offset = 0
        for part in parts:
            part = as_embeddings("gallery part", part)
            check_same_dim(("queries", "gallery"), (queries, part))
            check_finite("gallery", part)
            for block in iter_score_blocks(
                queries, part, self.metric, chunk_size=self.chunk_size, cpu_gemm=self.cpu_gemm
            ):
                if block.scale != 1.0:
                    raise RetrievalInputError(
                        "a streamed search needs embeddings of ordinary size (entries below 2^40): normalise them"
                    )
                cols = slice(block.cols.start + offset, block.cols.stop + offset)
                _absorb(topk, block.scores, block.rows, cols, False, exclusions.between(block.rows, cols))
                chunks[block.rows.start] = block.rows
            offset += len(part)
        topk.flush(list(chunks.values()))
        width = min(k, offset)
        if width < k:  # fewer gallery items than k: the columns beyond stay padding
            topk.values, topk.indices = topk.values[:, :width], topk.indices[:, :width]
        return self._finish(topk, width, k, 1.0)

    def _finish(self, topk: _RunningTopK, width: int, k: int, scale: float) -> tuple[Tensor, Tensor]:
        distances = scores_to_distances(topk.values, self.metric, scale)
        indices = topk.indices
        if width < k:
            distances = torch.nn.functional.pad(distances, (0, k - width), value=_INF)
            indices = torch.nn.functional.pad(indices, (0, k - width), value=-1)
        return distances, indices
