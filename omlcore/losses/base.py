"""What omlcore's losses share: reductions, graph-connected zeros and ``last_logs``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["REDUCTIONS", "Reduction", "check_reduction", "logs_of", "reduce", "zero_loss"]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def check_reduction(owner: str, reduction: str) -> Reduction:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    return reduction  # type: ignore[return-value]


def zero_loss(*tensors: Tensor) -> Tensor:
    """A 0-dim zero connected to the graph of every tensor given (``sum(t) * 0``).

    ``backward()`` then gives each of them, and the parameters behind them, a zero gradient rather than None, so
    DDP finds no unused parameter. Exact for finite tensors; a NaN or infinite entry makes it NaN, so that a
    loss with this term added cannot hide a broken embedding (e.g. one that no mined tuple uses).
    """
    total = tensors[0].new_zeros(())
    for tensor in tensors:
        total = total + tensor.sum().to(total.dtype) * 0.0
    return total


def reduce(losses: Tensor, reduction: Reduction, *graph: Tensor) -> Tensor:
    """``mean`` / ``sum`` / ``none`` of per-tuple ``losses``; an empty ``losses`` gives :func:`zero_loss` of
    ``graph`` (an empty ``(0,)`` tensor for ``none``) instead of NaN."""
    if losses.numel() == 0:
        zero = zero_loss(*graph)
        return zero.reshape(1)[:0] if reduction == "none" else zero
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def logs_of(**values: Tensor | float) -> dict[str, float]:
    """Python floats from 0-dim tensors (and numbers), with a single device synchronisation for all of them."""
    tensors = {name: value for name, value in values.items() if isinstance(value, Tensor)}
    logs = {name: float(value) for name, value in values.items() if not isinstance(value, Tensor)}
    if tensors:
        stacked = torch.stack([value.detach().reshape(()).float() for value in tensors.values()])
        logs.update(zip(tensors, stacked.tolist(), strict=True))
    return {name: logs[name] for name in values}
