"""HardTripletsMiner: the batch-hard triplet of every anchor."""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.miners.base import TripletMiner, row_shifted_squared_distances
from omlcore.protocols import Triplets

__all__ = ["HardTripletsMiner"]


class HardTripletsMiner(TripletMiner):
    """For every anchor, its farthest positive and its closest negative (batch-hard mining).

    ``p(a) = argmax_{p: y_p = y_a, p != a} ||x_a - x_p||``, ``n(a) = argmin_{n: y_n != y_a} ||x_a - x_n||``
    (Euclidean distance on the embeddings as given). From "In Defense of the Triplet Loss for Person
    Re-Identification" (Hermans et al., 2017, https://arxiv.org/abs/1703.07737); OML's ``HardTripletsMiner``
    and PML's ``BatchHardMiner`` (PML L2-normalises first by default). Anchors without a positive or a
    negative are left out, as in PML. At most ``B`` triplets, sorted by anchor.
    """

    def mine(self, embeddings: Tensor, ref_emb: Tensor | None, positive: Tensor, negative: Tensor) -> Triplets:
        scores = row_shifted_squared_distances(embeddings, ref_emb)
        farthest, pos = torch.where(positive, scores, float("-inf")).max(1)
        closest, neg = torch.where(negative, scores, float("inf")).min(1)
        anchor = ((farthest > float("-inf")) & (closest < float("inf"))).nonzero().squeeze(1)
        return Triplets(anchor, pos[anchor], neg[anchor])
