"""The retrieval grids a validation writes: the worst queries of every overall metric (``visualization.*``), as files
in the run folder and as images for the experiment loggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from omlcore.config import Config
from omlcore.metrics.functional import flatten_metrics
from omlcore.visualization import GridLayout, draw_grid, retrieval_rows, save_worst_queries

__all__ = ["save_visualisations", "worst_query_grids"]


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


def worst_query_grids(config: Config, metric: Any, dataset: Any) -> dict[str, np.ndarray]:
    """``worst_<metric> -> (H, W, 3)`` uint8 grid with captions, per overall metric, as :func:`save_visualisations`
    draws them (without matplotlib); empty when the metric cannot rank queries."""
    n_queries = config["visualization.n_queries"]
    results = getattr(metric, "retrieval_results", None)
    if n_queries < 1 or results is None or getattr(metric, "metrics_unreduced", None) is None:
        return {}
    layout = GridLayout()
    grids = {}
    for name in sorted(flatten_metrics({"OVERALL": metric.metrics_unreduced.get("OVERALL", {})})):
        queries = metric.get_worst_queries_ids(name, n_queries)
        rows = retrieval_rows(results, queries, top_k=config["visualization.top_k"], n_queries=n_queries)
        canvas, placed = draw_grid(rows, dataset, layout=layout)
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        for cell, (x, y) in placed:
            draw.text((x, y - layout.caption_height + 2), cell.caption, fill=(0, 0, 0))
        grids["worst_" + name.replace("/", "_")] = np.asarray(image)
    return grids
