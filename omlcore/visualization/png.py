"""The retrieval grid as a matplotlib figure / PNG file (``pip install "omlcore[viz]"``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omlcore.retrieval.results import RetrievalResults
from omlcore.utils.optional import require
from omlcore.visualization.grid import GridLayout, ImageSource, draw_grid, retrieval_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_retrieval_grid", "save_retrieval_png"]

_DPI = 100


def plot_retrieval_grid(
    results: RetrievalResults,
    images: ImageSource,
    queries: Sequence[int] | None = None,
    *,
    gallery_images: ImageSource | None = None,
    top_k: int | None = None,
    n_missed: int | None = None,
    n_queries: int = 8,
    layout: GridLayout | None = None,
) -> Figure:
    """A figure of the grid (see :func:`~omlcore.visualization.grid.retrieval_rows` for the arguments).

    The grid is drawn pixel for pixel (one figure pixel per array pixel at 100 dpi), captions in the strip above
    each cell. The figure is not registered with pyplot: no backend is switched, nothing is shown.
    """
    figure_module = require("matplotlib.figure", "viz", what="The PNG retrieval grid")
    layout = layout or GridLayout()
    rows = retrieval_rows(results, queries, top_k=top_k, n_missed=n_missed, n_queries=n_queries)
    canvas, cells = draw_grid(rows, images, gallery_images, layout)
    height, width = canvas.shape[:2]
    figure = figure_module.Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    figure.figimage(canvas, 0, 0, origin="upper")
    for cell, (x, y) in cells:
        figure.text(
            (x + layout.cell_outer / 2) / width,
            1 - (y - 2) / height,
            cell.caption,
            ha="center",
            va="bottom",
            fontsize=7,
            color="black",
        )
    return figure


def save_retrieval_png(
    path: str | os.PathLike[str],
    results: RetrievalResults,
    images: ImageSource,
    queries: Sequence[int] | None = None,
    *,
    gallery_images: ImageSource | None = None,
    top_k: int | None = None,
    n_missed: int | None = None,
    n_queries: int = 8,
    layout: GridLayout | None = None,
) -> Path:
    """Write :func:`plot_retrieval_grid` (same arguments) to a PNG file; returns its path."""
    figure = plot_retrieval_grid(
        results,
        images,
        queries,
        gallery_images=gallery_images,
        top_k=top_k,
        n_missed=n_missed,
        n_queries=n_queries,
        layout=layout,
    )
    target = Path(path)
    figure.savefig(target, format="png", dpi=_DPI)
    return target
