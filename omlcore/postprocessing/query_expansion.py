"""Query expansion (AQE, alpha-QE) and database-side augmentation (DBA): new vectors from neighbours, a new search.

Each expanded vector is the weighted mean of the vector itself (weight 1) and its ``n`` nearest gallery items:

    v' = (v + sum_i w_i g_i) / (1 + sum_i w_i),        w_i = max(cos(v, g_i), 0) ** alpha

(``alpha = 0``: equal weights). For ``metric="cosine"`` the vectors are L2-normalised first; the length of ``v'``
does not matter to the cosine, so this ranks as the published ``normalise(v + sum_i w_i g_i)``. For ``metric="l2"``
the raw vectors are averaged (a mean in the embedding space, whose scale the distance keeps) and the weights are
the cosines of the raw vectors (``1 - d^2 / 2`` for unit-norm embeddings, where ranking by the mean ranks as by the
normalised sum).

Query expansion changes only the query vectors, database augmentation only the gallery's; then every query is
searched again in the (augmented) gallery with the split's exclusions: a query never retrieves itself, nor an item
of its sequence. The result is a new search, not a re-ordering of the incoming rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.postprocessing.base import RetrievalContext, with_rows
from omlcore.postprocessing.neighbours import (
    check_inputs,
    count_argument,
    number_argument,
    optional_count_argument,
    output_width,
)
from omlcore.retrieval.results import RetrievalResults
from omlcore.retrieval.scores import DistanceMetric

__all__ = ["AlphaQueryExpansion", "AverageQueryExpansion", "DatabaseAugmentation"]

_CHUNK_VALUES = 2**22  # neighbour vectors gathered at once (16 MiB of float32)


def _expand(vectors: Tensor, pool: Tensor, neighbours: Tensor, alpha: float, metric: DistanceMetric | str) -> Tensor:
    """Each row of ``vectors`` replaced by its weighted mean with its ``neighbours`` (rows of ``pool``, ``-1``: none)
    as in the module docstring; computed in chunks of rows, one output copy."""
    out = torch.empty_like(vectors)
    n_neighbours, dim = neighbours.shape[1], vectors.shape[1]
    chunk = max(1, _CHUNK_VALUES // max(1, n_neighbours * dim))
    for start in range(0, len(vectors), chunk):
        rows = slice(start, start + chunk)
        ids = neighbours[rows]
        own, others = vectors[rows], pool[ids.clamp_min(0)]
        weights = (ids >= 0).to(vectors.dtype)
        if metric == "cosine" or alpha != 0:
            own_unit = torch.nn.functional.normalize(own, dim=1)
            others_unit = torch.nn.functional.normalize(others, dim=2)
            if alpha != 0:
                cosines = torch.bmm(others_unit, own_unit[:, :, None]).squeeze(2)
                weights = weights * cosines.clamp_min(0).pow(alpha)
            if metric == "cosine":
                own, others = own_unit, others_unit
        total = own + torch.bmm(weights[:, None, :], others).squeeze(1)
        out[rows] = total / (1 + weights.sum(dim=1, keepdim=True))
    return out


class AlphaQueryExpansion:
    """alpha-weighted query expansion (alpha-QE): Radenovic, Tolias & Chum, "Fine-tuning CNN Image Retrieval with No
    Human Annotation", TPAMI 2018.

    Each query becomes ``q' = q + sum_{i<=n} max(cos(q, g_i), 0)^alpha g_i`` (normalised; as a weighted mean, see the
    module docstring) over its top ``n`` gallery items, then is searched again with the split's exclusions.

    Args:
        n: neighbours per query, the first ``n`` of its incoming row (padding counts for nothing); when the rows are
            narrower than ``n``, the top ``n`` of a fresh search. Clipped to the gallery size.
        alpha: exponent of the cosine weights (3 in the paper); 0 weights all neighbours alike (AQE).
        k: results per query of the new search; default: the width of the incoming results. Clipped to the gallery.
    """

    def __init__(self, n: int = 5, alpha: float = 3.0, k: int | None = None) -> None:
        self.n = count_argument("n", n)
        self.alpha = number_argument("alpha", alpha, 0.0)
        self.k = optional_count_argument("k", k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, alpha={self.alpha}, k={self.k})"

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        check_inputs(type(self).__name__, results, context)
        width = output_width(self.k, results)
        if width == 0:
            return results
        split = context.split
        n = min(self.n, results.n_gallery)
        neighbours = results.retrieved_ids[:, :n] if results.top_k >= n else context.search(split.queries, n)[1]
        queries = _expand(split.queries, split.gallery, neighbours, self.alpha, context.metric)
        distances, ids = context.search(queries, width)
        return with_rows(results, distances, ids)


class AverageQueryExpansion(AlphaQueryExpansion):
    """Average query expansion (AQE): Chum, Philbin, Sivic, Isard & Zisserman, "Total Recall: Automatic Query
    Expansion with a Generative Feature Model for Object Retrieval", ICCV 2007.

    Each query becomes the mean of itself and its top ``n`` gallery items, ``q' = (q + sum_{i<=n} g_i) / (n + 1)``
    (of the L2-normalised vectors for ``metric="cosine"``), then is searched again with the split's exclusions.
    :class:`AlphaQueryExpansion` with ``alpha=0``.

    Args:
        n: neighbours per query (see :class:`AlphaQueryExpansion`).
        k: results per query of the new search; default: the width of the incoming results.
    """

    def __init__(self, n: int = 2, k: int | None = None) -> None:
        super().__init__(n=n, alpha=0.0, k=k)

    def __repr__(self) -> str:
        return f"AverageQueryExpansion(n={self.n}, k={self.k})"


class DatabaseAugmentation:
    """Database-side augmentation (DBA): Arandjelovic & Zisserman, "Three things everyone should know to improve
    object retrieval", CVPR 2012; with ``alpha > 0`` the alpha-weighted DBA of Radenovic et al. (TPAMI 2018).

    Each gallery item becomes the (weighted) mean of itself and its ``n`` nearest other gallery items
    (``g' = (g + sum_i w_i g_i) / (1 + sum_i w_i)``, ``w_i = max(cos(g, g_i), 0)^alpha``), found by a chunked
    gallery-to-gallery search (``O(G * n)`` memory; the split's sequences are not excluded there, only the item
    itself; where every gallery item is a query without a sequence, its incoming row's first ``n`` are taken, as
    query expansion takes a query's). The queries keep their vectors and are searched again in the augmented
    gallery, with the split's exclusions.

    Args:
        n: gallery neighbours per gallery item; clipped to the gallery size minus one.
        alpha: exponent of the cosine weights; 0 (default) weights the neighbours alike, as the original DBA.
        k: results per query of the new search; default: the width of the incoming results.
    """

    def __init__(self, n: int = 2, alpha: float = 0.0, k: int | None = None) -> None:
        self.n = count_argument("n", n)
        self.alpha = number_argument("alpha", alpha, 0.0)
        self.k = optional_count_argument("k", k)

    def __repr__(self) -> str:
        return f"DatabaseAugmentation(n={self.n}, alpha={self.alpha}, k={self.k})"

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        check_inputs("DatabaseAugmentation", results, context)
        width = output_width(self.k, results)
        if width == 0:
            return results
        split = context.split
        gallery = split.gallery
        n = min(self.n, len(gallery) - 1)
        if n > 0:
            gallery = _expand(
                gallery, gallery, self._gallery_neighbours(results, context, n), self.alpha, context.metric
            )
        distances, ids = context.search(split.queries, width, gallery=gallery)
        return with_rows(results, distances, ids)

    @staticmethod
    def _gallery_neighbours(results: RetrievalResults, context: RetrievalContext, n: int) -> Tensor:
        """Each gallery item's ``n`` nearest other gallery items. Where every gallery item is a query with no
        sequence (leave-one-out), its incoming row is that already (it excludes only the item itself): no search."""
        split = context.split
        if split.gallery is split.queries and split.query_sequences is None and results.top_k >= n:
            return results.retrieved_ids[:, :n]
        itself = torch.arange(len(split.gallery), device=split.gallery.device)
        return context.knn.search(split.gallery, split.gallery, n, [(itself, itself)])[1]
