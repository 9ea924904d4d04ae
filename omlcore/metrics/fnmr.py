"""FNMR@FMR over all query x gallery pairs, exactly as OML defines it, without materialising the pairs.

OML (``calc_fnmr_at_fmr_rr``) takes the distances of all non-excluded pairs, splits them into positive
(same label) distances ``u`` and negative distances ``v``, sets the threshold ``T = Q_v(fmr)`` (numpy's
linear quantile) and reports ``FNMR(T) = #{u_i >= T} / #u``:

    T = v_(lo) + g * (v_(hi) - v_(lo)),   h = (M - 1) * fmr,  lo = floor(h),  hi = lo + 1,  g = h - lo

for the ``M`` sorted negative distances. Positive pairs are few (about Q times the items per label); negative
pairs are almost all of Q x G. The order statistics ``v_(lo)``, ``v_(hi)`` are found by a radix select on the
float32 bit patterns of the *scores* (squared distances, or ``1 - cos``; negative scores count as 0): distances
are a monotone function of them, and non-negative floats sort like their bits.

- The pairs that are not negative (same label, or excluded) are enumerated sparsely, per label group and per
  exclusion key group (:func:`~omlcore.retrieval.results.equal_key_pairs`), never through a ``Q x G`` mask, and
  sorted by the score block that holds them; each block hands over their scores as it passes (the engine's very
  values), so the positives' distances cost nothing extra.
- One pass over the score blocks counts every pair per bit prefix (the top 19 bits, a 4 MiB histogram); the
  non-negative pairs are taken back out afterwards. The same pass also counts the low 12 bits inside the buckets
  where a sample of 1024 x 512 random negative pairs expects the order statistics; if one lands outside them
  after all (and a positive distance is close enough to matter), a second pass counts its bucket's low bits.

Memory: the histograms, the non-negative pairs and one block.
Reference: https://en.wikipedia.org/wiki/Biometrics#Performance
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from omlcore.retrieval.results import equal_key_pairs
from omlcore.retrieval.scores import (
    CpuGemm,
    DistanceMetric,
    Exclude,
    ScoreBlock,
    Scorer,
    default_chunk_size,
    is_symmetric,
    make_scorer,
    scores_to_distances,
)

__all__ = ["fnmr_at_fmr", "fnmr_at_fmr_from_distances"]

_LOW_BITS = 12
_N_BUCKETS = 1 << (31 - _LOW_BITS)  # non-negative float32: 31 significant bits
_LOW_MASK = (1 << _LOW_BITS) - 1


def _check_fmr(fmr_vals: Sequence[float]) -> None:
    if not len(fmr_vals) or not all(0.0 <= f <= 1.0 for f in fmr_vals):
        raise ValueError(f"fmr_vals must be a non-empty sequence of numbers in [0, 1], got {list(fmr_vals)}")


def _quantile_positions(m: int, fmr: float) -> tuple[int, int, float]:
    """numpy's "linear" quantile: the two order statistics and the weight (numpy's ``_get_indexes``)."""
    virtual = (m - 1) * fmr
    if virtual >= m - 1:
        return m - 1, m - 1, 0.0
    if virtual < 0:
        return 0, 0, 0.0
    lo = math.floor(virtual)
    return lo, lo + 1, virtual - lo


def _lerp(a: float, b: float, gamma: float) -> float:
    """numpy 1.26's ``_lerp`` on float32 bounds (the difference is taken in float32, the rest in float64)."""
    diff = float(np.float32(b) - np.float32(a))
    return b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma


def fnmr_at_fmr_from_distances(pos_dist: Tensor, neg_dist: Tensor, fmr_vals: Sequence[float]) -> Tensor:
    """FNMR@FMR from explicit positive / negative distances (OML's ``calc_fnmr_at_fmr``), for small inputs.

    ``T_f = Q_neg(f)`` (numpy linear quantile), ``FNMR = #{pos >= T_f} / #pos``; float64 ``(len(fmr_vals),)``.
    """
    _check_fmr(fmr_vals)
    thresholds = np.quantile(neg_dist.float().cpu().numpy(), list(fmr_vals))
    pos = pos_dist.float().cpu().numpy()
    return torch.tensor([(pos >= t).sum() / len(pos) for t in np.atleast_1d(thresholds)], dtype=torch.float64)


def _non_negative_pairs(
    query_labels: Tensor, gallery_labels: Tensor, exclude: Exclude, n_gallery: int
) -> tuple[Tensor, Tensor]:
    """All pairs that are not negative, as sorted codes ``q * G + g``, and which of them are positive.

    Not negative: the same label (positive, unless excluded) or excluded; enumerated per label group and per
    exclusion key group, never through a ``Q x G`` mask.
    """

    def code_of(query: Tensor, gallery: Tensor) -> Tensor:
        return query * n_gallery + gallery

    same = code_of(*equal_key_pairs(query_labels, gallery_labels, non_negative=False))  # sorted
    excluded = [code_of(*equal_key_pairs(query_keys, gallery_keys)) for query_keys, gallery_keys in exclude]
    if not excluded:
        return same, torch.ones_like(same, dtype=torch.bool)
    codes = torch.unique(torch.cat([same, *excluded]))
    bad = torch.unique(torch.cat(excluded))
    position = torch.searchsorted(bad, codes).clamp_max(len(bad) - 1)
    is_excluded = bad[position] == codes
    position = torch.searchsorted(same, codes).clamp_max(max(len(same) - 1, 0))
    is_same = same[position] == codes if len(same) else torch.zeros_like(codes, dtype=torch.bool)
    return codes, is_same & ~is_excluded


class _Specials:
    """The non-negative pairs sorted by the score block that holds them, to be read out of each block as it passes.

    In a symmetric search the pair ``(q, g)`` with ``g`` in an earlier chunk than ``q`` is the entry ``[g, q]`` of
    the block above the diagonal (the value the engine uses for both directions).
    """

    def __init__(self, codes: Tensor, n_gallery: int, chunk: int, n_col_chunks: int, symmetric: bool) -> None:
        query, gallery = codes // n_gallery, codes % n_gallery
        row_chunk, col_chunk = query // chunk, gallery // chunk
        flipped = col_chunk < row_chunk if symmetric else torch.zeros_like(query, dtype=torch.bool)
        block_row, block_col = torch.where(flipped, col_chunk, row_chunk), torch.where(flipped, row_chunk, col_chunk)
        key = block_row * n_col_chunks + block_col
        self.order = torch.sort(key, stable=True).indices
        self.key = key[self.order]
        self.row = torch.where(flipped, gallery, query)[self.order]
        self.col = torch.where(flipped, query, gallery)[self.order]
        self.chunk, self.n_col_chunks = chunk, n_col_chunks
        self.bits = torch.zeros(len(codes), dtype=torch.int32, device=codes.device)

    def read(self, block: ScoreBlock) -> None:
        """Keep the score bits of this block's pairs."""
        key = (block.rows.start // self.chunk) * self.n_col_chunks + block.cols.start // self.chunk
        first, last = (int(torch.searchsorted(self.key, key, right=right)) for right in (False, True))
        if first < last:
            part = slice(first, last)
            values = block.scores[self.row[part] - block.rows.start, self.col[part] - block.cols.start]
            self.bits[part] = values.view(torch.int32).clamp_min(0)

    def in_input_order(self) -> Tensor:
        """The score bits, in the order of the codes given."""
        bits = torch.empty_like(self.bits)
        bits[self.order] = self.bits
        return bits


def _distances(bits: Tensor, metric: DistanceMetric) -> Tensor:
    """float32 distances of score bits (non-negative scores), as :func:`scores_to_distances` computes them."""
    return scores_to_distances(bits.view(torch.float32), metric)


def _windows(
    scorer: Scorer, labels: tuple[Tensor, Tensor], exclude: Exclude, fractions: list[float], generator: torch.Generator
) -> list[int]:
    """Buckets expected to hold the negatives' order statistics at ``fractions``: around the quantiles of the
    negatives among ``1024 x 512`` random pairs, 12 standard deviations of a sample quantile (at most 48 buckets)
    to each side."""
    device = scorer.gallery.device
    rows = torch.randint(0, len(scorer.queries), (1024,), generator=generator).to(device)
    cols = torch.randint(0, len(scorer.gallery), (512,), generator=generator).to(device)
    negative = labels[0][rows, None] != labels[1][None, cols]
    for query_keys, gallery_keys in exclude:
        keys = query_keys[rows, None]
        negative &= (keys != gallery_keys[None, cols]) | (keys < 0)
    sample = scorer.scores(rows, scorer.row_block(rows), cols)[negative]
    sample = torch.sort(sample.view(torch.int32).clamp_min(0)).values >> _LOW_BITS
    n, buckets = len(sample), set[int]()
    for fraction in fractions if n else ():
        centre = fraction * (n - 1)
        half = 12 * math.sqrt(n * fraction * (1 - fraction)) + 16
        middle, low, high = (int(sample[min(max(int(v), 0), n - 1)]) for v in (centre, centre - half, centre + half))
        buckets.update(range(max(low, middle - 48), min(high, middle + 48) + 1))
    return sorted(buckets)


def fnmr_at_fmr(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    fmr_vals: Sequence[float],
    *,
    exclude: Exclude | None = None,
    metric: DistanceMetric = "l2",
    chunk_size: int | None = None,
    cpu_gemm: CpuGemm = "auto",
) -> Tensor:
    """FNMR at each FMR of ``fmr_vals`` over all non-excluded query x gallery pairs (see the module docstring).

    Args:
        queries, gallery: float ``(Q, D)`` / ``(G, D)``; ``queries is gallery`` computes each distance once.
        query_labels, gallery_labels: int64 ``(Q,)`` / ``(G,)``; equal labels make a positive pair.
        fmr_vals: false match rates in ``[0, 1]``.
        exclude: key pairs as in :class:`~omlcore.retrieval.knn.ExactKNN` (same item, same sequence).

    Returns:
        float64 ``(len(fmr_vals),)``; NaN when there are no positive or no negative pairs.
    """
    _check_fmr(fmr_vals)
    pairs = list(exclude or ())
    symmetric = is_symmetric(queries, gallery, pairs)
    device, n_queries, n_gallery = queries.device, len(queries), len(gallery)
    codes, positive = _non_negative_pairs(query_labels, gallery_labels, pairs, n_gallery)
    n_negative, n_positive = n_queries * n_gallery - len(codes), int(positive.sum())
    if n_negative == 0 or n_positive == 0:
        return torch.full((len(fmr_vals),), float("nan"), dtype=torch.float64)
    positions = [_quantile_positions(n_negative, float(f)) for f in fmr_vals]
    ranks = sorted({rank for lo, hi, _ in positions for rank in (lo, hi)})
    scorer = make_scorer(queries, gallery, metric, cpu_gemm)
    chunk = chunk_size or default_chunk_size(device)
    specials = _Specials(codes, n_gallery, chunk, math.ceil(n_gallery / chunk), symmetric)
    fractions = [rank / max(n_negative - 1, 1) for rank in ranks]
    windows = _windows(scorer, (query_labels, gallery_labels), pairs, fractions, torch.Generator().manual_seed(0))
    histogram, fine = _count(scorer, chunk, symmetric, windows, specials)
    special_bits = specials.in_input_order()
    special_buckets = (special_bits >> _LOW_BITS).long()
    histogram.index_add_(0, special_buckets, torch.full_like(special_buckets, -1))
    fine.take_out(special_bits)
    histogram = histogram.cpu()
    positive_bits = special_bits[positive].cpu()
    cumulative = torch.cumsum(histogram, 0)
    bucket_of = {rank: int(torch.searchsorted(cumulative, rank, right=True)) for rank in ranks}
    positive_buckets = positive_bits >> _LOW_BITS
    ambiguous = any(  # one bucket wider: for "l2", sqrt can round scores of neighbouring buckets to one distance
        bool(((positive_buckets >= bucket_of[lo] - 1) & (positive_buckets <= bucket_of[hi] + 1)).any())
        for lo, hi, _ in positions
    )
    if not ambiguous:  # the thresholds lie in buckets without positives: counting buckets suffices
        return torch.tensor(
            [float((positive_buckets > bucket_of[hi]).sum()) / n_positive for _, hi, _ in positions],
            dtype=torch.float64,
        )
    if any(bucket not in fine.slots for bucket in bucket_of.values()):
        # an order statistic outside the predicted windows: one more pass, for the fine counts of its buckets
        fine = _count(scorer, chunk, symmetric, sorted(set(bucket_of.values())), None)[1]
        fine.take_out(special_bits)
    values: dict[int, float] = {}
    for rank, bucket in bucket_of.items():
        before = int(cumulative[bucket] - histogram[bucket])
        low = int(torch.searchsorted(torch.cumsum(fine.counts(bucket), 0), rank - before, right=True))
        pattern = torch.tensor([(bucket << _LOW_BITS) | low], dtype=torch.int32)
        values[rank] = float(_distances(pattern, metric))
    positive_values = _distances(positive_bits, metric).double()
    result = []
    for lo, hi, gamma in positions:
        threshold = _lerp(values[lo], values[hi], gamma)
        result.append(float((positive_values >= threshold).sum()) / n_positive)
    return torch.tensor(result, dtype=torch.float64)


class _Fine:
    """The low 12 bits of the scores in chosen buckets: a 4096-bin histogram per bucket.

    A block is screened by one range test against the hull of the buckets, a lookup finds the chosen buckets among
    the few entries that pass, and their histogram positions are counted in batches of several blocks.
    """

    _BATCH = 1 << 22  # positions counted at once

    def __init__(self, buckets: list[int], device: torch.device) -> None:
        self.slots = {bucket: slot for slot, bucket in enumerate(buckets)}
        self.table = torch.full((_N_BUCKETS,), -1, dtype=torch.long, device=device)
        self.table[torch.tensor(buckets, dtype=torch.long, device=device)] = torch.arange(len(buckets), device=device)
        self.histogram = torch.zeros(len(buckets) << _LOW_BITS, dtype=torch.long, device=device)
        self.hull = (min(buckets) << _LOW_BITS, (max(buckets) + 1) << _LOW_BITS) if buckets else (0, 0)
        self._pending: dict[int, list[Tensor]] = {1: [], 2: []}  # positions by weight
        self._n_pending = 0

    def _index(self, bits: Tensor) -> Tensor:
        """Fine-histogram positions of the ``bits`` that lie in the chosen buckets."""
        chosen = bits[(bits >= self.hull[0]) & (bits < self.hull[1])].long()
        slot = self.table[chosen >> _LOW_BITS]
        keep = slot >= 0
        return (slot[keep] << _LOW_BITS) | (chosen[keep] & _LOW_MASK)

    def add(self, bits: Tensor, weight: int) -> None:
        if not self.slots:
            return
        index = self._index(bits)
        self._pending[weight].append(index)
        self._n_pending += len(index)
        if self._n_pending > self._BATCH:
            self._flush()

    def _flush(self) -> None:
        for weight, parts in self._pending.items():
            if parts:
                counts = torch.bincount(torch.cat(parts), minlength=len(self.histogram))
                self.histogram.add_(counts, alpha=weight)
                parts.clear()
        self._n_pending = 0

    def take_out(self, bits: Tensor) -> None:
        self._flush()
        index = self._index(bits)
        self.histogram.index_add_(0, index, torch.full_like(index, -1))

    def counts(self, bucket: int) -> Tensor:
        self._flush()
        slot = self.slots[bucket]
        return self.histogram[slot << _LOW_BITS : (slot + 1) << _LOW_BITS].cpu()


def _count(
    scorer: Scorer, chunk: int, symmetric: bool, fine_buckets: list[int], specials: _Specials | None
) -> tuple[Tensor, _Fine]:
    """One pass over the score blocks: the histogram of all pairs' score buckets (mirrored blocks count twice),
    the fine histograms of ``fine_buckets``, and the special pairs' bits read out on the way."""
    device = scorer.gallery.device
    histogram = torch.zeros(_N_BUCKETS, dtype=torch.long, device=device)
    fine = _Fine(fine_buckets, device)
    for block in scorer.blocks(chunk, symmetric):
        if specials is not None:
            specials.read(block)
        bits = block.scores.view(torch.int32).clamp_min_(0).view(-1)  # negative scores (and -0.0): distance 0
        buckets = bits >> _LOW_BITS
        weight = 2 if block.mirrored else 1
        low, high = (int(v) for v in torch.aminmax(buckets))  # count over the block's own range of buckets only
        histogram[low : high + 1] += torch.bincount(buckets - low, minlength=high - low + 1) * weight
        fine.add(bits, weight)
    return histogram, fine
