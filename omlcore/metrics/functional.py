"""Retrieval metrics as pure tensor functions, per query (unreduced), vectorised over all queries.

Every function takes the top-K of each query as ``is_relevant`` (bool ``(Q, K)``, False on padding), the row
lengths ``n_retrieved`` (``(Q,)``: fewer than K where exclusions or a small gallery left fewer candidates) and
``n_relevant`` (``(Q,)``: relevant gallery items that exist, see :mod:`omlcore.retrieval.results`), and returns
float64 ``(Q,)``. Notation for one query: ``rel_i`` is 1 when the i-th retrieved item is relevant, ``n`` its
``n_relevant``, ``m`` its ``n_retrieved``, ``k' = min(k, m)`` and ``hits_j = sum_{i<=j} rel_i``.

Two families:

- OML 4.0 (``cmc_at_k``, ``precision_at_k``, ``map_at_k``): exactly OML's definitions and edge cases. A query
  with an empty row scores 1 when it has no relevant item and 0 otherwise; a query with no relevant item but a
  non-empty row scores CMC 0, mAP 0 and precision ``0/0 = NaN`` (OML's value, which makes the mean NaN).
- pytorch-metric-learning 2.9 (``precision_at_1``, ``r_precision``, ``map_at_r``, ``mean_reciprocal_rank``):
  PML's ``AccuracyCalculator`` definitions. Queries without relevant items ("lone" queries) are NaN and left
  out of PML's means (:func:`reduce_mean` with ``skip_nan=True``). They need ``K >= n`` for every query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "cmc_at_k",
    "flatten_metrics",
    "map_at_k",
    "map_at_r",
    "mean_reciprocal_rank",
    "pcf",
    "precision_at_1",
    "precision_at_k",
    "r_precision",
    "reciprocal_rank",
    "reduce_mean",
    "worst_queries",
]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _empty_row_value(n_retrieved: Tensor, n_relevant: Tensor, value: Tensor) -> Tensor:
    """OML's rule for empty rows: 1 when nothing was relevant either, else 0."""
    return torch.where(n_retrieved == 0, (n_relevant == 0).double(), value)


def cmc_at_k(is_relevant: Tensor, n_retrieved: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Cumulative matching characteristic (OML): ``cmc@k = 1 if hits_k' > 0 else 0``.

    See OML's ``calc_cmc``; an empty row gives ``1`` if ``n == 0`` else ``0``.
    """
    _check_k(k)
    return _empty_row_value(n_retrieved, n_relevant, is_relevant[:, :k].any(dim=1).double())


def precision_at_k(is_relevant: Tensor, n_retrieved: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Precision at k (OML): ``precision@k = hits_k' / min(n, k')``.

    OML divides by ``min(n, k')`` instead of ``k``, so a perfect model scores 1 even when ``n < k``; a query
    with ``n = 0`` and a non-empty row gets ``0 / 0 = NaN`` as in OML. Empty row: ``1`` if ``n == 0`` else ``0``.
    Reference: https://en.wikipedia.org/wiki/Evaluation_measures_(information_retrieval)#Precision_at_k
    """
    _check_k(k)
    hits = is_relevant[:, :k].sum(dim=1).double()
    denominator = torch.minimum(n_relevant, n_retrieved.clamp_max(k)).double()
    return _empty_row_value(n_retrieved, n_relevant, hits / denominator)


def map_at_k(is_relevant: Tensor, n_retrieved: Tensor, n_relevant: Tensor, k: int) -> Tensor:
    """Mean average precision at k (OML): ``map@k = (1 / hits_k') * sum_{i<=k'} (hits_i / i) * rel_i``.

    OML normalises by the hits in the top k' (not by ``min(n, k)``); no hit gives 0. Empty row: ``1`` if
    ``n == 0`` else ``0``. Reference: https://en.wikipedia.org/wiki/Evaluation_measures_(information_retrieval)
    """
    _check_k(k)
    relevant = is_relevant[:, :k]
    hits = relevant.cumsum(dim=1).double()
    positions = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=torch.float64)
    summed = (hits / positions * relevant).sum(dim=1)
    total = hits[:, -1] if relevant.shape[1] else torch.zeros(len(relevant), dtype=torch.float64)
    value = torch.where(total > 0, summed / total.clamp_min(1.0), 0.0)
    return _empty_row_value(n_retrieved, n_relevant, value)


def _lone_to_nan(n_relevant: Tensor, value: Tensor) -> Tensor:
    return torch.where(n_relevant > 0, value, float("nan"))


def _within_r(is_relevant: Tensor, n_relevant: Tensor) -> Tensor:
    """``rel_i`` for ``i <= n`` (the first R positions), checking that the rows are long enough."""
    if len(n_relevant) and int(n_relevant.max()) > is_relevant.shape[1]:
        raise ValueError(
            f"R-based metrics need the top-R of every query, but R is up to {int(n_relevant.max())} and only "
            f"{is_relevant.shape[1]} items were retrieved: retrieve with cover_relevant=True"
        )
    columns = torch.arange(is_relevant.shape[1], device=is_relevant.device)
    return is_relevant & (columns[None, :] < n_relevant[:, None])


def precision_at_1(is_relevant: Tensor, n_relevant: Tensor) -> Tensor:
    """PML's precision@1: ``rel_1``; NaN for lone queries (``n == 0``)."""
    first = is_relevant[:, 0] if is_relevant.shape[1] else torch.zeros(len(is_relevant), dtype=torch.bool)
    return _lone_to_nan(n_relevant, first.double())


def r_precision(is_relevant: Tensor, n_relevant: Tensor) -> Tensor:
    """R-precision (PML): ``hits_R / R`` with ``R = n``; NaN for lone queries.

    Reference: Musgrave et al., "A Metric Learning Reality Check", ECCV 2020 (https://arxiv.org/abs/2003.08505).
    """
    hits = _within_r(is_relevant, n_relevant).sum(dim=1).double()
    return _lone_to_nan(n_relevant, hits / n_relevant.double())


def map_at_r(is_relevant: Tensor, n_relevant: Tensor) -> Tensor:
    """MAP@R (PML): ``(1 / R) * sum_{i<=R} (hits_i / i) * rel_i`` with ``R = n``; NaN for lone queries.

    Reference: Musgrave et al., "A Metric Learning Reality Check", ECCV 2020 (https://arxiv.org/abs/2003.08505).
    """
    relevant = _within_r(is_relevant, n_relevant)
    hits = relevant.cumsum(dim=1).double()
    positions = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=torch.float64)
    summed = (hits / positions * relevant).sum(dim=1)
    return _lone_to_nan(n_relevant, summed / n_relevant.double())


def mean_reciprocal_rank(is_relevant: Tensor, n_relevant: Tensor, k: int | None = None) -> Tensor:
    """Reciprocal rank (PML): ``1 / rank`` of the first relevant item within the top k (all columns if None), else 0.

    NaN for lone queries; the mean over queries is the MRR. PML's ``AccuracyCalculator`` looks at its k
    neighbours the same way. Reference: https://en.wikipedia.org/wiki/Mean_reciprocal_rank
    """
    relevant = is_relevant if k is None else is_relevant[:, :k]
    if k is not None:
        _check_k(k)
    found = relevant.any(dim=1)
    first = relevant.to(torch.uint8).argmax(dim=1) if relevant.shape[1] else torch.zeros(len(relevant))
    value = torch.where(found, 1.0 / (first.double() + 1.0), 0.0)
    return _lone_to_nan(n_relevant, value)


def reciprocal_rank(ranks: Tensor, n_relevant: Tensor) -> Tensor:
    """Reciprocal rank from ranks: ``1 / rank`` of the first relevant item (1-based, ``0`` when none is ranked),
    0 where none is; NaN for lone queries (``n == 0``). The mean over queries is PML's MRR at ``k = None``."""
    value = torch.where(ranks > 0, 1.0 / ranks.clamp_min(1).double(), 0.0)
    return _lone_to_nan(n_relevant, value)


def pcf(embeddings: Tensor, variances: Sequence[float]) -> Tensor:
    """Principal components fraction (OML): the fraction of dimensions needed to explain ``r`` of the variance.

    With the covariance eigenvalues ``l_1 >= ... >= l_d`` of ``embeddings`` ``(N, d)``, ``n`` is the smallest
    integer with ``sum_{i<=n} l_i / sum_i l_i > r`` (OML: ``searchsorted(cumsum, r, side="right") + 1``), and
    ``pcf = n / d``. Computed from the ``d x d`` covariance in float64 (OML takes an SVD in float32: values agree
    except where a cumulative ratio equals ``r`` to rounding). NaN for fewer than 2 embeddings.
    Reference: https://en.wikipedia.org/wiki/Principal_component_analysis
    """
    if not all(0.0 <= r <= 1.0 for r in variances) or not len(variances):
        raise ValueError(f"pcf variances must be a non-empty sequence of numbers in [0, 1], got {list(variances)}")
    if len(embeddings) < 2:
        return torch.full((len(variances),), float("nan"), dtype=torch.float64)
    parts = embeddings.split(8192)  # float64 in chunks: no full-size copy
    mean = sum(part.double().sum(dim=0) for part in parts) / len(embeddings)
    covariance = sum((part.double() - mean).T @ (part.double() - mean) for part in parts)
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0.0).cpu()
    total = eigenvalues.sum()
    if not bool(total > 0):
        return torch.full((len(variances),), float("nan"), dtype=torch.float64)
    ratio = torch.cumsum(eigenvalues / total, dim=0)
    n = torch.searchsorted(ratio, torch.tensor(list(variances), dtype=torch.float64), side="right") + 1
    return n.double() / embeddings.shape[1]


def reduce_mean(values: Tensor, skip_nan: bool = False) -> float:
    """The mean over queries; ``skip_nan`` leaves NaN (excluded) queries out (NaN if all are)."""
    if skip_nan:
        values = values[~torch.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def worst_queries(values: Tensor, n: int) -> list[int]:
    """The ``n`` queries with the lowest values (NaN skipped), lowest first; ties by query position."""
    positions = (~torch.isnan(values)).nonzero().flatten()
    order = torch.sort(values[positions], stable=True).indices
    return positions[order[:n]].tolist()


def flatten_metrics(metrics: Mapping[Any, Any], prefix: str = "", separator: str = "/") -> dict[str, Any]:
    """``{"OVERALL": {"cmc": {5: v}}}`` -> ``{"OVERALL/cmc/5": v}`` (keys joined with ``separator``)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name, separator))
        else:
            flat[name] = value
    return flat
