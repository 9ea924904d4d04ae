"""The retrieval grids a validation writes: the worst queries of every overall metric (``visualization.*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omlcore.config import Config
from omlcore.visualization import save_worst_queries

__all__ = ["save_visualisations"]


def save_visualisations(config: Config, metric: Any, dataset: Any, folder: Path) -> list[Path]:
    """Grids of the worst queries per overall metric into ``folder``; none when the metric cannot rank queries."""
    n_queries = config["visualization.n_queries"]
    if n_queries < 1 or getattr(metric, "retrieval_results", None) is None:
        return []
    return save_worst_queries(
        metric,
        dataset,
        folder,
        n_queries=n_queries,
        top_k=config["visualization.top_k"],
        formats=config["visualization.formats"],
    )
