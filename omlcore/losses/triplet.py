"""Triplet losses: on given triplets, on stacked triplets, and with a miner (OML's three variants)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omlcore.functional.distances import elementwise_distances, pairwise_distances
from omlcore.losses.base import Reduction, check_reduction, logs_of, reduce, zero_loss
from omlcore.miners.all_triplets import AllTripletsMiner
from omlcore.miners.base import ExtendedTriplets, build_miner, check_inputs, pair_masks
from omlcore.protocols import Miner, Triplets

__all__ = ["TripletLoss", "TripletLossPlain", "TripletLossWithMiner", "all_triplets_margin_loss", "triplet_losses"]


def _check_margin(owner: str, margin: float | None) -> float | None:
    if margin is not None and (isinstance(margin, bool) or not margin >= 0):
        raise ValueError(f"{owner}: margin must be >= 0, or None for the soft-margin loss; got {margin!r}")
    return None if margin is None else float(margin)


def triplet_losses(d_ap: Tensor, d_an: Tensor, margin: float | None) -> Tensor:
    """``max(0, margin + d_ap - d_an)``, or the soft margin ``log(1 + exp(d_ap - d_an))`` when ``margin`` is None."""
    if margin is None:
        return F.softplus(d_ap - d_an)
    return F.relu(d_ap - d_an + margin)


class TripletLoss(nn.Module):
    """``loss(anchor, positive, negative)``: the triplet loss of ``T`` given triplets ``(T, D)`` each.

    ``l_i = max(0, m + ||a_i - p_i|| - ||a_i - n_i||)`` (FaceNet, Schroff et al., 2015,
    https://arxiv.org/abs/1503.03832); with ``margin=None`` the soft margin ``log(1 + exp(d_ap - d_an))``
    (Hermans et al., 2017, https://arxiv.org/abs/1703.07737), which does not saturate. OML's ``TripletLoss``.

    Args:
        margin: ``m >= 0``, or None for the soft margin.
        reduction: ``mean``, ``sum`` or ``none`` (per triplet).

    ``last_logs``: ``active_tri`` (fraction with a non-zero loss), ``pos_dist``, ``neg_dist`` (means).
    """

    def __init__(self, margin: float | None, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.margin = _check_margin(type(self).__name__, margin)
        self.reduction = check_reduction(type(self).__name__, reduction)
        self.last_logs: dict[str, float] = {}

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        if not anchor.shape == positive.shape == negative.shape or anchor.dim() != 2:
            raise ValueError(
                f"{type(self).__name__}: anchor, positive and negative must be (T, D) each, got "
                f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
            )
        d_ap, d_an = elementwise_distances(anchor, positive), elementwise_distances(anchor, negative)
        losses = triplet_losses(d_ap, d_an, self.margin)
        self.last_logs = _triplet_logs(losses, d_ap, d_an)
        return reduce(losses, self.reduction, anchor, positive, negative)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class TripletLossPlain(TripletLoss):
    """``loss(features)``: :class:`TripletLoss` on triplets stacked as rows ``a0, p0, n0, a1, p1, n1, ...``.

    ``features`` is ``(3T, D)``; OML's ``TripletLossPlain``, for data pipelines that yield ready-made triplets.
    """

    def forward(self, features: Tensor) -> Tensor:  # type: ignore[override]
        if features.dim() != 2 or len(features) % 3:
            raise ValueError(
                f"TripletLossPlain: features must be (3T, D), rows a0, p0, n0, a1, ...; got {tuple(features.shape)}"
            )
        return super().forward(features[0::3], features[1::3], features[2::3])


class TripletLossWithMiner(nn.Module):
    """``loss(embeddings, labels)``: a miner picks triplets from the batch, then the triplet loss averages them.

    ``L = reduce_{(a, p, n) in miner(x, y)} max(0, m + ||x_a - x_p|| - ||x_a - x_n||)`` (soft margin when
    ``margin`` is None); OML's ``TripletLossWithMiner``. ``miner`` is any :class:`~omlcore.protocols.Miner`
    returning triplets: omlcore's, a PML miner through the PML adapter
    (``registry.build("miner", "pml.BatchHardMiner")``), an object of your own, or an OML-style config
    ``{"name": "hard_triplets", "args": {}}``. :class:`~omlcore.miners.base.ExtendedTriplets` (hard-cluster,
    cross-batch memory) are resolved against their extra embeddings.

    With the default :class:`~omlcore.miners.AllTripletsMiner` (no cap, or a cap above the number of triplets)
    and a margin, the loss over all ``B (K - 1) (B - K)`` triplets is computed exactly without listing them
    (:func:`all_triplets_margin_loss`, ``O(B^2 log B)``).

    Args:
        margin: ``m >= 0``, or None for the soft margin.
        miner: the miner; default ``AllTripletsMiner()``.
        reduction: ``mean``, ``sum`` or ``none``.

    ``forward(embeddings, labels, *, ignore_anchor_mask=None, sequences=None)``: the keyword options are passed to
    the miner when given (omlcore's miners accept them). A batch without triplets gives a zero connected to the
    graph. A NaN or infinite embedding in a mined triplet makes the loss NaN (omlcore's miners rank NaN scores
    as the hardest, so they mine it; a capped random sample may miss it). ``last_logs``: ``num_triplets``,
    ``active_tri``, ``pos_dist``, ``neg_dist`` and the miner's own.
    """

    def __init__(
        self, margin: float | None, miner: Miner | Mapping[str, Any] | None = None, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.margin = _check_margin(type(self).__name__, margin)
        self.miner = AllTripletsMiner() if miner is None else build_miner(type(self).__name__, miner)
        self.reduction = check_reduction(type(self).__name__, reduction)
        self.last_logs: dict[str, float] = {}

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        *,
        ignore_anchor_mask: Tensor | None = None,
        sequences: Tensor | None = None,
    ) -> Tensor:
        labels, _ = check_inputs(type(self).__name__, embeddings, labels)
        if type(self.miner) is AllTripletsMiner and self.margin is not None and self.reduction != "none":
            with torch.no_grad():
                positive, negative = pair_masks(labels, ignore_anchor_mask=ignore_anchor_mask, sequences=sequences)
                total = int((positive.count_nonzero(1) * negative.count_nonzero(1)).sum())
            cap = self.miner.max_output_triplets
            if total and (cap is None or cap >= total):
                loss, self.last_logs = all_triplets_margin_loss(
                    pairwise_distances(embeddings), positive, negative, self.margin, total
                )
                return loss if self.reduction == "sum" else loss / total
        options = {
            name: value
            for name, value in (("ignore_anchor_mask", ignore_anchor_mask), ("sequences", sequences))
            if value is not None
        }
        triplets = self.miner(embeddings, labels, **options)
        if not isinstance(triplets, Triplets):
            raise TypeError(
                f"TripletLossWithMiner: the miner {self.miner!r} returned {type(triplets).__name__}, not Triplets; "
                "use a triplet miner (e.g. 'hard_triplets', 'pml.BatchHardMiner')"
            )
        points = triplets.resolve(embeddings, labels)[0] if isinstance(triplets, ExtendedTriplets) else embeddings
        a, p, n = triplets
        if isinstance(triplets, ExtendedTriplets) or 32 * triplets.num <= len(points) ** 2:
            # one gather of the three rows of every triplet (its backward is a single index_add)
            anchors, positives, negatives = points.index_select(0, torch.cat([a, p, n])).chunk(3)
            d_ap, d_an = elementwise_distances(anchors, positives), elementwise_distances(anchors, negatives)
        else:  # many triplets: one distance matrix, then gather
            distances = pairwise_distances(points)
            d_ap, d_an = distances[a, p], distances[a, n]
        losses = triplet_losses(d_ap, d_an, self.margin)
        self.last_logs = {
            "num_triplets": float(triplets.num),
            **_triplet_logs(losses, d_ap, d_an),
            **getattr(self.miner, "last_logs", {}),
        }
        return reduce(losses, self.reduction, points)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, miner={self.miner!r}, reduction={self.reduction!r}"


def _triplet_logs(losses: Tensor, d_ap: Tensor, d_an: Tensor) -> dict[str, float]:
    if losses.numel() == 0:
        return {"active_tri": 0.0}
    with torch.no_grad():  # one stack, one mean, one device synchronisation
        active, pos, neg = torch.stack([(losses > 0).to(d_ap.dtype), d_ap, d_an]).mean(1).tolist()
    return {"active_tri": active, "pos_dist": pos, "neg_dist": neg}


def all_triplets_margin_loss(
    distances: Tensor, positive: Tensor, negative: Tensor, margin: float, total: int | None = None
) -> tuple[Tensor, dict[str, float]]:
    """``sum_{a, p, n} max(0, m + d[a, p] - d[a, n])`` over every positive pair ``(a, p)`` and negative ``(a, n)``.

    Exact, without listing the ``T`` triplets: sort each anchor's negative distances once; for a positive pair the
    active negatives are those with ``d[a, n] < m + d[a, p]``, found by binary search, and their sum is a prefix
    sum, so the pair contributes ``c (m + d[a, p]) - prefix_c``. ``O(B R log R)`` time and ``O(B R)`` memory
    instead of ``O(T)``; gradients are those of the plain sum.

    Args:
        distances: ``(B, R)`` differentiable distances; positive, negative: ``(B, R)`` bool masks.
        margin: ``m >= 0``.
        total: the number of triplets if known (``sum_a |P_a| |N_a|``).

    Returns:
        The sum (divide by ``total`` for the mean) and the logs ``num_triplets``, ``active_tri``, ``pos_dist``,
        ``neg_dist`` (means over the triplets).
    """
    detached = distances.detach()
    with torch.no_grad():
        n_pos, n_neg = positive.count_nonzero(1), negative.count_nonzero(1)
        total = int((n_pos * n_neg).sum()) if total is None else total
        sorted_neg, order = detached.masked_fill(~negative, float("inf")).sort(dim=1)
        active = torch.searchsorted(sorted_neg, detached + margin).masked_fill_(~positive, 0)
    if total == 0:
        return zero_loss(distances), {"num_triplets": 0.0, "active_tri": 0.0}
    neg_by_rank = distances.gather(1, order).masked_fill(~negative.gather(1, order), 0.0)
    prefix = F.pad(neg_by_rank.cumsum(1), (1, 0))
    loss = (active.to(distances.dtype) * (distances + margin)).sum() - prefix.gather(1, active).sum()
    logs = logs_of(
        num_triplets=float(total),
        active_tri=active.sum() / total,
        pos_dist=(detached * positive * n_neg.unsqueeze(1)).sum() / total,
        neg_dist=(detached * negative * n_pos.unsqueeze(1)).sum() / total,
    )
    return loss, logs
