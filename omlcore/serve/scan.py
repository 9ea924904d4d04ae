"""An exact top-k scan for a few queries at a time over a gallery held in memory: the explorer's hot path.

:class:`~omlcore.retrieval.ExactKNN` is built for many queries against a large gallery (exact ties, rescaling of
extreme norms); a web request brings one query. Here the gallery's squared norms (or its normalised rows) are
computed once, and each call is one fused matrix product per block of gallery rows plus a top-k
(:func:`~omlcore.functional.linear.fused_linear`: oneDNN's GEMM on CPU, about twice as fast as ``torch.addmm`` for
a few queries), so a batch of queries reads the gallery once. The distances are ExactKNN's: Euclidean, or
``1 - cos`` (both clamped at 0); ties are ordered by gallery position.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.functional.linear import fused_linear
from omlcore.retrieval.scores import DistanceMetric

__all__ = ["GalleryScan"]

#: Gallery rows scored per matrix product (bounds the temporary ``(Q, rows)`` scores).
SCAN_ROWS = 65_536


class GalleryScan:
    """Exact top-k search of queries in a fixed float32 gallery ``(N, D)``.

    Args:
        gallery: the embeddings, float32 ``(N, D)`` (kept, not copied).
        metric: ``"l2"`` or ``"cosine"``.
        block_rows: gallery rows per matrix product.
    """

    def __init__(self, gallery: Tensor, metric: DistanceMetric = "l2", block_rows: int = SCAN_ROWS) -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        self.metric: DistanceMetric = metric
        self.block_rows = block_rows
        self.gallery = gallery.float()
        if metric == "cosine":
            self.gallery = torch.nn.functional.normalize(self.gallery, dim=1)
            self.norms = torch.zeros(len(gallery))
        else:
            self.norms = (self.gallery * self.gallery).sum(dim=1)

    def __len__(self) -> int:
        return len(self.gallery)

    def search(self, queries: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest gallery rows of every query.

        Args:
            queries: float ``(Q, D)``.
            k: neighbours per query (at most the gallery's size).
            exclude: int64 ``(Q,)`` gallery position each query must not retrieve (itself), ``-1`` for none.

        Returns:
            ``(distances, positions)``, float32 / int64 ``(Q, min(k, N))``, ascending by distance then position; a row
            with fewer candidates (an excluded item) ends in ``(inf, -1)``.
        """
        queries = queries.float()
        if self.metric == "cosine":
            queries = torch.nn.functional.normalize(queries, dim=1)
        scaled = queries * (-2.0 if self.metric == "l2" else -1.0)  # exact: a power of two
        width = min(k, len(self.gallery))
        best_scores: list[Tensor] = []
        best_positions: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, len(self.gallery), self.block_rows):
                block = self.gallery[start : start + self.block_rows]
                # l2: |g|^2 - 2 q.g (the query's own norm is added to the winners only); cosine: 0 - q.g
                scores = fused_linear(scaled, block, self.norms[start : start + len(block)])
                if exclude is not None:
                    inside = (exclude >= start) & (exclude < start + len(block))
                    rows = inside.nonzero().flatten()
                    scores[rows, exclude[rows] - start] = torch.inf
                values, positions = torch.topk(scores, min(width, len(block)), dim=1, largest=False)
                best_scores.append(values)
                best_positions.append(positions + start)
            scores, positions = torch.cat(best_scores, dim=1), torch.cat(best_positions, dim=1)
            order = torch.argsort(positions, dim=1)  # ties by position: sort by position, then stably by score
            scores, positions = scores.gather(1, order), positions.gather(1, order)
            order = torch.argsort(scores, dim=1, stable=True)[:, :width]
            scores, positions = scores.gather(1, order), positions.gather(1, order)
            if self.metric == "l2":
                distances = (scores + (queries * queries).sum(dim=1, keepdim=True)).clamp_min_(0).sqrt_()
            else:
                distances = (scores + 1).clamp_min_(0)
            padding = torch.isinf(scores)
            distances[padding] = torch.inf
            positions[padding] = -1
        return distances, positions
