"""Score normalisation against the gallery's hubness: cross-domain similarity local scaling (CSLS)."""

from __future__ import annotations

from omlcore.postprocessing.base import RetrievalContext, with_rows
from omlcore.postprocessing.neighbours import (
    check_inputs,
    count_argument,
    finite_mean,
    optional_count_argument,
    output_width,
    sort_rows,
    swapped,
)
from omlcore.retrieval.results import RetrievalResults
from omlcore.retrieval.scores import is_symmetric

__all__ = ["CSLS"]


class CSLS:
    """Cross-domain similarity local scaling: Conneau, Lample, Ranzato, Denoyer & Jegou, "Word Translation Without
    Parallel Data", ICLR 2018.

    ``CSLS(q, g) = 2 cos(q, g) - r_T(q) - r_S(g)``, where ``r_T(q)`` is the mean cosine of query ``q`` to its
    ``neighbourhood`` nearest gallery items and ``r_S(g)`` the mean cosine of gallery item ``g`` to its
    ``neighbourhood`` nearest queries. A hub (a gallery item near many queries) has a large ``r_S`` and is pushed
    down. As a distance, with ``rho = 1 - r`` the mean *distance* to those neighbours:

        D(q, g) = d(q, g) - (rho_T(q) + rho_S(g)) / 2

    which for ``metric="cosine"`` (``d = 1 - cos``) is exactly ``-CSLS(q, g) / 2``, and for ``metric="l2"`` the same
    local scaling with Euclidean distances. ``D`` may be negative; only its order matters.

    Both neighbourhoods keep the split's exclusions (an item is not its own neighbour, nor are items of its sequence);
    a gallery item without any allowed query gets ``rho_S = 0``. The gallery's neighbourhoods come from a chunked
    gallery-to-query search (``O(G * neighbourhood)`` memory), which is skipped when queries and gallery are the same
    items (it equals the query-to-gallery one). Re-ranked: each query's ``candidates`` nearest gallery items by the
    original distance (one search, which also gives ``rho_T``); farther items are not returned.

    Args:
        neighbourhood: K of ``r_T`` / ``r_S`` (10 in the paper); clipped to the other side's size.
        candidates: gallery items per query that are re-ranked (at least ``k``); clipped to the gallery. The search's
            cost grows with it (a running top-``candidates``).
        k: results per query; default: the width of the incoming results.
    """

    def __init__(self, neighbourhood: int = 10, candidates: int = 20, k: int | None = None) -> None:
        self.neighbourhood = count_argument("neighbourhood", neighbourhood)
        self.candidates = count_argument("candidates", candidates)
        self.k = optional_count_argument("k", k)

    def __repr__(self) -> str:
        return f"CSLS(neighbourhood={self.neighbourhood}, candidates={self.candidates}, k={self.k})"

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        check_inputs("CSLS", results, context)
        width = output_width(self.k, results)
        if width == 0:
            return results
        split = context.split
        n_candidates = max(self.candidates, width)
        distances, ids = context.search(split.queries, max(n_candidates, self.neighbourhood))
        query_scale = finite_mean(distances[:, : self.neighbourhood])
        if is_symmetric(split.queries, split.gallery, split.exclude):
            gallery_scale = query_scale
        else:
            reverse = context.knn.search(
                split.gallery, split.queries, min(self.neighbourhood, len(split.queries)), swapped(split.exclude)
            )[0]
            gallery_scale = finite_mean(reverse)
        distances, ids = distances[:, :n_candidates], ids[:, :n_candidates]
        scaled = distances - (query_scale[:, None] + gallery_scale[ids.clamp_min(0)]) / 2
        return with_rows(results, *sort_rows(scaled, ids, width))
