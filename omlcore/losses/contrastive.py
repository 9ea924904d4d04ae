"""ContrastiveLoss: pull positive pairs within ``pos_margin``, push negative pairs beyond ``neg_margin`` (PML's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omlcore.functional.distances import elementwise_distances, pairwise_distances
from omlcore.losses.base import logs_of, zero_loss
from omlcore.miners.base import ExtendedTriplets, build_miner, check_inputs, pair_masks
from omlcore.protocols import Miner, Pairs, Triplets

__all__ = ["ContrastiveLoss"]

PairReduction = Literal["avg_nonzero", "mean", "sum"]
_PAIR_REDUCTIONS = ("avg_nonzero", "mean", "sum")


class ContrastiveLoss(nn.Module):
    """``loss(embeddings, labels)``: ``L = R({max(0, d_ij - m_pos)}_{pos}) + R({max(0, m_neg - d_ij)}_{neg})``.

    Over positive pairs (same label, ``i != j``) and negative pairs, with Euclidean ``d_ij``; "Dimensionality
    Reduction by Learning an Invariant Mapping" (Hadsell, Chopra & LeCun, CVPR 2006,
    http://yann.lecun.com/exdb/publis/pdf/hadsell-chopra-lecun-06.pdf) in PML's parametrisation
    (``ContrastiveLoss(pos_margin=0, neg_margin=1)``). ``R`` is the reduction, applied to positives and negatives
    separately: ``avg_nonzero`` (the mean of the non-zero terms, PML's default ``AvgNonZeroReducer``), ``mean`` or
    ``sum``. PML L2-normalises embeddings by default; this loss uses them as given.

    Args:
        pos_margin: ``m_pos``; positive pairs closer than this cost nothing.
        neg_margin: ``m_neg``; negative pairs farther than this cost nothing.
        miner: None for all pairs (both orders, as PML), or a miner returning :class:`~omlcore.protocols.Pairs`
            or :class:`~omlcore.protocols.Triplets` (split into pairs, as PML does), or its config.
        reduction: ``avg_nonzero``, ``mean`` or ``sum``.

    ``last_logs``: ``num_pos_pairs``, ``num_neg_pairs``, ``pos_dist``, ``neg_dist``, ``active_pos``, ``active_neg``.
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        miner: Miner | Mapping[str, Any] | None = None,
        reduction: PairReduction = "avg_nonzero",
    ) -> None:
        super().__init__()
        if reduction not in _PAIR_REDUCTIONS:
            raise ValueError(
                f"ContrastiveLoss: reduction must be one of {', '.join(_PAIR_REDUCTIONS)}; got {reduction!r}"
            )
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.miner = None if miner is None else build_miner("ContrastiveLoss", miner)
        self.reduction = reduction
        self.last_logs: dict[str, float] = {}

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        *,
        ignore_anchor_mask: Tensor | None = None,
        sequences: Tensor | None = None,
    ) -> Tensor:
        labels, _ = check_inputs("ContrastiveLoss", embeddings, labels)
        if self.miner is None:
            with torch.no_grad():
                positive, negative = pair_masks(labels, ignore_anchor_mask=ignore_anchor_mask, sequences=sequences)
            distances = pairwise_distances(embeddings)
            pos_d, neg_d = distances[positive], distances[negative]
        else:
            options = {
                name: value
                for name, value in (("ignore_anchor_mask", ignore_anchor_mask), ("sequences", sequences))
                if value is not None
            }
            mined = self.miner(embeddings, labels, **options)
            if not isinstance(mined, Triplets | Pairs):
                raise TypeError(
                    f"ContrastiveLoss: the miner {self.miner!r} returned {type(mined).__name__}, not Pairs / Triplets"
                )
            points = mined.resolve(embeddings, labels)[0] if isinstance(mined, ExtendedTriplets) else embeddings
            a1, p, a2, n = mined.to_pairs() if isinstance(mined, Triplets) else mined
            pos_d = elementwise_distances(points[a1], points[p])
            neg_d = elementwise_distances(points[a2], points[n])
        pos_losses = F.relu(pos_d - self.pos_margin)
        neg_losses = F.relu(self.neg_margin - neg_d)
        self.last_logs = logs_of(
            num_pos_pairs=float(len(pos_d)),
            num_neg_pairs=float(len(neg_d)),
            pos_dist=pos_d.mean() if len(pos_d) else 0.0,
            neg_dist=neg_d.mean() if len(neg_d) else 0.0,
            active_pos=(pos_losses > 0).float().mean() if len(pos_d) else 0.0,
            active_neg=(neg_losses > 0).float().mean() if len(neg_d) else 0.0,
        )
        return self._reduce(pos_losses) + self._reduce(neg_losses) + zero_loss(embeddings)

    def _reduce(self, losses: Tensor) -> Tensor:
        if self.reduction == "sum":
            return losses.sum()
        count = (losses > 0).sum() if self.reduction == "avg_nonzero" else losses.numel()
        return losses.sum() / torch.clamp(torch.as_tensor(count, device=losses.device), min=1)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, reduction={self.reduction!r}"
