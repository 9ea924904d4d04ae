"""FNMR@FMR over all pairs, chunked and exact, against OML's definition on the explicit list of pair distances."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from fnmr_dense_oracle import dense_fnmr_at_fmr
from torch import Tensor

from omlcore.metrics import fnmr_at_fmr, fnmr_at_fmr_from_distances

FMR = (0.0, 0.001, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0)


def explicit_pairs(
    queries: Tensor, gallery: Tensor, query_labels: Tensor, gallery_labels: Tensor, exclude: list[tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """All non-excluded pair distances, split into positives and negatives (what OML materialises).

    Inputs are small integers, so squared distances are exact and ``sqrt`` in float32 gives the same bits as the
    chunked path.
    """
    squared = ((queries.double()[:, None] - gallery.double()[None]) ** 2).sum(-1).float()
    distances = squared.sqrt()
    valid = torch.ones_like(distances, dtype=torch.bool)
    for query_keys, gallery_keys in exclude:
        valid &= ~((query_keys[:, None] == gallery_keys[None]) & (query_keys[:, None] >= 0))
    same = query_labels[:, None] == gallery_labels[None]
    return distances[same & valid], distances[~same & valid]


def test_oml_docstring_example() -> None:
    pos = torch.tensor([0, 0, 1, 1, 2, 2, 5, 5, 9, 9.0])
    neg = torch.tensor([3, 3, 4, 4, 6, 6, 7, 7, 8, 8.0])
    assert fnmr_at_fmr_from_distances(pos, neg, (0.1, 0.5)).tolist() == pytest.approx([0.4, 0.2])


@pytest.mark.parametrize("chunk", [16, 48, 1024])
@pytest.mark.parametrize("spread", [2, 1000])  # 2: ties everywhere (exact second pass); 1000: separated clusters
def test_symmetric_with_exclusions_matches_explicit_pairs(chunk: int, spread: int) -> None:
    generator = torch.Generator().manual_seed(chunk + spread)
    n = 150
    labels = torch.randint(0, 20, (n,), generator=generator)
    centers = torch.randint(-spread, spread + 1, (20, 6), generator=generator).float()
    items = centers[labels] + torch.randint(-2, 3, (n, 6), generator=generator).float()
    ids, sequences = torch.arange(n), torch.randint(-1, 30, (n,), generator=generator)
    exclude = [(ids, ids), (sequences, sequences)]
    got = fnmr_at_fmr(items, items, labels, labels, FMR, exclude=exclude, chunk_size=chunk)
    expected = fnmr_at_fmr_from_distances(*explicit_pairs(items, items, labels, labels, exclude), FMR)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_separate_sets(metric: str) -> None:
    generator = torch.Generator().manual_seed(7)
    queries = torch.randint(-3, 4, (70, 5), generator=generator).float()
    gallery = torch.randint(-3, 4, (110, 5), generator=generator).float()
    query_labels, gallery_labels = torch.randint(0, 4, (70,), generator=generator), torch.arange(110) % 4
    got = fnmr_at_fmr(queries, gallery, query_labels, gallery_labels, FMR, metric=metric, chunk_size=32)  # type: ignore[arg-type]
    if metric == "l2":
        expected = fnmr_at_fmr_from_distances(*explicit_pairs(queries, gallery, query_labels, gallery_labels, []), FMR)
        assert got.tolist() == expected.tolist()
    else:  # rounding of 1 - cos differs between code paths; compare loosely
        cosine = 1 - torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
        same = query_labels[:, None] == gallery_labels[None]
        expected = fnmr_at_fmr_from_distances(cosine[same].clamp_min(0), cosine[~same].clamp_min(0), FMR)
        assert got.tolist() == pytest.approx(expected.tolist(), abs=0.02)


def test_random_float_data_agrees_closely() -> None:
    torch.manual_seed(3)
    items, labels = torch.randn(300, 16), torch.randint(0, 30, (300,))
    ids = torch.arange(300)
    got = fnmr_at_fmr(items, items, labels, labels, FMR, exclude=[(ids, ids)], chunk_size=64)
    distances = torch.cdist(items, items)
    valid = ~torch.eye(300, dtype=torch.bool)
    same = labels[:, None] == labels[None]
    expected = fnmr_at_fmr_from_distances(distances[same & valid], distances[~same & valid], FMR)
    assert got.tolist() == pytest.approx(expected.tolist(), abs=2 / int((same & valid).sum()))


def test_no_positive_pairs_gives_nan() -> None:
    items = torch.eye(4)
    result = fnmr_at_fmr(items, items, torch.arange(4), torch.arange(4), (0.1,), exclude=[(torch.arange(4),) * 2])
    assert math.isnan(result.item())
    with pytest.raises(ValueError, match=r"fmr_vals must be a non-empty sequence of numbers in \[0, 1\]"):
        fnmr_at_fmr(items, items, torch.arange(4), torch.arange(4), (1.5,))


def _oracle_cases() -> list[tuple[str, Tensor, Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]], int]]:
    generator = torch.Generator().manual_seed(12)
    cases = []
    for kind in ("gaussian", "grid", "few_labels"):
        n = int(torch.randint(120, 260, (1,), generator=generator))
        if kind == "grid":  # exact ties everywhere
            items = torch.randint(-2, 3, (n, 4), generator=generator).float()
        else:
            items = torch.randn(n, 12, generator=generator)
        labels = torch.randint(0, 3 if kind == "few_labels" else n // 6, (n,), generator=generator)
        ids, sequences = torch.arange(n), torch.randint(-1, 15, (n,), generator=generator)
        cases.append((f"{kind}-self", items, items, labels, labels, [(ids, ids), (sequences, sequences)], 48))
        gallery = torch.randn(90, items.shape[1], generator=generator) if kind != "grid" else items[:90] + 1
        gallery_labels = torch.randint(0, 3 if kind == "few_labels" else n // 6, (90,), generator=generator)
        cases.append((f"{kind}-sets", items, gallery, labels, gallery_labels, [], 32))
    return cases


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_equals_the_dense_implementation_it_replaced(metric: str) -> None:
    """Bit-equal to the previous implementation (dense label masks per block), kept as a test oracle."""
    fmr = (0.0, 0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 1.0)
    for name, queries, gallery, query_labels, gallery_labels, exclude, chunk in _oracle_cases():
        kwargs: dict[str, Any] = {"exclude": exclude, "metric": metric, "chunk_size": chunk}
        got = fnmr_at_fmr(queries, gallery, query_labels, gallery_labels, fmr, **kwargs)
        expected = dense_fnmr_at_fmr(queries, gallery, query_labels, gallery_labels, fmr, **kwargs)
        assert torch.equal(got.nan_to_num(-1), expected.nan_to_num(-1)), name
