"""Retrieval metrics: functional (per query, OML's and PML's definitions), EmbeddingMetrics and its state."""

from omlcore.metrics.embedding_metrics import PML_METRICS, POSTPROCESSED, EmbeddingMetrics, NoRelevantPolicy
from omlcore.metrics.fnmr import fnmr_at_fmr, fnmr_at_fmr_from_distances
from omlcore.metrics.functional import (
    cmc_at_k,
    flatten_metrics,
    map_at_k,
    map_at_r,
    mean_reciprocal_rank,
    pcf,
    precision_at_1,
    precision_at_k,
    r_precision,
    reciprocal_rank,
    reduce_mean,
    worst_queries,
)
from omlcore.metrics.state import OVERALL, EmbeddingState

__all__ = [
    "OVERALL",
    "PML_METRICS",
    "POSTPROCESSED",
    "EmbeddingMetrics",
    "EmbeddingState",
    "NoRelevantPolicy",
    "cmc_at_k",
    "flatten_metrics",
    "fnmr_at_fmr",
    "fnmr_at_fmr_from_distances",
    "map_at_k",
    "map_at_r",
    "mean_reciprocal_rank",
    "pcf",
    "precision_at_1",
    "precision_at_k",
    "r_precision",
    "reciprocal_rank",
    "reduce_mean",
    "worst_queries",
]
