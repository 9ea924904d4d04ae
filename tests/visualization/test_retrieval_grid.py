"""Retrieval grids on a hand-built case: which cells each row shows, their frames in the PNG and the HTML page."""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
import textwrap
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from omlcore.datasets import ImageQueryGalleryDataset
from omlcore.errors import MissingDependencyError
from omlcore.metrics import EmbeddingMetrics
from omlcore.retrieval import RetrievalInputError, RetrievalResults
from omlcore.visualization import (
    FRAME_COLOURS,
    GridCell,
    GridLayout,
    draw_grid,
    retrieval_html,
    retrieval_rows,
    save_retrieval_html,
    save_retrieval_png,
    save_worst_queries,
)

# Gallery positions 0..5 are items 10..15; query 0 is item 11 (also gallery position 1, so never its own match),
# query 1 is item 20. Query 0 (label 0) retrieves positions 2, 4, 3; query 1 (label 1) retrieves 5, 0 and padding.
GALLERY_LABELS = [0, 0, 1, 0, 2, 1]
INF = float("inf")


def hand_built(labels: bool = True) -> RetrievalResults:
    return RetrievalResults(
        distances=torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.6, INF]]),
        retrieved_ids=torch.tensor([[2, 4, 3], [5, 0, -1]]),
        n_relevant=torch.tensor([2, 2]) if labels else torch.tensor([-1, -1]),
        n_gallery=6,
        query_labels=torch.tensor([0, 1]) if labels else None,
        gallery_labels=torch.tensor(GALLERY_LABELS) if labels else None,
        query_ids=torch.tensor([11, 20]),
        gallery_ids=torch.arange(10, 16),
    )


def colour_of(item: int) -> tuple[int, int, int]:
    """A distinct solid colour per item, so that a cell shows which item it holds."""
    return (item * 11 % 256, item * 37 % 256, 255 - item * 5)


def solid(item: int) -> Image.Image:
    return Image.new("RGB", (20, 30), colour_of(item))  # not square: letterboxed in the cell


def summary(rows: list[list[GridCell]]) -> list[list[tuple[str, int, int | None]]]:
    return [[(cell.kind, cell.item, cell.rank) for cell in row] for row in rows]


# --- which cells ---------------------------------------------------------------------------------------------------


def test_rows_show_query_then_top_k_then_missed_relevant_items() -> None:
    rows = retrieval_rows(hand_built())
    assert summary(rows) == [
        [("query", 11, None), ("wrong", 12, 1), ("wrong", 14, 2), ("correct", 13, 3), ("missed", 10, None)],
        [("query", 20, None), ("correct", 15, 1), ("wrong", 10, 2), ("missed", 12, None)],
    ]
    assert [cell.label for cell in rows[0]] == [0, 1, 2, 0, 0]
    assert rows[0][1].distance == pytest.approx(0.1) and rows[0][-1].distance is None


def test_a_relevant_item_below_the_shown_top_k_is_missed_with_its_rank_first() -> None:
    rows = retrieval_rows(hand_built(), [0], top_k=2)
    assert summary(rows) == [
        [("query", 11, None), ("wrong", 12, 1), ("wrong", 14, 2), ("missed", 13, 3), ("missed", 10, None)]
    ]
    assert rows[0][3].distance == pytest.approx(0.3)
    assert [cell.caption for cell in rows[0]] == [
        "query 11 (0)",
        "#1 0.1 (1)",
        "#2 0.2 (2)",
        "#3 0.3 (0)",
        "missed (0)",
    ]
    assert summary(retrieval_rows(hand_built(), [0], top_k=2, n_missed=1))[0][-1] == ("missed", 13, 3)
    assert len(retrieval_rows(hand_built(), [0], n_missed=0)[0]) == 4


def test_chosen_queries_come_in_the_given_order_and_must_exist() -> None:
    assert [row[0].query for row in retrieval_rows(hand_built(), [1, 0])] == [1, 0]
    assert [row[0].query for row in retrieval_rows(hand_built(), n_queries=1)] == [0]
    with pytest.raises(RetrievalInputError, match=r"query positions \[2\] are out of range"):
        retrieval_rows(hand_built(), [2])


def test_without_labels_neighbours_are_neither_right_nor_wrong() -> None:
    rows = retrieval_rows(hand_built(labels=False))
    assert summary(rows)[1] == [("query", 20, None), ("retrieved", 15, 1), ("retrieved", 10, 2)]
    assert rows[1][1].caption == "#1 0.5"


def computed_metrics() -> EmbeddingMetrics:
    """Five items on a line; item 4 (label 1) sits between the clusters, closer to label 0."""
    embeddings = torch.tensor([[0.0], [0.1], [1.0], [1.1], [0.5]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    metrics = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(2,), map_top_k=(), pcf_variance=())
    flags = torch.ones(5, dtype=torch.bool)
    metrics.update({"embeddings": embeddings, "labels": labels, "is_query": flags, "is_gallery": flags})
    metrics.compute()
    return metrics


def test_the_worst_queries_of_a_metric_come_first() -> None:
    metrics = computed_metrics()
    assert metrics.retrieval_results is not None
    worst = metrics.get_worst_queries_ids("OVERALL/cmc/1", 1)
    row = retrieval_rows(metrics.retrieval_results, worst, top_k=1)[0]
    assert [(cell.kind, cell.item) for cell in row] == [("query", 4), ("wrong", 1), ("missed", 2)]


def test_a_validation_run_writes_the_worst_queries_of_every_metric(tmp_path: Path) -> None:
    written = save_worst_queries(computed_metrics(), solid, tmp_path / "retrieval", n_queries=2, formats=["html"])
    assert [path.name for path in written] == ["worst_OVERALL_cmc_1.html", "worst_OVERALL_precision_2.html"]
    figures = parse(written[0].read_text(encoding="utf-8")).figures
    assert (figures[0]["kind"], figures[0]["item"]) == ("query", 4)  # the worst query's row comes first
    assert "The 2 worst queries by OVERALL/cmc/1" in written[0].read_text(encoding="utf-8")
    if importlib.util.find_spec("matplotlib") is not None:
        assert {path.suffix for path in save_worst_queries(computed_metrics(), solid, tmp_path)} == {".html", ".png"}
    with pytest.raises(RetrievalInputError, match="call compute"):
        save_worst_queries(EmbeddingMetrics(), solid, tmp_path)


# --- the PNG -------------------------------------------------------------------------------------------------------


def test_the_png_is_the_grid_pixel_for_pixel_with_coloured_frames(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    layout = GridLayout(cell_size=40, frame=3, gap=5, caption_height=14)
    path = save_retrieval_png(tmp_path / "grid.png", hand_built(), solid, layout=layout)
    canvas, cells = draw_grid(retrieval_rows(hand_built()), solid, layout=layout)
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == canvas.shape == (5 + 2 * (14 + 46 + 5), 5 + (51 + 5) + (3 * 51 + 5) + (51 + 5), 3)
    assert len(cells) == 9
    for cell, (x, y) in cells:
        for dx, dy in ((0, 0), (45, 45), (1, 30), (44, 2)):  # frame pixels, corners and sides
            assert tuple(pixels[y + dy, x + dx]) == FRAME_COLOURS[cell.kind], (cell, dx, dy)
        assert tuple(pixels[y + 23, x + 23]) == colour_of(cell.item), cell  # the right image inside
        assert tuple(pixels[y + 23, x + 5]) == (255, 255, 255)  # letterboxed: white beside the narrow image
    caption_strip = pixels[5:19, 5:51]
    assert (caption_strip != 255).any()  # the query's caption was drawn


def test_the_png_needs_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "omlcore\[viz\]"'):
        save_retrieval_png(tmp_path / "grid.png", hand_built(), solid)


# --- the HTML page -------------------------------------------------------------------------------------------------


class Cells(HTMLParser):
    """Collects every figure's data-kind / data-item and its image's src and style, plus every URL-like attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.add(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]
        if tag == "figure":
            self.figures.append({"kind": values["data-kind"], "item": int(values["data-item"] or -1)})
        elif tag == "img":
            self.figures[-1].update(src=values["src"], style=values["style"])


def parse(page: str) -> Cells:
    parser = Cells()
    parser.feed(page)
    return parser


def test_the_html_page_is_self_contained_and_frames_each_item_by_its_kind(tmp_path: Path) -> None:
    path = save_retrieval_html(tmp_path / "grid.html", hand_built(), solid, title="Worst <queries>")
    page = path.read_text(encoding="utf-8")
    parsed = parse(page)
    assert "http://" not in page and "https://" not in page
    assert not parsed.tags & {"script", "link", "iframe", "object"}
    assert all(url.startswith("data:image/png;base64,") for url in parsed.urls) and len(parsed.urls) == 9
    expected = [cell for row in retrieval_rows(hand_built()) for cell in row]
    assert [(f["kind"], f["item"]) for f in parsed.figures] == [(c.kind, c.item) for c in expected]
    for figure in parsed.figures:
        red, green, blue = FRAME_COLOURS[figure["kind"]]
        assert figure["style"] == f"border: 4px solid rgb({red}, {green}, {blue})"
        with Image.open(io.BytesIO(base64.b64decode(figure["src"].split(",", 1)[1]))) as image:
            assert image.format == "PNG" and image.getpixel((image.width // 2, image.height // 2)) == colour_of(
                figure["item"]
            )
    assert "<title>Worst &lt;queries&gt;</title>" in page
    assert "missed (0)" in page and "relevant, not retrieved in the top k" in page


def test_the_html_page_reads_a_dataset_and_separate_gallery_images(tmp_path: Path) -> None:
    rows = []
    for item in range(4):
        Image.new("RGB", (8, 8), colour_of(item)).save(tmp_path / f"{item}.png")
        rows.append(
            {"label": item // 2, "path": f"{item}.png", "split": "validation", "is_query": True, "is_gallery": True}
        )
    pd.DataFrame(rows).to_csv(tmp_path / "df.csv", index=False)
    dataset = ImageQueryGalleryDataset(tmp_path / "df.csv")
    results = RetrievalResults.from_embeddings(
        torch.tensor([[0.0], [0.1], [1.0], [1.1]]), dataset.get_labels(), top_k=1
    )
    page = retrieval_html(results, dataset, [2])
    figures = parse(page).figures
    assert [(f["kind"], f["item"]) for f in figures] == [("query", 2), ("correct", 3)]
    gallery = [Image.new("RGB", (4, 4), (0, 0, 0))] * 4
    figures = parse(retrieval_html(results, dataset, [2], gallery_images=lambda item: gallery[item])).figures
    with Image.open(io.BytesIO(base64.b64decode(figures[1]["src"].split(",", 1)[1]))) as image:
        assert image.getpixel((1, 1)) == (0, 0, 0)  # the neighbour came from the gallery source
    paths = [str(tmp_path / f"{item}.png") for item in range(4)]
    assert parse(retrieval_html(results, paths, [2])).figures[0]["item"] == 2


def test_a_wrong_image_source_is_named() -> None:
    with pytest.raises(TypeError, match="read_image"):
        retrieval_html(hand_built(), 42, [0])  # type: ignore[arg-type]


def test_drawing_html_imports_no_matplotlib(python_runner: Callable[..., Any]) -> None:
    code = textwrap.dedent(
        """
        import sys, torch
        from PIL import Image
        from omlcore.retrieval import RetrievalResults
        from omlcore.visualization import retrieval_html
        results = RetrievalResults.from_embeddings(torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2]), top_k=2)
        retrieval_html(results, lambda item: Image.new("RGB", (4, 4)))
        print("matplotlib" in sys.modules)
        """
    )
    result = python_runner(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"


def test_grid_images_are_read_by_the_datasets_pixel_rule(tmp_path: Path) -> None:
    """A 16-bit grayscale file is scaled to 8 bits (not clipped at 255), as the datasets read it."""
    from omlcore.datasets.pixels import to_rgb
    from omlcore.visualization.grid import read_from

    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 25_500, 51_000]], dtype=np.uint16)).save(path)
    with Image.open(path) as opened:
        expected = np.asarray(to_rgb(opened))
    got = np.asarray(read_from([str(path)], 0))
    assert np.array_equal(got, expected) and len(np.unique(got[..., 0])) == 3 and got.max() < 255
