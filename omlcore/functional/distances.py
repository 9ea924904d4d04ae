"""Euclidean distances between embeddings, safe to differentiate where two embeddings coincide."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["elementwise_distances", "pairwise_distances", "pairwise_squared_distances"]


def pairwise_squared_distances(x: Tensor, y: Tensor | None = None) -> Tensor:
    """``d2[i, j] = ||x_i - y_j||^2`` via ``|x|^2 + |y|^2 - 2 x y^T`` (one matrix product), clamped at 0.

    Args:
        x: ``(N, D)``; y: ``(M, D)``, or None for ``y = x`` (then the diagonal is exactly 0).

    Returns:
        ``(N, M)``, same dtype and device as ``x``.
    """
    x_sq = x.pow(2).sum(1)
    if y is None:
        d2 = torch.addmm(x_sq.unsqueeze(1) + x_sq.unsqueeze(0), x, x.t(), alpha=-2.0)
        d2.diagonal().zero_()
    else:
        y_sq = y.pow(2).sum(1)
        d2 = torch.addmm(x_sq.unsqueeze(1) + y_sq.unsqueeze(0), x, y.t(), alpha=-2.0)
    return d2.clamp_min_(0.0) if not d2.requires_grad else d2.clamp_min(0.0)


def pairwise_distances(x: Tensor, y: Tensor | None = None) -> Tensor:
    """``d[i, j] = ||x_i - y_j||_2`` (``(N, M)``), with a zero gradient (not NaN) where ``d == 0``.

    The matrix-product form is as exact as ``torch.cdist`` for distinct points (it is what ``cdist`` does
    for more than 25 rows); use :func:`elementwise_distances` where a few distances must be exact. A NaN
    embedding gives NaN distances (never a silent 0), so that the losses built on them are NaN too.
    """
    d2 = pairwise_squared_distances(x, y)
    nonzero = d2 != 0  # NaN included
    return torch.where(nonzero, torch.where(nonzero, d2, 1.0).sqrt(), 0.0)


def elementwise_distances(x: Tensor, y: Tensor) -> Tensor:
    """``d[i] = ||x_i - y_i||_2`` for two ``(N, D)`` tensors (exact; zero gradient where ``x_i == y_i``)."""
    return torch.linalg.vector_norm(x - y, dim=1)
