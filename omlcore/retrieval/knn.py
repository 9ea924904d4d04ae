"""Exact k-nearest-neighbour search in chunks: the default :class:`~omlcore.protocols.KNNBackend`.

The query x gallery distance matrix is never built. Queries and gallery are cut into chunks; each block of
distances comes from one GEMM and is folded into a running top-k per query, so memory is
``O(Q * k + chunk^2)``. Folding is cheap because almost nothing survives it: a block entry can only enter
a query's top-k when it is not farther than the query's current k-th neighbour. Each block is screened by
the minima of groups of 32 entries against that threshold, only passing groups are expanded, and the few
candidates are merged (sorted by ``(query, distance, gallery index)``). When the queries *are* the gallery
(``queries is gallery``, symmetric exclusions), each block above the diagonal also serves as its transpose, so
every distance is computed once: half the GEMM FLOP.

Distances: ``"l2"`` is the Euclidean distance ``||q - g||_2`` (ranked by ``||q||^2 + ||g||^2 - 2 q.g``, as
``torch.cdist`` and OML compute it), ``"cosine"`` is ``1 - cos(q, g)``. Ties (equal computed distances) are
broken by the smaller gallery index, so results are deterministic.
Exclusion: gallery item ``g`` is never a neighbour of query ``q`` when, for any key pair ``(qk, gk)`` of
``exclude``, ``qk[q] == gk[g] >= 0`` (the same item, the same sequence).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from omlcore.retrieval.validation import RetrievalInputError, as_embeddings, as_int_keys, check_finite, check_same_dim

__all__ = [
    "CpuGemm",
    "DistanceMetric",
    "ExactKNN",
    "Exclude",
    "Exclusions",
    "ScoreBlock",
    "default_chunk_size",
    "is_symmetric",
    "iter_score_blocks",
    "scores_to_distances",
]

DistanceMetric = Literal["l2", "cosine"]
#: ``(query_keys, gallery_keys)`` pairs of int64 tensors ``(Q,)`` / ``(G,)``; equal keys ``>= 0`` exclude a pair.
Exclude = Sequence[tuple[Tensor, Tensor]]
CpuGemm = Literal["auto", "onednn", "blas"]

_CPU_CHUNK = 1024
_CUDA_CHUNK = 8192
_INF = float("inf")
_GROUP = 32  # entries per group whose minimum screens them (see _candidates)


@dataclass(frozen=True)
class ScoreBlock:
    """One block of ranking scores: ``scores[i, j]`` for query ``rows.start + i`` and gallery ``cols.start + j``.

    Scores order pairs like distances (squared L2, or ``1 - cos``); convert them with :func:`scores_to_distances`.
    ``mirrored``: in a symmetric search the block also stands for its transpose (``cols`` as queries, ``rows``
    as gallery items). The tensor may be reused by the next block: copy what you keep.
    """

    rows: slice
    cols: slice
    scores: Tensor
    mirrored: bool


def scores_to_distances(scores: Tensor, metric: DistanceMetric) -> Tensor:
    """Ranking scores to distances: ``sqrt(max(s, 0))`` for ``"l2"``, ``max(s, 0)`` for ``"cosine"``."""
    clamped = scores.clamp_min(0.0)
    return clamped.sqrt_() if metric == "l2" else clamped


def is_symmetric(queries: Tensor, gallery: Tensor, exclude: Exclude | None) -> bool:
    """Whether one triangle of blocks serves both directions: the same tensor, and symmetric exclusions."""
    if queries is not gallery:
        return False
    return all(qk is gk or torch.equal(qk, gk) for qk, gk in exclude or ())


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_linear")


class _Scorer:
    """Blocks of ``bias_g[j] + row_term[i] + scale * q_i . g_j``: one GEMM per block, bias fused into it.

    On CPU, oneDNN's fp32 GEMM (``mkldnn_linear``) is used when available: on some CPUs (e.g. AMD Zen with
    MKL) it is markedly faster than the BLAS behind ``torch.mm``; both compute exact fp32 products.
    """

    def __init__(self, queries: Tensor, gallery: Tensor, metric: DistanceMetric, gemm: CpuGemm) -> None:
        if metric == "cosine":  # the one full copy this class makes: normalised inputs
            queries = torch.nn.functional.normalize(queries, dim=1)
            gallery = queries if gallery is queries else torch.nn.functional.normalize(gallery, dim=1)
            self.row_term: Tensor | None = None
            self.bias = torch.ones(len(gallery), dtype=gallery.dtype, device=gallery.device)
            self.scale = -1.0  # 1 - q.g  ==  1 + (-q).g
        else:
            self.row_term = _squared_norms(queries)
            self.bias = self.row_term if gallery is queries else _squared_norms(gallery)
            self.scale = -2.0  # exact: a power of two
        self.queries = queries
        self.gallery = gallery
        on_cpu = gallery.device.type == "cpu"
        if gemm == "onednn" and not (on_cpu and _onednn_available()):
            raise RetrievalInputError("cpu_gemm='onednn' needs CPU tensors and a PyTorch built with oneDNN (mkldnn)")
        self.onednn = on_cpu and (gemm == "onednn" or (gemm == "auto" and _onednn_available()))
        # oneDNN copies of the gallery blocks, made once: converting per block would cost as much as the GEMM
        self._gallery_blocks: dict[int, tuple[Tensor, Tensor]] = {}
        self._buffer = torch.empty(0, dtype=gallery.dtype, device=gallery.device)

    def _gallery_block(self, cols: slice) -> tuple[Tensor, Tensor]:
        cached = self._gallery_blocks.get(cols.start)
        if cached is None:
            cached = (self.gallery[cols].contiguous().to_mkldnn(), self.bias[cols].contiguous().to_mkldnn())
            self._gallery_blocks[cols.start] = cached
        return cached

    def row_block(self, rows: slice) -> Tensor:
        """The (scaled) queries of ``rows``, in the GEMM's input format."""
        block = self.queries[rows].mul(self.scale)
        return block.to_mkldnn() if self.onednn else block

    def scores(self, rows: slice, prepared_rows: Tensor, cols: slice) -> Tensor:
        if self.onednn:
            weight, bias = self._gallery_block(cols)
            out = torch._C._nn.mkldnn_linear(prepared_rows, weight, bias).to_dense()
        else:
            n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
            if self._buffer.numel() < n_rows * n_cols:
                self._buffer = torch.empty(n_rows * n_cols, dtype=self.gallery.dtype, device=self.gallery.device)
            out = self._buffer[: n_rows * n_cols].view(n_rows, n_cols)
            torch.addmm(self.bias[cols], prepared_rows, self.gallery[cols].T, out=out)
        if self.row_term is not None:
            out.add_(self.row_term[rows, None])
        return out


def _squared_norms(x: Tensor, chunk: int = 8192) -> Tensor:
    """``||x_i||^2`` row by row, in chunks (no full-size temporary)."""
    return torch.cat([part.pow(2).sum(dim=1) for part in x.split(chunk)]) if len(x) else x.new_zeros(0)


def _slices(n: int, chunk: int) -> list[slice]:
    return [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def default_chunk_size(device: torch.device) -> int:
    """Rows (and columns) per block: 1024 on CPU (a 4 MiB block stays in cache); on a GPU 16384 (1 GiB blocks)
    when it has 32 GiB or more, else 8192."""
    if device.type == "cpu":
        return _CPU_CHUNK
    if device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory >= 32 * 2**30:
        return 2 * _CUDA_CHUNK
    return _CUDA_CHUNK


def iter_score_blocks(
    queries: Tensor,
    gallery: Tensor,
    metric: DistanceMetric = "l2",
    *,
    symmetric: bool = False,
    chunk_size: int | None = None,
    cpu_gemm: CpuGemm = "auto",
) -> Iterator[ScoreBlock]:
    """All blocks of query x gallery scores, row chunk by row chunk, gallery chunks in increasing order.

    With ``symmetric=True`` (requires ``queries is gallery``) only blocks on and above the diagonal are
    produced and the off-diagonal ones are ``mirrored``; for every query its gallery chunks still arrive in
    increasing order (first as the transposes of earlier row chunks, then as its own row chunk).
    """
    if symmetric and queries is not gallery:
        raise ValueError("symmetric=True needs `queries is gallery`")
    chunk = chunk_size or default_chunk_size(queries.device)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    queries = queries.float()
    scorer = _Scorer(queries, queries if symmetric else gallery.float(), metric, cpu_gemm)
    row_slices = _slices(len(queries), chunk)
    col_slices = row_slices if symmetric else _slices(len(gallery), chunk)
    for i, rows in enumerate(row_slices):
        prepared = scorer.row_block(rows)
        for j, cols in enumerate(col_slices):
            if symmetric and j < i:
                continue
            yield ScoreBlock(rows, cols, scorer.scores(rows, prepared, cols), mirrored=symmetric and j > i)


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


class Exclusions:
    """The exclusion key pairs, and per pair of chunks only those whose key ranges overlap (others exclude nothing).

    Item ids make this pay off: in a symmetric search only diagonal blocks can hold an item and itself.
    """

    def __init__(self, pairs: Exclude) -> None:
        self.pairs = pairs
        self._ranges: dict[tuple[int, int, int], tuple[int, int] | None] = {}

    def _range(self, pair: int, side: int, chunk: slice) -> tuple[int, int] | None:
        key = (pair, side, chunk.start)
        if key not in self._ranges:
            keys = self.pairs[pair][side][chunk]
            keys = keys[keys >= 0]
            self._ranges[key] = (int(keys.min()), int(keys.max())) if len(keys) else None
        return self._ranges[key]

    def between(self, queries: slice, gallery: slice) -> Exclude:
        """The pairs that may exclude a (query in ``queries``, gallery item in ``gallery``) pair."""
        active = []
        for index, pair in enumerate(self.pairs):
            query_range, gallery_range = self._range(index, 0, queries), self._range(index, 1, gallery)
            if (
                query_range
                and gallery_range
                and query_range[0] <= gallery_range[1]
                and gallery_range[0] <= query_range[1]
            ):
                active.append(pair)
        return active


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
            ``O(Q * k + chunk_size^2)``, plus a oneDNN copy of the gallery on CPU.
        cpu_gemm: ``"auto"`` (oneDNN when PyTorch has it, else BLAS), ``"onednn"`` or ``"blas"`` (``torch.addmm``).

    Inputs of any floating dtype are searched in float32.
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
        width = min(k, len(gallery))
        topk = _RunningTopK(len(queries), width, queries.device)
        if width > 0 and len(queries) > 0:
            blocks = iter_score_blocks(
                queries, gallery, self.metric, symmetric=symmetric, chunk_size=self.chunk_size, cpu_gemm=self.cpu_gemm
            )
            chunks: dict[int, slice] = {}
            exclusions = Exclusions(pairs)
            for block in blocks:
                _absorb(topk, block.scores, block.rows, block.cols, False, exclusions.between(block.rows, block.cols))
                if block.mirrored:
                    _absorb(
                        topk, block.scores, block.cols, block.rows, True, exclusions.between(block.cols, block.rows)
                    )
                chunks[block.rows.start] = block.rows
                chunks[block.cols.start] = block.cols
            topk.flush(list(chunks.values()))
        distances = scores_to_distances(topk.values, self.metric)
        indices = topk.indices
        if width < k:
            distances = torch.nn.functional.pad(distances, (0, k - width), value=_INF)
            indices = torch.nn.functional.pad(indices, (0, k - width), value=-1)
        return distances, indices
