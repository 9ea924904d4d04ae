"""``x @ w.T + b`` as one fused GEMM: the one wrapper of oneDNN's private fp32 kernel, and :func:`fused_linear`.

oneDNN's GEMM (``torch.ops.mkldnn._linear_pointwise``) is private to PyTorch; this module is its only caller.
On AMD Zen CPUs it runs about twice as fast as the BLAS behind ``torch.addmm`` (measured in
benchmarks/training.py and benchmarks/retrieval.py). Both are exact float32 GEMMs with float32 accumulation;
they differ in rounding order only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import Tensor

__all__ = ["fused_linear", "onednn_linear", "onednn_usable"]


@cache
def _onednn_op() -> Callable[..., Tensor] | None:
    """``torch.ops.mkldnn._linear_pointwise``, or None where this PyTorch lacks it."""
    try:
        op: Callable[..., Tensor] = torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None
    return op


def onednn_usable() -> bool:
    """Whether :func:`onednn_linear` may run: PyTorch is built with oneDNN (``torch.backends.mkldnn.is_available()``),
    it is switched on (``torch.backends.mkldnn.enabled``) and has the kernel."""
    return torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled) and _onednn_op() is not None


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN's GEMM: CPU float32 ``(N, D) x (M, D) + (M,) -> (N, M)``, a new dense tensor.

    Call it only where :func:`onednn_usable` holds. The kernel has no autograd formula: pass no tensor that
    records a gradient. Inputs are made contiguous (oneDNN rejects strided rows and columns).
    """
    op = _onednn_op()
    if op is None:
        raise RuntimeError("this PyTorch has no oneDNN linear kernel (torch.ops.mkldnn._linear_pointwise)")
    return op(x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(), "none", [], "")


def fused_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``out[i, j] = <x_i, w_j> + b_j``: ``(N, D) x (M, D) + (M,) -> (N, M)``, one GEMM with the bias fused in.

    Without ``bias``, the product ``x @ weight.T`` alone.

    On CPU in float32, :func:`onednn_linear` where :func:`onednn_usable`; wherever a gradient is recorded, and
    elsewhere (CUDA, float64, other builds), ``torch.addmm``.
    """
    if (
        x.is_cpu
        and x.dtype is weight.dtype is torch.float32
        and (bias is None or bias.dtype is torch.float32)
        and not (
            torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
        )
        and onednn_usable()
    ):
        return onednn_linear(x, weight, bias)
    return torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
