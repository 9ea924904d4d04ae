"""Test oracle: FNMR@FMR as omlcore computed it before the sparse enumeration of positive pairs (commit 44077aa).

Dense same-label masks per score block, distance bits, a second pass when needed. The current
:func:`omlcore.metrics.fnmr_at_fmr` must give exactly its results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from omlcore.metrics.fnmr import _check_fmr, _lerp, _quantile_positions
from omlcore.retrieval.scores import (
    CpuGemm,
    DistanceMetric,
    Exclude,
    Exclusions,
    is_symmetric,
    iter_score_blocks,
    scores_to_distances,
)

__all__ = ["dense_fnmr_at_fmr"]

_LOW_BITS = 12
_N_BUCKETS = 1 << (31 - _LOW_BITS)  # non-negative float32: 31 significant bits
_LOW_MASK = (1 << _LOW_BITS) - 1


def _non_negative_pairs(
    rows: slice, cols: slice, query_labels: Tensor, gallery_labels: Tensor, exclude: Exclude
) -> tuple[Tensor, Tensor]:
    """The block's pairs that are not negative, as flat positions, and which of them are positive.

    Not negative: same label (positive, unless excluded) or excluded. These are few (about the items per label
    per query), so the negatives are counted as "every pair minus these" without a mask copy of the block.
    """
    same = query_labels[rows, None] == gallery_labels[None, cols]
    excluded = None
    for query_keys, gallery_keys in exclude:
        keys = query_keys[rows, None]
        pair = (keys == gallery_keys[None, cols]) & (keys >= 0)
        excluded = pair if excluded is None else excluded | pair
    if excluded is None:
        flat = same.view(-1).nonzero().squeeze(1)
        return flat, torch.ones_like(flat, dtype=torch.bool)
    flat = (same | excluded).view(-1).nonzero().squeeze(1)
    return flat, same.view(-1)[flat] & ~excluded.view(-1)[flat]


def dense_fnmr_at_fmr(
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
    exclusions = Exclusions(pairs)
    histogram = torch.zeros(_N_BUCKETS, dtype=torch.long, device=queries.device)
    positives: list[Tensor] = []

    def bit_blocks() -> Iterator[tuple[Tensor, Tensor, Tensor, int]]:
        """Per block: all distance bits, those of its non-negative pairs and which of them are positive, and 2 for
        mirrored blocks (both directions)."""
        for block in iter_score_blocks(
            queries, gallery, metric, symmetric=symmetric, chunk_size=chunk_size, cpu_gemm=cpu_gemm
        ):
            bits = scores_to_distances(block.scores, metric).view(torch.int32).clamp_min_(0)  # -0.0 -> 0.0
            active = exclusions.between(block.rows, block.cols)  # symmetric searches have symmetric pairs
            flat, positive = _non_negative_pairs(block.rows, block.cols, query_labels, gallery_labels, active)
            yield bits, bits.view(-1)[flat], positive, 2 if block.mirrored else 1

    for bits, special, positive, weight in bit_blocks():
        positives.extend([special[positive]] * weight)
        buckets = bits >> _LOW_BITS
        low, high = (int(v) for v in torch.aminmax(buckets))  # count over the block's own range of buckets only
        histogram[low : high + 1] += torch.bincount(buckets.view(-1) - low, minlength=high - low + 1) * weight
        special_buckets = (special >> _LOW_BITS).long()  # ... then take the non-negative pairs back out
        histogram.index_add_(0, special_buckets, torch.full_like(special_buckets, -weight))
    histogram = histogram.cpu()
    positive_bits = torch.cat(positives).cpu() if positives else torch.zeros(0, dtype=torch.int32)
    n_negative, n_positive = int(histogram.sum()), len(positive_bits)
    if n_negative == 0 or n_positive == 0:
        return torch.full((len(fmr_vals),), float("nan"), dtype=torch.float64)
    cumulative = torch.cumsum(histogram, 0)
    positions = [_quantile_positions(n_negative, float(f)) for f in fmr_vals]
    ranks = sorted({rank for lo, hi, _ in positions for rank in (lo, hi)})
    bucket_of = {rank: int(torch.searchsorted(cumulative, rank, right=True)) for rank in ranks}
    positive_buckets = positive_bits >> _LOW_BITS
    ambiguous = any(
        bool(((positive_buckets >= bucket_of[lo]) & (positive_buckets <= bucket_of[hi])).any())
        for lo, hi, _ in positions
    )
    if not ambiguous:  # the thresholds lie in buckets without positives: counting buckets suffices
        return torch.tensor(
            [float((positive_buckets > bucket_of[hi]).sum()) / n_positive for _, hi, _ in positions],
            dtype=torch.float64,
        )
    targets = sorted(set(bucket_of.values()))
    low_histograms = {b: torch.zeros(1 << _LOW_BITS, dtype=torch.long, device=queries.device) for b in targets}
    for bits, special, _, weight in bit_blocks():
        buckets, special_buckets = bits >> _LOW_BITS, special >> _LOW_BITS
        for bucket in targets:
            selected = bits[buckets == bucket] & _LOW_MASK
            low_histograms[bucket] += torch.bincount(selected, minlength=1 << _LOW_BITS) * weight
            taken_out = (special[special_buckets == bucket] & _LOW_MASK).long()
            low_histograms[bucket].index_add_(0, taken_out, torch.full_like(taken_out, -weight))
    values: dict[int, float] = {}
    for rank, bucket in bucket_of.items():
        before = int(cumulative[bucket] - histogram[bucket])
        low_cumulative = torch.cumsum(low_histograms[bucket].cpu(), 0)
        low = int(torch.searchsorted(low_cumulative, rank - before, right=True))
        pattern = torch.tensor([(bucket << _LOW_BITS) | low], dtype=torch.int32)
        values[rank] = float(pattern.view(torch.float32))
    positive_values = positive_bits.view(torch.float32).double()
    result = []
    for lo, hi, gamma in positions:
        threshold = _lerp(values[lo], values[hi], gamma)
        result.append(float((positive_values >= threshold).sum()) / n_positive)
    return torch.tensor(result, dtype=torch.float64)
