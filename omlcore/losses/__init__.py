"""Losses (:class:`omlcore.protocols.Loss`, except the explicit-triplet ones), each with ``last_logs``.

- :class:`TripletLoss` ``(anchor, positive, negative)``, :class:`TripletLossPlain` (stacked ``a, p, n`` rows),
  :class:`TripletLossWithMiner` ``(embeddings, labels)`` with any miner; margin or soft margin.
- :class:`ArcFaceLoss`, :class:`ArcFaceLossWithMLP`: additive angular margin, category-aware label smoothing.
- :class:`ContrastiveLoss`: PML's ``pos_margin`` / ``neg_margin`` contrastive loss.
- :class:`SurrogatePrecision`: differentiable precision@k.

A batch without any valid tuple gives a zero that stays connected to the graph (never NaN). Distances are
Euclidean on the embeddings as given, as in OML.
"""

from omlcore.losses.arcface import ArcFaceLoss, ArcFaceLossWithMLP
from omlcore.losses.contrastive import ContrastiveLoss
from omlcore.losses.surrogate_precision import SurrogatePrecision
from omlcore.losses.triplet import TripletLoss, TripletLossPlain, TripletLossWithMiner

__all__ = [
    "ArcFaceLoss",
    "ArcFaceLossWithMLP",
    "ContrastiveLoss",
    "SurrogatePrecision",
    "TripletLoss",
    "TripletLossPlain",
    "TripletLossWithMiner",
]
