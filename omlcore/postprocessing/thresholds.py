"""Distance thresholds that shorten each query's row: OML 4.0's ``ConstantThresholding`` and ``AdaptiveThresholding``.

Both only drop items from the end of a row (rows are sorted), so the kept items keep their order and distances;
dropped positions become padding ``(inf, -1)`` and columns that no row uses any more are removed. A row may become
empty; queries are never dropped.
"""

from __future__ import annotations

import math

import torch

from omlcore.postprocessing.base import RetrievalContext, with_rows
from omlcore.retrieval.results import RetrievalResults

__all__ = ["AdaptiveThresholding", "ConstantThresholding"]


def _number(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a real number (not NaN), got {value!r}")
    return value


def _keep_first(results: RetrievalResults, counts: torch.Tensor) -> RetrievalResults:
    """``results`` with only the first ``counts[q]`` items of every row ``q``."""
    columns = torch.arange(results.top_k, device=counts.device)
    keep = columns[None, :] < counts[:, None]
    distances = torch.where(keep, results.distances, math.inf)
    ids = torch.where(keep, results.retrieved_ids, -1)
    return with_rows(results, distances, ids)


class ConstantThresholding:
    """Keep the items closer than ``th``: distance ``< th`` (strictly), as OML 4.0's ``ConstantThresholding``.

    Args:
        th: the distance threshold (``inf`` keeps everything; ``-inf`` empties every row).
    """

    def __init__(self, th: float) -> None:
        self.th = _number("th", th)

    def __repr__(self) -> str:
        return f"ConstantThresholding(th={self.th!r})"

    def process(self, results: RetrievalResults, context: RetrievalContext | None = None) -> RetrievalResults:
        # ``tensor < float`` compares in the distances' dtype, exactly as OML does
        closer = (results.distances < self.th) & (results.retrieved_ids >= 0)
        return _keep_first(results, closer.sum(dim=1))


class AdaptiveThresholding:
    """Cut each row before its first large gap, as OML 4.0's ``AdaptiveThresholding``.

    With ``mean_gap`` the mean of the consecutive gaps ``d[i+1] - d[i]`` over all rows, a row ``d[0..n-1]`` is cut
    after the first ``i`` where ``d[i+1] - d[i] > n_std * mean_gap`` (it keeps ``d[0..i]``); rows without such a
    gap stay whole. A row keeps at least one item, so rows are never emptied.

    The mean is taken in float64 and rounded to the distances' dtype; OML accumulates a float32 running mean per
    row, which can differ in the last bits (only a gap within that rounding of the threshold could be cut
    differently). OML raises ``ZeroDivisionError`` when its first query retrieved fewer than two items; here rows
    shorter than two items simply contribute no gaps, and results without any gap are returned unchanged.

    Args:
        n_std: the gap threshold in units of the mean gap; the smaller, the shorter the rows.
    """

    def __init__(self, n_std: float) -> None:
        self.n_std = _number("n_std", n_std)

    def __repr__(self) -> str:
        return f"AdaptiveThresholding(n_std={self.n_std!r})"

    def process(self, results: RetrievalResults, context: RetrievalContext | None = None) -> RetrievalResults:
        distances = results.distances
        gaps = distances[:, 1:] - distances[:, :-1]
        has_gap = results.retrieved_ids[:, 1:] >= 0
        if not bool(has_gap.any()):
            return results
        mean_gap = gaps[has_gap].double().mean().to(distances.dtype)
        large = has_gap & (gaps > self.n_std * mean_gap)
        first_large = large.to(torch.int8).argmax(dim=1)
        counts = torch.where(large.any(dim=1), first_large + 1, results.n_retrieved)
        return _keep_first(results, counts)
