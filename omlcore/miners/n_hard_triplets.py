"""NHardTripletsMiner: the n hardest positives x n hardest negatives of every anchor, or rank ranges of them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from omlcore.miners.base import TripletMiner, hardest_first, row_shifted_similarities
from omlcore.protocols import Triplets

__all__ = ["NHardTripletsMiner"]

HardnessRange = int | tuple[int, int] | Sequence[int]


def _as_slice(name: str, value: HardnessRange) -> slice:
    """``n`` -> the ``n`` hardest; ``(i, j)`` -> the ``i``-th to ``j``-th hardest, 1-based and inclusive."""
    if isinstance(value, bool):
        raise TypeError(f"NHardTripletsMiner: {name} must be an int or a (first, last) pair, got {value!r}")
    if isinstance(value, int):
        first, last = 1, value
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        first, last = int(value[0]), int(value[1])
    else:
        raise TypeError(f"NHardTripletsMiner: {name} must be an int or a (first, last) pair, got {value!r}")
    if not 1 <= first <= last:
        raise ValueError(
            f"NHardTripletsMiner: {name}={value!r} is not a valid range; use n >= 1 or (first, last) with "
            "1 <= first <= last (1 = the hardest)"
        )
    return slice(first - 1, last)


class NHardTripletsMiner(TripletMiner):
    """Every anchor with each of its ``n_positive`` farthest positives and ``n_negative`` closest negatives.

    OML's ``NHardTripletsMiner``: positives ranked by decreasing, negatives by increasing Euclidean distance to
    the anchor; a range ``(i, j)`` keeps ranks ``i..j`` (1-based, inclusive) to skip the very hardest ones,
    which are often label noise. An anchor with fewer candidates uses the ones it has; the triplets are the
    product ``positives x negatives`` of every anchor, sorted by (anchor, positive rank, negative rank).
    ``n_positive = n_negative = 1`` is :class:`~omlcore.miners.HardTripletsMiner`. Based on batch-hard mining
    (Hermans et al., 2017, https://arxiv.org/abs/1703.07737).

    Args:
        n_positive: ``n`` or ``(first, last)``.
        n_negative: ``n`` or ``(first, last)``.
    """

    def __init__(self, n_positive: HardnessRange = 1, n_negative: HardnessRange = 1) -> None:
        self.positive_slice = _as_slice("n_positive", n_positive)
        self.negative_slice = _as_slice("n_negative", n_negative)

    def mine(self, embeddings: Tensor, ref_emb: Tensor | None, positive: Tensor, negative: Tensor) -> Triplets:
        scores = row_shifted_similarities(embeddings, ref_emb)  # closest = largest
        n_ref = scores.shape[1]
        pos_slice, neg_slice = self.positive_slice, self.negative_slice
        farthest_first = torch.where(positive, hardest_first(scores, largest=False), float("inf"))
        closest_first = torch.where(negative, hardest_first(scores, largest=True), float("-inf"))
        pos = farthest_first.topk(min(pos_slice.stop, n_ref), 1, largest=False).indices[:, pos_slice]
        neg = closest_first.topk(min(neg_slice.stop, n_ref), 1).indices[:, neg_slice]
        pos_ok, neg_ok = positive.gather(1, pos), negative.gather(1, neg)  # ranks past the last candidate: masked
        anchor, i, j = (pos_ok.unsqueeze(2) & neg_ok.unsqueeze(1)).nonzero(as_tuple=True)
        return Triplets(anchor, pos[anchor, i], neg[anchor, j])

    def __repr__(self) -> str:
        p, n = self.positive_slice, self.negative_slice
        return f"NHardTripletsMiner(n_positive=({p.start + 1}, {p.stop}), n_negative=({n.start + 1}, {n.stop}))"
