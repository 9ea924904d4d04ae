"""HardClusterMiner: triplets of label centroids (anchor), the farthest member (positive), the closest centroid."""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.functional.distances import pairwise_squared_distances
from omlcore.miners.base import ExtendedTriplets, check_inputs

__all__ = ["HardClusterMiner"]


class HardClusterMiner:
    """One triplet per label: ``(c_l, x_p, c_m)`` with centroids ``c_l = mean{x_i : y_i = l}``.

    ``p = argmax_{i: y_i = l} ||x_i - c_l||`` (the member farthest from its centroid) and
    ``m = argmin_{m != l} ||c_m - c_l||`` (the closest other centroid): OML's ``HardClusterMiner``, after
    "Hard-aware point-to-set deep metric for person re-identification" (Yu et al., ECCV 2018,
    https://arxiv.org/abs/1807.11206). The centroids are differentiable functions of the embeddings, so the
    result is :class:`~omlcore.miners.base.ExtendedTriplets` over ``cat([embeddings, centroids])``: anchor
    ``B + l``, positive ``p``, negative ``B + m``, with ``extra_labels`` the sorted unique labels.

    Unlike OML it does not require equally many items per label; labels with a single item are not anchors
    (no positive) but remain negatives. Fewer than two labels, or no label with two items: empty.
    """

    def __call__(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> ExtendedTriplets:
        if ref_emb is not None or ref_labels is not None:
            raise ValueError("HardClusterMiner mines within the batch; it does not take ref_emb / ref_labels")
        labels, _ = check_inputs("HardClusterMiner", embeddings, labels)
        device, batch = embeddings.device, len(labels)
        unique, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        centroids = torch.zeros(len(unique), embeddings.shape[1], dtype=embeddings.dtype, device=device)
        centroids = centroids.index_add(0, inverse, embeddings) / counts.unsqueeze(1).to(embeddings.dtype)
        with torch.no_grad():
            anchor = (counts >= 2).nonzero().squeeze(1)
            if len(unique) < 2 or len(anchor) == 0:
                none = torch.empty(0, dtype=torch.long, device=device)
                return ExtendedTriplets(none, none, none, centroids, unique)
            spread = (embeddings.detach() - centroids.detach()[inverse]).pow(2).sum(1)
            # farthest member of every label: sort by distance (descending), then stably by label
            by_spread = spread.argsort(descending=True, stable=True)
            by_label = by_spread[inverse[by_spread].argsort(stable=True)]
            farthest = by_label[counts.cumsum(0) - counts]
            between = pairwise_squared_distances(centroids.detach())
            between.fill_diagonal_(float("inf"))
            closest = between.argmin(1)
        return ExtendedTriplets(batch + anchor, farthest[anchor], batch + closest[anchor], centroids, unique)

    def __repr__(self) -> str:
        return "HardClusterMiner()"
