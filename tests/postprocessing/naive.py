"""Data and dense, naive building blocks (float64 numpy, full matrices) for the training-free postprocessors' tests."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import torch

from omlcore.postprocessing import PostprocessorError, RetrievalContext
from omlcore.retrieval import QueryGallerySplit, RetrievalResults

Layout = Literal["leave_one_out", "overlap", "sets"]
LAYOUTS: tuple[Layout, ...] = ("leave_one_out", "overlap", "sets")
METRICS = ("l2", "cosine")


def clustered(seed: int, n_labels: int = 8, per_label: int = 5, dim: int = 6, noise: float = 0.6) -> torch.Tensor:
    """float32 points around one random centre per label, labels ``i // per_label``."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_labels, dim, generator=generator)
    labels = torch.arange(n_labels * per_label) // per_label
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator)


def integer_points(seed: int, n: int = 30, dim: int = 3) -> torch.Tensor:
    """Small integers (exact float32 distances, many ties), with a few exact duplicates."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randint(-2, 3, (n, dim), generator=generator).float()
    points[n // 2 : n // 2 + 3] = points[0]
    return points


def make_split(layout: Layout, points: torch.Tensor, seed: int = 0) -> QueryGallerySplit:
    """``leave_one_out``: every item both query and gallery; ``overlap``: OML's flags, some items both, some only
    one, with sequences; ``sets``: separate queries (the first third) and gallery."""
    n = len(points)
    labels = torch.arange(n) % 5
    if layout == "leave_one_out":
        return QueryGallerySplit.from_items(points, labels)
    if layout == "sets":
        return QueryGallerySplit.from_sets(points[: n // 3], points[n // 3 :], labels[: n // 3], labels[n // 3 :])
    generator = torch.Generator().manual_seed(seed)
    role = torch.randint(0, 3, (n,), generator=generator)  # 0: both, 1: query only, 2: gallery only
    sequence = torch.randint(0, 4, (n,), generator=generator)
    sequences = torch.where(torch.rand(n, generator=generator) < 0.5, sequence, -1)
    return QueryGallerySplit.from_items(points, labels, role != 2, role != 1, sequences)


def retrieve(split: QueryGallerySplit, metric: str, top_k: int = 5) -> tuple[RetrievalResults, RetrievalContext]:
    """The plain kNN results of ``split`` and their context."""
    results = RetrievalResults.from_split(split, top_k=top_k, metric=metric)  # type: ignore[arg-type]
    return results, RetrievalContext(split, metric=metric)  # type: ignore[arg-type]


def array(tensor: torch.Tensor | None) -> np.ndarray:
    assert tensor is not None
    return tensor.double().numpy() if tensor.is_floating_point() else tensor.numpy()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def distances(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """``(Q, G)``: Euclidean, or ``1 - cos``, by loops over pairs."""
    out = np.empty((len(queries), len(gallery)))
    for i, q in enumerate(queries):
        for j, g in enumerate(gallery):
            out[i, j] = np.linalg.norm(q - g) if metric == "l2" else 1 - unit(q) @ unit(g)
    return out


def allowed(split: QueryGallerySplit) -> np.ndarray:
    """bool ``(Q, G)``: the pair is not excluded (not the same item id, not the same sequence ``>= 0``)."""
    out = np.ones((len(split.queries), len(split.gallery)), dtype=bool)
    for i in range(len(split.queries)):
        for j in range(len(split.gallery)):
            if split.query_ids is not None and split.gallery_ids is not None:
                out[i, j] &= int(split.query_ids[i]) != int(split.gallery_ids[j])
            if split.query_sequences is not None and split.gallery_sequences is not None:
                sequence = int(split.query_sequences[i])
                out[i, j] &= not (sequence >= 0 and sequence == int(split.gallery_sequences[j]))
    return out


def nearest(row: np.ndarray, n: int) -> list[int]:
    """The ``n`` smallest finite entries' indices, by (value, index)."""
    order = sorted((value, index) for index, value in enumerate(row) if np.isfinite(value))
    return [index for _, index in order[:n]]


def assert_rows_equal(results: RetrievalResults, reference: np.ndarray, width: int, atol: float = 1e-5) -> None:
    """``results`` holds, per row, the ``width`` smallest finite entries of ``reference`` (``(Q, G)``, ``inf``: not
    retrievable) in ascending order: the same values at every position, and every returned id has its value there
    (so ids may differ only among entries equal within ``atol``)."""
    distances_, ids = results.distances.double().numpy(), results.retrieved_ids.numpy()
    expected_width = max(min(width, int(np.isfinite(row).sum())) for row in reference)
    assert results.top_k == expected_width
    for row, (values, got) in enumerate(zip(distances_, ids, strict=True)):
        expected = np.sort(reference[row][np.isfinite(reference[row])])[:width]
        n = len(expected)
        assert (got[:n] >= 0).all() and (got[n:] == -1).all(), f"row {row}: {got} for {n} items"
        assert len(set(got[:n].tolist())) == n
        np.testing.assert_allclose(values[:n], expected, rtol=1e-5, atol=atol, err_msg=f"row {row}")
        np.testing.assert_allclose(reference[row, got[:n]], values[:n], rtol=1e-5, atol=atol, err_msg=f"row {row}")


def assert_other_splits_are_named(step: Any) -> None:
    """Results of 40 queries in 40 gallery items, given with splits of 13 queries or of 10 gallery items: errors that
    name the postprocessor, both sizes and the fix."""
    results, _ = retrieve(make_split("leave_one_out", clustered(seed=8)), "l2")
    name = type(step).__name__
    with pytest.raises(PostprocessorError, match=rf"^{name}: the results have 40 queries but .* has 13; build"):
        step.process(results, RetrievalContext(make_split("sets", clustered(seed=8))))
    same_queries = QueryGallerySplit.from_sets(torch.randn(40, 6), torch.randn(10, 6))
    with pytest.raises(PostprocessorError, match=rf"^{name}: the results index a gallery of 40 items but .* has 10"):
        step.process(results, RetrievalContext(same_queries))
