"""The retrieval grid as a self-contained HTML page: images inline as base64 PNG, no script, no external asset."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from omlcore.retrieval.results import RetrievalResults
from omlcore.visualization.grid import FRAME_COLOURS, GridCell, GridLayout, ImageSource, read_from, retrieval_rows

__all__ = ["retrieval_html", "save_retrieval_html"]

_LEGEND = {
    "query": "query",
    "correct": "retrieved, relevant",
    "wrong": "retrieved, not relevant",
    "missed": "relevant, not retrieved in the top k",
    "retrieved": "retrieved (no labels)",
}


def _rgb(kind: str) -> str:
    red, green, blue = FRAME_COLOURS[kind]
    return f"rgb({red}, {green}, {blue})"


def _data_uri(image: Image.Image, size: int) -> str:
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(cell: GridCell, source: ImageSource, layout: GridLayout) -> str:
    uri = _data_uri(read_from(source, cell.item), layout.cell_size)
    caption = html.escape(cell.caption)
    return (
        f'<figure class="cell {cell.kind}" data-kind="{cell.kind}" data-item="{cell.item}">'
        f'<img src="{uri}" alt="{caption}" width="{layout.cell_size}" height="{layout.cell_size}" '
        f'style="border: {layout.frame}px solid {_rgb(cell.kind)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def retrieval_html(
    results: RetrievalResults,
    images: ImageSource,
    queries: Sequence[int] | None = None,
    *,
    gallery_images: ImageSource | None = None,
    top_k: int | None = None,
    n_missed: int | None = None,
    n_queries: int = 8,
    layout: GridLayout | None = None,
    title: str = "Retrieval results",
) -> str:
    """The grid as one HTML document (arguments as :func:`~omlcore.visualization.png.plot_retrieval_grid`).

    Needs no optional dependency. Each cell is a ``<figure>`` with ``data-kind`` (``query``, ``correct``,
    ``wrong``, ``missed`` or ``retrieved``), its image framed in the colour of :data:`FRAME_COLOURS`.
    """
    layout = layout or GridLayout()
    gallery_images = images if gallery_images is None else gallery_images
    rows = retrieval_rows(results, queries, top_k=top_k, n_missed=n_missed, n_queries=n_queries)
    kinds = sorted({cell.kind for row in rows for cell in row}, key=list(FRAME_COLOURS).index)
    legend = "".join(
        f'<span class="key" style="border-color: {_rgb(kind)}">{html.escape(_LEGEND[kind])}</span>' for kind in kinds
    )
    body = []
    for row in rows:
        cells = "".join(_cell(cell, images if cell.kind == "query" else gallery_images, layout) for cell in row)
        body.append(f'<div class="row" data-query="{row[0].query}">{cells}</div>')
    style = (
        "body{font-family:sans-serif;margin:16px;color:#222}"
        ".row{display:flex;gap:6px;align-items:flex-start;margin-bottom:10px}"
        ".cell{margin:0;text-align:center;font-size:11px}"
        ".cell img{display:block;image-rendering:pixelated;background:#fff}"
        ".cell.query{margin-right:12px}"
        ".key{display:inline-block;border-left:14px solid;padding-left:6px;margin-right:14px}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{legend}</p>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def save_retrieval_html(
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
    title: str = "Retrieval results",
) -> Path:
    """Write :func:`retrieval_html` (same arguments) to ``path`` (UTF-8); returns the path."""
    page = retrieval_html(
        results,
        images,
        queries,
        gallery_images=gallery_images,
        top_k=top_k,
        n_missed=n_missed,
        n_queries=n_queries,
        layout=layout,
        title=title,
    )
    target = Path(path)
    target.write_text(page, encoding="utf-8")
    return target
