"""Retrieval results drawn as a grid: per query its top-k neighbours and the relevant items it missed.

Frames: green for a relevant neighbour, red for a wrong one, grey for a relevant item outside the top k; as a
PNG (matplotlib: ``pip install "omlcore[viz]"``) or a self-contained HTML page (no optional dependency):

>>> metrics.compute()  # an EmbeddingMetrics fed with the batches of `dataset`  # doctest: +SKIP
>>> worst = metrics.get_worst_queries_ids("OVERALL/cmc/1", 10)  # doctest: +SKIP
>>> save_retrieval_html("worst.html", metrics.retrieval_results, dataset, worst)  # doctest: +SKIP
>>> save_retrieval_png("worst.png", metrics.retrieval_results, dataset, worst)  # doctest: +SKIP
>>> save_worst_queries(metrics, dataset, "run/retrieval")  # one grid per metric  # doctest: +SKIP

Importing this package imports no matplotlib; only drawing a PNG does.
"""

from __future__ import annotations

from omlcore.visualization.grid import (
    FRAME_COLOURS,
    CellKind,
    GridCell,
    GridLayout,
    ImageSource,
    SupportsReadImage,
    draw_grid,
    retrieval_rows,
)
from omlcore.visualization.html_page import retrieval_html, save_retrieval_html
from omlcore.visualization.png import plot_retrieval_grid, save_retrieval_png
from omlcore.visualization.worst import SupportsWorstQueries, save_worst_queries

__all__ = [
    "FRAME_COLOURS",
    "CellKind",
    "GridCell",
    "GridLayout",
    "ImageSource",
    "SupportsReadImage",
    "SupportsWorstQueries",
    "draw_grid",
    "plot_retrieval_grid",
    "retrieval_html",
    "retrieval_rows",
    "save_retrieval_html",
    "save_retrieval_png",
    "save_worst_queries",
]
