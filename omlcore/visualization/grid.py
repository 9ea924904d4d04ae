"""The retrieval grid: which images a row shows and how each is framed, and the grid drawn as one RGB array.

A row is one query: the query itself, its top-k gallery items (green frame: relevant, red: not), then relevant
gallery items that were not in the top k (grey frame: missed), closest first where their rank is known.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from omlcore.datasets.pixels import to_rgb
from omlcore.retrieval.results import RetrievalResults
from omlcore.retrieval.validation import RetrievalInputError

__all__ = [
    "FRAME_COLOURS",
    "CellKind",
    "GridCell",
    "GridLayout",
    "ImageSource",
    "SupportsReadImage",
    "draw_grid",
    "read_from",
    "retrieval_rows",
]

CellKind = Literal["query", "correct", "wrong", "missed", "retrieved"]

#: Frame colour (RGB) of each kind of cell; ``retrieved`` is a neighbour of results without labels.
FRAME_COLOURS: dict[str, tuple[int, int, int]] = {
    "query": (31, 119, 180),
    "correct": (0, 160, 60),
    "wrong": (214, 39, 40),
    "missed": (150, 150, 150),
    "retrieved": (60, 60, 60),
}
_BACKGROUND = (255, 255, 255)


@runtime_checkable
class SupportsReadImage(Protocol):
    """Anything that reads item ``idx`` as a PIL image, e.g. :class:`~omlcore.datasets.ImageQueryGalleryDataset`."""

    def read_image(self, idx: int) -> Image.Image: ...


#: Where images come from: a dataset with ``read_image(idx)`` (crops to the bbox), a sequence of file paths
#: indexed by item (a list, e.g. ``df["path"].tolist()``), or a callable ``idx -> PIL image``.
ImageSource = SupportsReadImage | Sequence[str | os.PathLike[str]] | Callable[[int], Image.Image]


@dataclass(frozen=True)
class GridCell:
    """One image of the grid.

    Attributes:
        kind: the frame (see :data:`FRAME_COLOURS`).
        query: the query position (``0 .. Q-1``) of the row.
        item: the item shown: the query's dataset index in the query cell, else the gallery item's (both are
            positions when the results carry no ids).
        rank: 1-based rank among the retrieved items (None for the query and for missed items beyond the
            retrieved ones).
        distance: the distance to the query where known.
        label: the item's label where known.
    """

    kind: CellKind
    query: int
    item: int
    rank: int | None = None
    distance: float | None = None
    label: int | None = None

    @property
    def caption(self) -> str:
        """``query 12 (3)``, ``#2 0.412 (5)``, ``missed (3)``: item or rank and distance, then the label."""
        if self.kind == "query":
            head = f"query {self.item}"
        elif self.rank is None:
            head = "missed"
        else:
            head = f"#{self.rank} {self.distance:.3g}" if self.distance is not None else f"#{self.rank}"
        return f"{head} ({self.label})" if self.label is not None else head


def _item(ids: torch.Tensor | None, position: int) -> int:
    return int(ids[position]) if ids is not None else position


def _relevant(results: RetrievalResults, query: int) -> np.ndarray:
    """Gallery positions relevant to one query: same label, not the query item, not in its sequence."""
    assert results.query_labels is not None and results.gallery_labels is not None
    relevant = (results.gallery_labels == results.query_labels[query]).cpu()
    if results.query_ids is not None and results.gallery_ids is not None:
        relevant &= (results.gallery_ids != results.query_ids[query]).cpu()
    if results.query_sequences is not None and results.gallery_sequences is not None:
        sequence = int(results.query_sequences[query])
        if sequence >= 0:
            relevant &= (results.gallery_sequences != sequence).cpu()
    return np.flatnonzero(relevant.numpy())


def retrieval_rows(
    results: RetrievalResults,
    queries: Sequence[int] | None = None,
    *,
    top_k: int | None = None,
    n_missed: int | None = None,
    n_queries: int = 8,
) -> list[list[GridCell]]:
    """The cells of each row (query, top-k, missed relevant items).

    Args:
        results: what was retrieved.
        queries: query positions ``0 .. Q-1`` (e.g. ``EmbeddingMetrics.get_worst_queries_ids("OVERALL/cmc/1", 8)``);
            default: the first ``n_queries``.
        top_k: how many retrieved items to show (at most the results' K); default all K.
        n_missed: at most this many missed relevant items per row (default ``top_k``; 0 for none).
        n_queries: how many rows without ``queries``.
    """
    top_k = results.top_k if top_k is None else min(_positive("top_k", top_k), results.top_k)
    n_missed = top_k if n_missed is None else n_missed
    if n_missed < 0:
        raise ValueError(f"n_missed must be 0 or more, got {n_missed}")
    chosen = list(range(min(n_queries, results.n_queries))) if queries is None else [int(q) for q in queries]
    outside = [q for q in chosen if not 0 <= q < results.n_queries]
    if outside:
        raise RetrievalInputError(
            f"query positions {outside[:5]} are out of range: the results hold {results.n_queries} queries "
            "(positions 0 .. Q-1, as EmbeddingMetrics.get_worst_queries_ids returns them)"
        )
    labelled = results.query_labels is not None and results.gallery_labels is not None
    rows = []
    for query in chosen:
        distances, retrieved = results.retrieved(query)
        label = int(results.query_labels[query]) if results.query_labels is not None else None
        row = [GridCell("query", query, _item(results.query_ids, query), label=label)]
        ranks = {int(position): rank for rank, position in enumerate(retrieved.tolist(), start=1)}
        for rank, (distance, position) in enumerate(zip(distances.tolist(), retrieved.tolist(), strict=True), 1):
            if rank > top_k:
                break
            gallery_label = int(results.gallery_labels[position]) if results.gallery_labels is not None else None
            kind: CellKind = "retrieved" if not labelled else "correct" if gallery_label == label else "wrong"
            row.append(GridCell(kind, query, _item(results.gallery_ids, position), rank, distance, gallery_label))
        if labelled and n_missed:
            unknown = results.n_gallery + 1  # sorts missed items without a rank after those with one
            missed = [int(p) for p in _relevant(results, query) if ranks.get(int(p), unknown) > top_k]
            missed.sort(key=lambda p: (ranks.get(p, unknown), p))
            for position in missed[:n_missed]:
                known = ranks.get(position)
                far = float(distances[known - 1]) if known is not None else None
                row.append(GridCell("missed", query, _item(results.gallery_ids, position), known, far, label))
        rows.append(row)
    return rows


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def read_from(source: ImageSource, item: int) -> Image.Image:
    """Item ``item`` of an :data:`ImageSource` as an 8-bit RGB image (16-bit, float and transparent images by
    :func:`~omlcore.datasets.pixels.to_rgb`, as the datasets read them)."""
    if isinstance(source, SupportsReadImage):
        image = source.read_image(item)
    elif isinstance(source, (Sequence, np.ndarray)) and not isinstance(source, str):
        with Image.open(source[item]) as opened:
            image = to_rgb(opened)
    elif callable(source):
        image = source(item)
    else:
        raise TypeError(
            "images must be a dataset with read_image(idx), a sequence of file paths or a callable idx -> image; "
            f"got {type(source).__name__}"
        )
    return to_rgb(image)


@dataclass(frozen=True)
class GridLayout:
    """Sizes in pixels: each cell is a ``cell_size`` square image inside a ``frame``-wide coloured frame, with a
    ``caption_height`` strip above it; cells are ``gap`` apart, and the query, retrieved and missed groups are
    ``2 * gap`` apart."""

    cell_size: int = 96
    frame: int = 4
    gap: int = 6
    caption_height: int = 16

    @property
    def cell_outer(self) -> int:
        return self.cell_size + 2 * self.frame


def _fit(image: Image.Image, size: int) -> np.ndarray:
    """``image`` scaled to fit a ``size`` square (aspect kept, centred on white)."""
    scale = size / max(image.size)
    width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    resample = Image.Resampling.NEAREST if scale >= 2 and max(image.size) <= 64 else Image.Resampling.BICUBIC
    resized = image.resize((width, height), resample)
    square = Image.new("RGB", (size, size), _BACKGROUND)
    square.paste(resized, ((size - width) // 2, (size - height) // 2))
    return np.asarray(square)


def draw_grid(
    rows: Sequence[Sequence[GridCell]],
    images: ImageSource,
    gallery_images: ImageSource | None = None,
    layout: GridLayout | None = None,
) -> tuple[np.ndarray, list[tuple[GridCell, tuple[int, int]]]]:
    """The grid as one uint8 RGB array, and every cell with the top-left pixel of its frame ``(x, y)``.

    Query cells read from ``images``, the others from ``gallery_images`` (default ``images``), by
    :attr:`GridCell.item`. Captions are left to the caller (their strips stay white).
    """
    layout = layout or GridLayout()
    gallery_images = images if gallery_images is None else gallery_images

    def group(cell: GridCell) -> int:
        """0: the query, 1: the retrieved items, 2: the missed ones (each group is a block of columns)."""
        return 0 if cell.kind == "query" else 2 if cell.kind == "missed" else 1

    widths = [max((sum(group(c) == g for c in row) for row in rows), default=0) for g in range(3)]
    step = layout.cell_outer + layout.gap
    starts, x = [], layout.gap
    for count in widths:
        starts.append(x)
        x += count * step + (layout.gap if count else 0)
    width = max(x, step + layout.gap)
    row_height = layout.caption_height + layout.cell_outer + layout.gap
    canvas = np.full((layout.gap + len(rows) * row_height, width, 3), _BACKGROUND, dtype=np.uint8)
    placed = []
    for r, row in enumerate(rows):
        y = layout.gap + r * row_height + layout.caption_height
        counts = [0, 0, 0]
        for cell in row:
            g = group(cell)
            x = starts[g] + counts[g] * step
            counts[g] += 1
            source = images if cell.kind == "query" else gallery_images
            canvas[y : y + layout.cell_outer, x : x + layout.cell_outer] = FRAME_COLOURS[cell.kind]
            inner = slice(y + layout.frame, y + layout.frame + layout.cell_size)
            canvas[inner, x + layout.frame : x + layout.frame + layout.cell_size] = _fit(
                read_from(source, cell.item), layout.cell_size
            )
            placed.append((cell, (x, y)))
    return canvas, placed
