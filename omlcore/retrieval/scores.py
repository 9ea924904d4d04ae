"""Query x gallery ranking scores block by block: the engine under the exact kNN and FNMR@FMR.

The full matrix is never built. Queries and gallery are cut into chunks and each block of scores comes from one
GEMM with the gallery term fused in as its bias. When the queries *are* the gallery (``queries is gallery``,
symmetric exclusions), each block above the diagonal also serves as its transpose, so every score is computed
once: half the GEMM FLOP.

Scores order pairs like distances: ``||q||^2 + ||g||^2 - 2 q.g`` (squared L2, as ``torch.cdist`` and OML compute
it) or ``1 - cos(q, g)``; :func:`scores_to_distances` turns them into distances.
Range: inputs whose entries reach ``2^40`` (or stay below ``2^-40``) would overflow (underflow) float32 in their
squares, so they are scored divided by a power of two (:attr:`ScoreBlock.scale`; for cosine each row is rescaled
before it is normalised): exact, the same ranking and, scaled back, the same distances.
Exclusion: gallery item ``g`` is never a neighbour of query ``q`` when, for any key pair ``(qk, gk)`` of an
:data:`Exclude`, ``qk[q] == gk[g] >= 0`` (the same item, the same sequence).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from omlcore.functional.linear import onednn_linear, onednn_usable
from omlcore.retrieval.validation import RetrievalInputError

__all__ = [
    "CpuGemm",
    "DistanceMetric",
    "Exclude",
    "Exclusions",
    "ScoreBlock",
    "Scorer",
    "chunk_slices",
    "default_chunk_size",
    "is_symmetric",
    "iter_score_blocks",
    "make_scorer",
    "scores_to_distances",
]

DistanceMetric = Literal["l2", "cosine"]
#: ``(query_keys, gallery_keys)`` pairs of int64 tensors ``(Q,)`` / ``(G,)``; equal keys ``>= 0`` exclude a pair.
Exclude = Sequence[tuple[Tensor, Tensor]]
CpuGemm = Literal["auto", "onednn", "blas"]

_CPU_CHUNK = 1024
_SAFE_MAX = 2.0**40  # squares of entries from here on can overflow float32 in a sum over many dimensions
_SAFE_MIN = 2.0**-40  # ... and below this they lose precision (subnormal squares)
_CUDA_CHUNK = 8192


@dataclass(frozen=True)
class ScoreBlock:
    """One block of ranking scores: ``scores[i, j]`` for query ``rows.start + i`` and gallery ``cols.start + j``.

    Scores order pairs like distances (squared L2, or ``1 - cos``); convert them with :func:`scores_to_distances`.
    ``mirrored``: in a symmetric search the block also stands for its transpose (``cols`` as queries, ``rows``
    as gallery items). ``scale``: the power of two the inputs were divided by (1 unless their squares would leave
    float32's range); pass it to :func:`scores_to_distances`. The tensor may be reused by the next block: copy
    what you keep.
    """

    rows: slice
    cols: slice
    scores: Tensor
    mirrored: bool
    scale: float = 1.0


def scores_to_distances(scores: Tensor, metric: DistanceMetric, scale: float = 1.0) -> Tensor:
    """Ranking scores to distances: ``scale * sqrt(max(s, 0))`` for ``"l2"``, ``max(s, 0)`` for ``"cosine"``."""
    clamped = scores.clamp_min(0.0)
    if metric != "l2":
        return clamped
    distances = clamped.sqrt_()
    return distances.mul_(scale) if scale != 1.0 else distances


def is_symmetric(queries: Tensor, gallery: Tensor, exclude: Exclude | None) -> bool:
    """Whether one triangle of blocks serves both directions: the same tensor, and symmetric exclusions."""
    if queries is not gallery:
        return False
    return all(qk is gk or torch.equal(qk, gk) for qk, gk in exclude or ())


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


class Scorer:
    """Blocks of ``bias_g[j] + row_term[i] + factor * q_i . g_j``: one GEMM per block, bias fused into it.

    The prepared float32 operands (normalised or rescaled copies where needed) are :attr:`queries`,
    :attr:`gallery`, :attr:`bias`, :attr:`row_term` and :attr:`factor`; :meth:`scores` also takes gathered rows and
    columns, and :meth:`low_precision_scores` approximates a block by a bfloat16 GEMM (see
    :mod:`omlcore.retrieval.fast`).

    On CPU, oneDNN's fp32 GEMM (:func:`~omlcore.functional.linear.onednn_linear`) is used where it is usable: on
    some CPUs (e.g. AMD Zen with MKL) it is markedly faster than the BLAS behind ``torch.addmm``; both compute
    exact fp32 products.
    """

    def __init__(self, queries: Tensor, gallery: Tensor, metric: DistanceMetric, gemm: CpuGemm) -> None:
        self.scale = 1.0
        if metric == "cosine":  # the one full copy this class makes: normalised inputs
            queries = _normalize(queries)
            gallery = queries if gallery is queries else _normalize(gallery)
            self.row_term: Tensor | None = None
            self.bias = torch.ones(len(gallery), dtype=gallery.dtype, device=gallery.device)
            self.factor = -1.0  # 1 - q.g  ==  1 + (-q).g
        else:
            self.scale = _common_scale(queries, gallery)
            if self.scale != 1.0:  # out of float32's safe range: one scaled copy (exact, a power of two)
                same = gallery is queries
                queries = _scaled(queries, 1.0 / self.scale)
                gallery = queries if same else _scaled(gallery, 1.0 / self.scale)
            self.row_term = _squared_norms(queries)
            self.bias = self.row_term if gallery is queries else _squared_norms(gallery)
            self.factor = -2.0  # exact: a power of two
        on_cpu = gallery.device.type == "cpu"
        if gemm == "onednn" and not (on_cpu and onednn_usable()):
            raise RetrievalInputError(
                "cpu_gemm='onednn' needs CPU tensors and a PyTorch built with oneDNN (mkldnn), switched on "
                "(torch.backends.mkldnn.enabled)"
            )
        self.onednn = on_cpu and (gemm == "onednn" or (gemm == "auto" and onednn_usable()))
        self.queries = queries
        # oneDNN reads rows of contiguous memory: one copy of a strided gallery here, not one per block
        self.gallery = gallery.contiguous() if self.onednn else gallery
        self._buffer = torch.empty(0, dtype=gallery.dtype, device=gallery.device)
        self._gallery_low: Tensor | None = None

    def row_block(self, rows: slice | Tensor) -> Tensor:
        """The (scaled) queries of ``rows``, the GEMM's input."""
        return self.queries[rows].mul(self.factor)

    def scores(self, rows: slice | Tensor, prepared_rows: Tensor, cols: slice | Tensor) -> Tensor:
        """The float32 block for query ``rows`` (prepared by :meth:`row_block`) and gallery ``cols``: a slice, or
        int64 positions (a gathered block, computed by the same calls)."""
        gallery, bias = (self.gallery[cols], self.bias[cols]) if isinstance(cols, slice) else self._gather(cols)
        if self.onednn:
            out = onednn_linear(prepared_rows, gallery, bias)
        else:
            n_rows, n_cols = len(prepared_rows), len(gallery)
            if self._buffer.numel() < n_rows * n_cols:
                self._buffer = torch.empty(n_rows * n_cols, dtype=self.gallery.dtype, device=self.gallery.device)
            out = self._buffer[: n_rows * n_cols].view(n_rows, n_cols)
            torch.addmm(bias, prepared_rows, gallery.T, out=out)
        if self.row_term is not None:
            out.add_(self.row_term[rows, None])
        return out

    def _gather(self, cols: Tensor) -> tuple[Tensor, Tensor]:
        return self.gallery.index_select(0, cols), self.bias.index_select(0, cols)

    def low_precision_scores(self, rows: slice, prepared_rows: Tensor, cols: slice) -> Tensor:
        """An approximation of :meth:`scores` from one bfloat16 GEMM (``prepared_rows`` from
        :meth:`low_precision_rows`): the bfloat16 product, then the float32 bias and row term added."""
        if self._gallery_low is None:
            self._gallery_low = self.gallery.to(torch.bfloat16)
        out = torch.mm(prepared_rows, self._gallery_low[cols].T).float().add_(self.bias[cols])
        if self.row_term is not None:
            out.add_(self.row_term[rows, None])
        return out

    def low_precision_rows(self, rows: slice) -> Tensor:
        """:meth:`row_block` rounded to bfloat16."""
        return self.row_block(rows).to(torch.bfloat16)

    def blocks(
        self, chunk: int, symmetric: bool, low_precision: bool = False, columns: range | None = None
    ) -> Iterator[ScoreBlock]:
        """The blocks of :func:`iter_score_blocks`; with ``low_precision`` their :meth:`low_precision_scores`; with
        ``columns`` only the blocks of those gallery chunks (indices into the chunks of the whole gallery)."""
        row_slices = chunk_slices(len(self.queries), chunk)
        col_slices = row_slices if symmetric else chunk_slices(len(self.gallery), chunk)
        wanted = range(len(col_slices)) if columns is None else columns
        for i, rows in enumerate(row_slices):
            if symmetric and i > wanted.stop - 1:
                break
            prepared = self.low_precision_rows(rows) if low_precision else self.row_block(rows)
            for j, cols in enumerate(col_slices):
                if (symmetric and j < i) or j not in wanted:
                    continue
                if low_precision:
                    scores = self.low_precision_scores(rows, prepared, cols)
                else:
                    scores = self.scores(rows, prepared, cols)
                yield ScoreBlock(rows, cols, scores, mirrored=symmetric and j > i, scale=self.scale)


def _max_abs(x: Tensor) -> float:
    if not x.numel():
        return 0.0
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))


def _power_of_two_at(value: float) -> float:
    """``2^e`` with ``value / 2^e`` in ``[0.5, 1)``."""
    return math.ldexp(1.0, math.frexp(value)[1])


def _out_of_range(value: float) -> bool:
    return value >= _SAFE_MAX or 0.0 < value < _SAFE_MIN


def _common_scale(queries: Tensor, gallery: Tensor) -> float:
    """1, or the power of two that brings the largest entry of both sets into ``[0.5, 1)`` when it is out of range."""
    largest = max(_max_abs(queries), 0.0 if gallery is queries else _max_abs(gallery))
    return _power_of_two_at(largest) if _out_of_range(largest) else 1.0


def _scaled(x: Tensor, factors: Tensor | float, chunk: int = 8192) -> Tensor:
    """``x * factors`` (powers of two, per row or one) computed in float64 so that neither factor nor result
    leaves the range on the way: exact. Chunked, one output copy."""
    out = torch.empty_like(x)
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        part_factors = factors[rows] if isinstance(factors, Tensor) else factors
        out[rows] = (x[rows].double() * part_factors).to(x.dtype)
    return out


def _normalize(x: Tensor, chunk: int = 8192) -> Tensor:
    """Rows divided by their L2 norms, as ``torch.nn.functional.normalize`` (zero rows stay zero); a row whose norm
    overflows or underflows float32 is first scaled by a power of two."""
    out = torch.empty_like(x)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        norms = torch.linalg.vector_norm(part, dim=1, keepdim=True)
        unsafe = ~torch.isfinite(norms) | (norms < _SAFE_MIN)  # zero rows too: rare, and harmless to rescale
        if bool(unsafe.any()):
            largest = part.abs().amax(dim=1, keepdim=True) if part.shape[1] else norms
            exponents = torch.frexp(largest.double()).exponent.double()
            part = _scaled(part, torch.where(unsafe & (largest > 0), torch.exp2(-exponents), 1.0))
            norms = torch.linalg.vector_norm(part, dim=1, keepdim=True)
        torch.div(part, norms.clamp_min(1e-12), out=out[start : start + chunk])
    return out


def _squared_norms(x: Tensor, chunk: int = 8192) -> Tensor:
    """``||x_i||^2`` row by row, in chunks (no full-size temporary)."""
    return torch.cat([part.pow(2).sum(dim=1) for part in x.split(chunk)]) if len(x) else x.new_zeros(0)


def chunk_slices(n: int, chunk: int) -> list[slice]:
    """``[0, n)`` cut into consecutive slices of ``chunk`` (the last one shorter): the blocks' rows / columns."""
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
    Inputs of any floating dtype are scored in float32; scores record no gradient.
    ``cpu_gemm``: ``"auto"`` (oneDNN where usable, else BLAS), ``"onednn"`` or ``"blas"`` (``torch.addmm``).
    """
    if symmetric and queries is not gallery:
        raise ValueError("symmetric=True needs `queries is gallery`")
    chunk = chunk_size or default_chunk_size(queries.device)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    yield from make_scorer(queries, gallery, metric, cpu_gemm).blocks(chunk, symmetric)


def make_scorer(queries: Tensor, gallery: Tensor, metric: DistanceMetric, cpu_gemm: CpuGemm = "auto") -> Scorer:
    """The :class:`Scorer` of ``queries`` x ``gallery`` (float32 copies where needed; no gradient)."""
    same = gallery is queries
    queries = queries.detach().float()
    return Scorer(queries, queries if same else gallery.detach().float(), metric, cpu_gemm)
