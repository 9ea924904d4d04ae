"""Certified fast exact kNN: bfloat16 candidates, float32 rescoring by the engine's own calls, a certificate.

The result equals :class:`~omlcore.retrieval.knn.ExactKNN`'s exact path bit for bit (ids, distances, tie rule):

1. Candidates: every block of scores comes from one bfloat16 GEMM (:meth:`Scorer.low_precision_scores`) and is
   folded into a running top-``w`` (``w = k + m``) with the exact engine's screening and exclusions.
2. Rescoring: the ``w`` candidates of each query are scored by the engine's float32 GEMM calls
   (:meth:`Scorer.scores` on gathered rows and columns, a pair in the orientation the engine's block computes it
   in: in a symmetric search a pair whose gallery item lies in an earlier chunk is a row of the block), then the
   ``k`` smallest ``(score, gallery index)`` pairs are kept: the engine's tie rule.
3. Certificate: with ``S`` the real score of the engine's float32 operands, ``s~`` the approximate and ``s`` the
   engine's float32 score of a pair, ``|s~ - S| <= E(q)`` and ``|s - S| <= F(q)`` for every gallery item. An item
   outside the candidates has ``s~ >= t_q`` (the ``w``-th candidate's approximate score), so
   ``s >= t_q - E - F``. Where ``t_q - E - F > s_k`` (the ``k``-th rescored score), no item outside the candidates
   can enter the top ``k``, not even by a tie. Other queries are scored against the whole gallery by the same
   float32 calls ("fallback").

The bounds, for scores ``S = b_g + r_q + f q.g`` (``f = -2``, ``b``, ``r`` squared norms for ``"l2"``; ``f = -1``,
``b = 1``, ``r = 0`` for ``"cosine"``), ``D`` dimensions, unit roundoffs ``u_b = 2^-8`` (bfloat16) and
``u = 2^-24`` (float32), ``gamma_n = n u / (1 - n u)``, ``P = |f| ||q|| max_g ||g||`` and ``B = max_g |b_g| +
|r_q|``:

- ``E = c P + gamma_3 (B + (1 + c) P)`` with ``c = (1 + u_b)^3 (1 + gamma_D) - 1``: both operands rounded to
  bfloat16, float32 accumulation in any order, the product rounded to bfloat16, then two float32 additions;
- ``F = gamma_(D+3) (B + P)``: the float32 GEMM in any order, its fused bias and the row term;
- plus ``2^-120 |f| (D + 1)(1 + ||q|| + max ||g||)`` for underflow, and ``2^-20`` relative for the test itself.

Bit equality of the rescored scores rests on the GEMM computing an entry by the same arithmetic whatever block it
is in. oneDNN's and MKL's CPU kernels do so for blocks of at least a few rows and columns (not for one row: a
matrix-vector kernel), so gathered blocks are padded to 64 rows and columns, and before each search a probe
compares gathered scores with the engine's own blocks (the first and the last, on the actual operands); where they
differ the exact path runs instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Literal

import torch
from torch import Tensor

from omlcore.retrieval.scores import CpuGemm, Exclusions, Scorer, chunk_slices
from omlcore.retrieval.topk import RunningTopK, absorb, fold, smallest_pairs

__all__ = ["FAST_ENV", "FastMode", "FastSearchStats", "fast_pays", "fast_topk", "fast_usable", "resolve_mode"]

FastMode = Literal["auto", "on", "off"]
#: Environment variable that overrides ``fast="auto"``: ``on``, ``off`` or ``auto``.
FAST_ENV = "OMLCORE_FAST_KNN"

_INF = float("inf")
_UNIT_BF16 = 2.0**-8
_UNIT_FP32 = 2.0**-24
_ROWS = 64  # queries rescored together
_MIN_SIDE = 64  # gathered blocks have at least this many rows and columns (padded by repetition)
_MIN_PAIRS = 1 << 28  # "auto": smaller searches run the exact path (the one-off trial would cost too much)
_SPEEDUP_NEEDED = 1.6  # "auto": the bfloat16 block GEMM must beat the float32 one by this factor
_TRIAL_CHUNKS = 4  # "auto": the end-to-end trial searches this many chunks of items
_measured: dict[tuple[str, int, int, bool], bool] = {}


@dataclass(frozen=True)
class FastSearchStats:
    """What the fast path of one search did."""

    n_queries: int
    n_certified: int
    n_candidates: int
    candidate_seconds: float
    rescore_seconds: float
    fallback_seconds: float

    @property
    def certified_fraction(self) -> float:
        return self.n_certified / self.n_queries if self.n_queries else 1.0


def _gamma(n: int) -> float:
    return n * _UNIT_FP32 / (1 - n * _UNIT_FP32)


def fast_usable(device: torch.device) -> str | None:
    """None where the certificate's assumptions hold, else why not: float32 GEMMs must be exact float32."""
    if torch.get_float32_matmul_precision() != "highest":
        return "torch.get_float32_matmul_precision() is not 'highest' (float32 GEMMs may run in lower precision)"
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "torch.backends.cuda.matmul.allow_tf32 is on (float32 GEMMs run in TF32)"
    if device.type not in ("cpu", "cuda"):
        return f"no fast path on {device.type} tensors"
    return None


@contextmanager
def _float32_reductions(device: torch.device) -> Iterator[None]:
    """On CUDA, bfloat16 GEMMs accumulate in float32 (no reduced-precision split-K reductions) inside."""
    if device.type != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul
    before = flags.allow_bf16_reduced_precision_reduction
    flags.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        flags.allow_bf16_reduced_precision_reduction = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fast_pays(scorer: Scorer, chunk: int, n_pairs: int) -> bool:
    """The measured rule of ``fast="auto"``, for searches of at least ``2^28`` pairs: on this device

    1. the bfloat16 GEMM of a ``chunk x D x chunk`` block is at least 1.6 times as fast as the engine's float32 one
       (the median of 3 alternating timings each), and
    2. an end-to-end trial, a symmetric top-5 search of ``4 x chunk`` clustered unit-norm items (each excluding
       itself), takes less time by the fast path than by the exact one (the faster of 2 alternating runs each).

    A fast GEMM is not enough: the fast path screens ``k + 27`` candidates per query instead of ``k`` and rescores
    them, which on a 2-core AVX-512 BF16 CPU cost more than the GEMM saves (1.86x faster GEMM, 1.41x slower search at
    N = 50,000; benchmarks/README.md). Measured once per device, dimension, chunk and GEMM kind (about a second on
    a CPU)."""
    if n_pairs < _MIN_PAIRS:
        return False
    device, dim = scorer.gallery.device, scorer.gallery.shape[1]
    key = (str(device), dim, chunk, scorer.onednn)
    if key not in _measured:
        gemm: CpuGemm = "onednn" if scorer.onednn else "blas"
        _measured[key] = _gemm_ratio(device, dim, chunk, gemm) >= _SPEEDUP_NEEDED and _trial_pays(
            device, dim, chunk, gemm
        )
    return _measured[key]


def _alternating_timings(
    device: torch.device, actions: dict[bool, Callable[[], object]], rounds: int
) -> dict[bool, list[float]]:
    """Seconds of each action over ``rounds`` rounds, the actions alternating within a round (so that a noisy
    spell of a shared machine hits both alike)."""
    timings: dict[bool, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            _sync(device)
            start = time.perf_counter()
            action()
            _sync(device)
            timings[name].append(time.perf_counter() - start)
    return timings


def _gemm_ratio(device: torch.device, dim: int, chunk: int, gemm: CpuGemm) -> float:
    """How many times faster the bfloat16 block GEMM is than the float32 one (median of 3 alternating timings,
    after one untimed round)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(chunk, dim, generator=generator).to(device)
    probe = Scorer(rows, torch.randn(chunk, dim, generator=generator).to(device), "cosine", gemm)
    whole = slice(0, chunk)
    exact_rows, low_rows = probe.row_block(whole), probe.low_precision_rows(whole)
    actions: dict[bool, Callable[[], object]] = {
        False: lambda: probe.scores(whole, exact_rows, whole),
        True: lambda: probe.low_precision_scores(whole, low_rows, whole),
    }
    with _float32_reductions(device):
        timings = _alternating_timings(device, actions, 4)
    median = {low: sorted(values[1:])[1] for low, values in timings.items()}
    return median[False] / max(median[True], 1e-12)


def _trial_pays(device: torch.device, dim: int, chunk: int, gemm: CpuGemm, k: int = 5) -> bool:
    """Whether the fast path beats the exact one on a symmetric search of ``4 x chunk`` clustered unit-norm items
    (clusters of 8 around random centres, as benchmarks/retrieval.py draws them), each excluding itself: the faster
    of 2 alternating runs each, after one untimed round (where an unreproducible probe makes the fast path lose)."""
    generator = torch.Generator().manual_seed(0)
    n = _TRIAL_CHUNKS * chunk
    centres = torch.randn(n // 8 + 1, dim, generator=generator)
    items = torch.randn(n, dim, generator=generator).mul_(2.0).add_(centres[torch.arange(n) // 8])
    items = torch.nn.functional.normalize(items, dim=1).to(device)
    scorer = Scorer(items, items, "cosine", gemm)
    keys = torch.arange(n, device=device)
    exclusions = Exclusions([(keys, keys)])
    actions: dict[bool, Callable[[], object]] = {
        False: lambda: fold(RunningTopK(n, k, device), scorer.blocks(chunk, True), exclusions),
        True: lambda: fast_topk(scorer, k, chunk, True, exclusions),
    }
    actions[False]()
    if actions[True]() is None:
        return False
    timings = _alternating_timings(device, actions, 2)
    return min(timings[True]) < min(timings[False])


def _padded(positions: Tensor) -> Tensor:
    """``positions`` repeated at the end up to :data:`_MIN_SIDE` entries."""
    if len(positions) >= _MIN_SIDE:
        return positions
    return torch.cat([positions, positions[:1].expand(_MIN_SIDE - len(positions))])


@dataclass(frozen=True)
class _Layout:
    """The engine's chunks of queries and gallery; a chunk shorter than :data:`_MIN_SIDE` is *thin*."""

    chunk: int
    n_gallery: int
    symmetric: bool

    @cached_property
    def thin_chunks(self) -> list[slice]:
        return [part for part in chunk_slices(self.n_gallery, self.chunk) if part.stop - part.start < _MIN_SIDE]

    def runs(self, items: Tensor, split: int) -> list[tuple[int, int, slice | None]]:
        """Sorted gallery ``items`` cut at ``split`` and around thin chunks: ``(start, stop, thin chunk or None)``."""
        cuts = {0, split, len(items)}
        if self.thin_chunks:
            edges = torch.tensor([e for part in self.thin_chunks for e in (part.start, part.stop)], device=items.device)
            cuts.update(torch.searchsorted(items, edges).tolist())
        bounds = sorted(cuts)
        found = []
        for start, stop in pairwise(bounds):
            if start < stop:
                found.append((start, stop, self._thin_chunk_of(int(items[start])) if self.thin_chunks else None))
        return found

    def _thin_chunk_of(self, position: int) -> slice | None:
        part = slice(
            position // self.chunk * self.chunk, min((position // self.chunk + 1) * self.chunk, self.n_gallery)
        )
        return part if part.stop - part.start < _MIN_SIDE else None


def _block(scorer: Scorer, rows: slice | Tensor, cols: slice | Tensor) -> Tensor:
    """A float32 block by the engine's call; row and column lists are padded (gathered blocks are never thin)."""
    rows, cols = (_padded(x) if isinstance(x, Tensor) else x for x in (rows, cols))
    return scorer.scores(rows, scorer.row_block(rows), cols).clone()


def _engine_scores(scorer: Scorer, layout: _Layout, group: Tensor, row_chunk: slice, items: Tensor) -> Tensor:
    """float32 scores ``(len(group), len(items))`` of the queries ``group`` (all of the engine's row chunk
    ``row_chunk``) and the sorted gallery ``items``, each pair by a call like the engine's block that holds it: in a
    symmetric search a pair whose gallery item lies in an earlier chunk is a row of that block, the query a column;
    a thin chunk takes part whole (the engine's own shape)."""
    thin_rows = row_chunk.stop - row_chunk.start < _MIN_SIDE
    group_operand: slice | Tensor = row_chunk if thin_rows else group
    group_rows: slice | Tensor = group - row_chunk.start if thin_rows else slice(0, len(group))
    split = int(torch.searchsorted(items, row_chunk.start)) if layout.symmetric else 0
    pieces = [torch.empty(len(group), 0, device=group.device)]
    for start, stop, thin in layout.runs(items, split):
        part = items[start:stop]
        operand: slice | Tensor = part if thin is None else thin
        item_rows: slice | Tensor = slice(0, len(part)) if thin is None else part - thin.start
        if stop <= split:
            block = _block(scorer, operand, group_operand)[item_rows].T
        else:
            block = _block(scorer, group_operand, operand)[:, item_rows]
        pieces.append(block[group_rows])
    return torch.cat(pieces, dim=1)


def _reproducible(scorer: Scorer, layout: _Layout, n_queries: int) -> bool:
    """The probe: :func:`_engine_scores` of groups and item sets of several sizes, drawn from the engine's first and
    last row and column chunks, equal the entries of the engine's own blocks bit for bit."""
    row_slices = chunk_slices(n_queries, layout.chunk)
    col_slices = chunk_slices(layout.n_gallery, layout.chunk)
    generator = torch.Generator().manual_seed(0)
    device = scorer.gallery.device
    for i in sorted({0, len(row_slices) - 1}):
        for j in sorted({0, len(col_slices) - 1}):
            rows, cols = row_slices[i], col_slices[j]
            flipped = layout.symmetric and j < i
            block = _block(scorer, cols, rows).T if flipped else _block(scorer, rows, cols)
            for size_rows, size_cols in ((1, 300), (17, 1), (_ROWS, 70)):
                local_rows = torch.randint(0, len(block), (size_rows,), generator=generator).to(device)
                local_cols = torch.randint(0, block.shape[1], (size_cols,), generator=generator).sort().values
                local_cols = local_cols.to(device)
                got = _engine_scores(scorer, layout, local_rows + rows.start, rows, local_cols + cols.start)
                expected = block[local_rows[:, None], local_cols[None, :]]
                if not torch.equal(got.view(torch.int32), expected.view(torch.int32)):
                    return False
    return True


def _bounds(scorer: Scorer, chunk: int = 8192) -> Tensor:
    """float64 ``(Q,)``: ``E + F`` plus the underflow term and the test's margin (see the module docstring)."""
    dim = scorer.gallery.shape[1]
    factor = abs(scorer.factor)

    def norms(x: Tensor) -> Tensor:
        return torch.cat([torch.linalg.vector_norm(part.double(), dim=1) for part in x.split(chunk)]) * (1 + 2.0**-40)

    query_norms = norms(scorer.queries)
    gallery_max = float(norms(scorer.gallery).max()) if len(scorer.gallery) else 0.0
    bias_max = float(scorer.bias.double().abs().max()) if len(scorer.bias) else 0.0
    row = scorer.row_term.double().abs() if scorer.row_term is not None else torch.zeros_like(query_norms)
    product = factor * query_norms * gallery_max
    spread = bias_max + row
    c = (1 + _UNIT_BF16) ** 3 * (1 + _gamma(dim)) - 1
    low = c * product + _gamma(3) * (spread + (1 + c) * product)
    exact = _gamma(dim + 3) * (spread + product)
    underflow = 2.0**-120 * factor * (dim + 1) * (1 + query_norms + gallery_max)
    return (low + exact + underflow) * (1 + 2.0**-20)


def _rescore(scorer: Scorer, layout: _Layout, group: slice, row_chunk: slice, candidates: Tensor) -> Tensor:
    """float32 engine scores ``(R, w)`` of the queries ``group`` (of the engine's ``row_chunk``) and their
    ``candidates`` (``-1``: none, scored ``inf``)."""
    valid = candidates >= 0
    union = torch.unique(candidates[valid])
    out = torch.full(candidates.shape, _INF, device=candidates.device)
    if not len(union):
        return out
    positions = torch.arange(group.start, group.stop, device=candidates.device)
    scores = _engine_scores(scorer, layout, positions, row_chunk, union)
    where = torch.searchsorted(union, candidates.clamp_min(0)).clamp_max(len(union) - 1)
    return torch.where(valid, scores.gather(1, where), out)


def _fallback(
    scorer: Scorer, layout: _Layout, queries: Tensor, k: int, exclusions: Exclusions
) -> tuple[Tensor, Tensor]:
    """The exact top-k of ``queries`` (sorted positions) against the whole gallery, scored by the engine's calls."""
    exclude = Exclusions([(query_keys[queries], gallery_keys) for query_keys, gallery_keys in exclusions.pairs])
    topk = RunningTopK(len(queries), k, queries.device)
    row_slices = chunk_slices(len(scorer.queries), layout.chunk)
    chunk_of_query = (queries // layout.chunk).tolist()
    done: list[slice] = []
    start = 0
    while start < len(queries):
        own = chunk_of_query[start]
        stop = min(start + _ROWS, len(queries))
        while chunk_of_query[stop - 1] != own:
            stop -= 1
        rows = slice(start, stop)
        for cols in chunk_slices(layout.n_gallery, layout.chunk):
            items = torch.arange(cols.start, cols.stop, device=queries.device)
            scores = _engine_scores(scorer, layout, queries[rows], row_slices[own], items)
            absorb(topk, scores, rows, cols, False, exclude.between(rows, cols))
        done.append(rows)
        start = stop
    topk.flush(done)
    return topk.values, topk.indices


def fast_topk(
    scorer: Scorer, k: int, chunk: int, symmetric: bool, exclusions: Exclusions
) -> tuple[Tensor, Tensor, FastSearchStats] | None:
    """The exact engine's top-``k`` scores and gallery positions ``(Q, k)`` by the certified fast path, or None
    where the probe finds the engine's float32 scores not reproducible by gathered calls (run the exact path)."""
    device = scorer.gallery.device
    n_queries, n_gallery = len(scorer.queries), len(scorer.gallery)
    layout = _Layout(chunk, n_gallery, symmetric)
    if not _reproducible(scorer, layout, n_queries):
        return None
    width = min(k + max(27, k), n_gallery)
    started = time.perf_counter()
    candidates = RunningTopK(n_queries, width, device)
    with _float32_reductions(device):
        fold(candidates, scorer.blocks(chunk, symmetric, low_precision=True), exclusions)
    _sync(device)
    rescoring = time.perf_counter()
    values = torch.full((n_queries, k), _INF, device=device)
    indices = torch.full((n_queries, k), -1, dtype=torch.long, device=device)
    for rows in chunk_slices(n_queries, chunk):
        for start in range(rows.start, rows.stop, _ROWS):
            group = slice(start, min(start + _ROWS, rows.stop))
            scores = _rescore(scorer, layout, group, rows, candidates.indices[group])
            values[group], indices[group] = smallest_pairs(scores, candidates.indices[group], k)
    full = candidates.indices[:, -1] >= 0
    margin = candidates.values[:, -1].double() - values[:, -1].double()
    certified = ~full | (width >= n_gallery) | (margin > _bounds(scorer))
    _sync(device)
    falling_back = time.perf_counter()
    uncertain = (~certified).nonzero().flatten()
    if len(uncertain):
        values[uncertain], indices[uncertain] = _fallback(scorer, layout, uncertain, k, exclusions)
    _sync(device)
    stats = FastSearchStats(
        n_queries=n_queries,
        n_certified=n_queries - len(uncertain),
        n_candidates=width,
        candidate_seconds=rescoring - started,
        rescore_seconds=falling_back - rescoring,
        fallback_seconds=time.perf_counter() - falling_back,
    )
    return values, indices, stats


def resolve_mode(mode: FastMode) -> FastMode:
    """``mode``, where ``"auto"`` yields to the :data:`FAST_ENV` environment variable when that is set."""
    if mode != "auto":
        return mode
    value = os.environ.get(FAST_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "on", "off"):
        raise ValueError(f"{FAST_ENV}={value!r}: use 'auto', 'on' or 'off'")
    return value  # type: ignore[return-value]
