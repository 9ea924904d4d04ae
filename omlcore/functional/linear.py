"""``x @ w.T + b`` as one fused GEMM, with oneDNN's kernel on CPU where it is available."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

__all__ = ["fused_linear"]


@cache
def _onednn_linear() -> Callable[..., Tensor] | None:
    """oneDNN's fp32 linear (``torch.ops.mkldnn._linear_pointwise``), or None where this PyTorch lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op: Callable[..., Tensor] = torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None
    return op


def fused_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``out[i, j] = <x_i, w_j> + b_j``: ``(N, D) x (M, D) + (M,) -> (N, M)``, one GEMM with the bias fused in.

    Without ``bias``, the product ``x @ weight.T`` alone.

    On CPU in float32, oneDNN's GEMM (``torch.ops.mkldnn._linear_pointwise``) is used when PyTorch has it and
    ``torch.backends.mkldnn.enabled``: on AMD Zen CPUs it runs about twice as fast as the BLAS behind
    ``torch.addmm`` (measured in benchmarks/training.py). Both are exact float32 GEMMs with float32
    accumulation; they differ in rounding order only. oneDNN's op has no autograd formula, so wherever a
    gradient is recorded, and elsewhere (CUDA, float64, other builds), it is ``torch.addmm``.
    """
    if (
        x.is_cpu
        and x.dtype is weight.dtype is torch.float32
        and (bias is None or bias.dtype is torch.float32)
        and not (
            torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
        )
        and torch.backends.mkldnn.enabled
    ):
        onednn = _onednn_linear()
        if onednn is not None:
            return onednn(
                x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(), "none", [], ""
            )
    return torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
