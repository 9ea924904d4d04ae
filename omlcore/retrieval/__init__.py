"""Retrieval: score blocks, exact chunked kNN (the default :class:`~omlcore.protocols.KNNBackend`), retrieval results.

>>> from omlcore.retrieval import RetrievalResults
>>> results = RetrievalResults.from_embeddings(embeddings, labels, is_query, is_gallery, top_k=5)  # doctest: +SKIP
"""

from omlcore.retrieval.knn import ExactKNN
from omlcore.retrieval.ranks import first_relevant_ranks
from omlcore.retrieval.results import QueryGallerySplit, RetrievalResults, relevant_counts
from omlcore.retrieval.scores import DistanceMetric, iter_score_blocks, scores_to_distances
from omlcore.retrieval.sharded import ShardedKNN
from omlcore.retrieval.validation import RetrievalInputError

__all__ = [
    "DistanceMetric",
    "ExactKNN",
    "QueryGallerySplit",
    "RetrievalInputError",
    "RetrievalResults",
    "ShardedKNN",
    "first_relevant_ranks",
    "iter_score_blocks",
    "relevant_counts",
    "scores_to_distances",
]
