"""SurrogatePrecision: a differentiable precision@k of the batch against itself (OML's)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from omlcore.functional.distances import pairwise_distances
from omlcore.losses.base import Reduction, check_reduction, logs_of, reduce
from omlcore.miners.base import check_inputs

__all__ = ["SurrogatePrecision"]


class SurrogatePrecision(nn.Module):
    """``loss(embeddings, labels) = 1 - P@k~``, with both step functions of precision@k replaced by sigmoids.

    Every item queries the batch (itself included, hence ``k + 1``): the soft rank of item ``j`` for query ``i``
    is ``r_ij = sum_l sigmoid((d_ij - d_il) / t2)`` and ``P@k~_i = sum_j sigmoid((k + 1 - r_ij) / t1) [y_j = y_i]
    / min(|{j: y_j = y_i}|, k + 1)``. From "Recall@k Surrogate Loss with Large Batches and Similarity Mixup"
    (Patel, Tolias & Matas, CVPR 2022, https://arxiv.org/abs/2108.11179); OML's ``SurrogatePrecision``.
    Memory ``O(B^3)``.

    Args:
        k: the ``k`` of precision@k, >= 1.
        temperature1: ``t1``, of the sigmoid on ranks.
        temperature2: ``t2``, of the sigmoid on distance differences.
        reduction: ``mean``, ``sum`` or ``none`` (per query).

    ``last_logs``: ``precision`` (the mean surrogate precision of the batch).
    """

    def __init__(
        self, k: int, temperature1: float = 1.0, temperature2: float = 0.01, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"SurrogatePrecision: k must be an integer >= 1, got {k!r}")
        if temperature1 <= 0 or temperature2 <= 0:
            raise ValueError(f"SurrogatePrecision: temperatures must be > 0, got {temperature1}, {temperature2}")
        self.k = k
        self.temperature1, self.temperature2 = float(temperature1), float(temperature2)
        self.reduction = check_reduction("SurrogatePrecision", reduction)
        self.last_logs: dict[str, float] = {}

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        labels, _ = check_inputs("SurrogatePrecision", embeddings, labels)
        if len(labels) == 0:
            return reduce(embeddings.new_zeros(0), self.reduction, embeddings)
        k = self.k + 1  # every query finds itself first
        distances = pairwise_distances(embeddings)
        relevant = labels.unsqueeze(1) == labels.unsqueeze(0)
        ranks = torch.sigmoid((distances.unsqueeze(2) - distances.unsqueeze(1)) / self.temperature2).sum(2)
        hits = torch.sigmoid((k - ranks) / self.temperature1) * relevant
        precision = hits.sum(1) / relevant.sum(1).clamp(max=k)
        self.last_logs = logs_of(precision=precision.mean())
        return reduce(1.0 - precision, self.reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature1={self.temperature1}, temperature2={self.temperature2}"
