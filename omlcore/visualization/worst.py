"""One grid per metric of its worst queries, as written by a validation run (HTML always, PNG with matplotlib)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from omlcore.metrics.functional import flatten_metrics
from omlcore.retrieval.results import RetrievalResults
from omlcore.retrieval.validation import RetrievalInputError
from omlcore.utils.optional import is_available
from omlcore.visualization.grid import GridLayout, ImageSource
from omlcore.visualization.html_page import save_retrieval_html
from omlcore.visualization.png import save_retrieval_png

__all__ = ["SupportsWorstQueries", "save_worst_queries"]

Format = Literal["html", "png"]


class SupportsWorstQueries(Protocol):
    """What :func:`save_worst_queries` reads: a computed :class:`~omlcore.metrics.EmbeddingMetrics`."""

    retrieval_results: RetrievalResults | None
    metrics_unreduced: dict[str, Any] | None

    def get_worst_queries_ids(self, metric_name: str, n_queries: int) -> list[int]: ...


def save_worst_queries(
    metrics: SupportsWorstQueries,
    images: ImageSource,
    folder: str | os.PathLike[str],
    metric_names: Sequence[str] | None = None,
    *,
    n_queries: int = 8,
    top_k: int | None = None,
    n_missed: int | None = None,
    gallery_images: ImageSource | None = None,
    formats: Sequence[Format] | None = None,
    layout: GridLayout | None = None,
) -> list[Path]:
    """Write, per metric, the grid of its ``n_queries`` worst queries to ``folder/worst_<metric>.<format>``.

    Args:
        metrics: after ``compute()``.
        images: the images of the items the metrics saw (e.g. the validation dataset); see
            :data:`~omlcore.visualization.grid.ImageSource`.
        folder: created if needed.
        metric_names: flat per-query metric names (``"OVERALL/cmc/1"``, ``"<category>/map/5"``); default: every
            ``OVERALL`` one.
        formats: ``"html"`` and / or ``"png"``; default HTML, plus PNG when matplotlib is installed.
        n_queries, top_k, n_missed, gallery_images, layout: as :func:`~omlcore.visualization.grid.retrieval_rows`
            and :func:`~omlcore.visualization.grid.draw_grid`.

    Returns:
        The files written, metric by metric.
    """
    results = metrics.retrieval_results
    if results is None or metrics.metrics_unreduced is None:
        raise RetrievalInputError("call compute() on the metrics before drawing their worst queries")
    if metric_names is None:
        metric_names = sorted(flatten_metrics({"OVERALL": metrics.metrics_unreduced.get("OVERALL", {})}))
    if formats is None:
        formats = ["html", "png"] if is_available("matplotlib") else ["html"]
    unknown = sorted(set(formats) - {"html", "png"})
    if unknown:
        raise ValueError(f"formats must be 'html' and / or 'png', got {unknown}")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in metric_names:
        queries = metrics.get_worst_queries_ids(name, n_queries)
        stem = "worst_" + re.sub(r"[^A-Za-z0-9.@-]+", "_", name)
        options: dict[str, Any] = {
            "gallery_images": gallery_images,
            "top_k": top_k,
            "n_missed": n_missed,
            "n_queries": n_queries,
            "layout": layout,
        }
        if "html" in formats:
            title = f"The {len(queries)} worst queries by {name}"
            written.append(
                save_retrieval_html(target / f"{stem}.html", results, images, queries, title=title, **options)
            )
        if "png" in formats:
            written.append(save_retrieval_png(target / f"{stem}.png", results, images, queries, **options))
    return written
