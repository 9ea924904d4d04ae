"""Euclidean distances: against a naive loop, safe gradients where points coincide, NaN never hidden."""

from __future__ import annotations

import math

import pytest
import torch

from omlcore.functional import elementwise_distances, pairwise_distances, pairwise_squared_distances


def naive(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = [[math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(u, v, strict=True))) for v in y] for u in x]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("with_y", [False, True])
def test_pairwise_distances_against_a_naive_loop(with_y: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(6, 5, generator=generator, dtype=torch.float64) if with_y else None
    torch.testing.assert_close(pairwise_distances(x, y), naive(x, x if y is None else y))
    torch.testing.assert_close(pairwise_squared_distances(x, y), naive(x, x if y is None else y) ** 2)
    if y is None:
        assert torch.equal(pairwise_distances(x).diagonal(), torch.zeros(9, dtype=torch.float64))


def test_coinciding_points_have_zero_gradients_not_nan() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    pairwise_distances(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # rows 0 and 1 coincide: only their distances to row 2 pull on them, twice each (d[i, 2] and d[2, i])
    direction = (x[0] - x[2]).detach() / torch.linalg.vector_norm((x[0] - x[2]).detach())
    torch.testing.assert_close(x.grad[0], 2 * direction)
    torch.testing.assert_close(x.grad[1], 2 * direction)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_embedding_gives_non_finite_distances_not_zeros(bad: float) -> None:
    x = torch.randn(5, 3)
    x[2, 1] = bad
    distances = pairwise_distances(x)
    others = [0, 1, 3, 4]
    assert not torch.isfinite(distances[2, others]).any() and not torch.isfinite(distances[others, 2]).any()
    assert torch.isfinite(distances[others][:, others]).all()
    assert torch.isfinite(elementwise_distances(x[:3], x[2:5])).tolist() == [False, True, False]
