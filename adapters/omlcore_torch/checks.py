"""Checks run when a loop or module is built, so that a misfit fails at once, not mid-epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.optim import Optimizer

from omlcore.errors import OmlcoreError

__all__ = ["IncompatibleComponentError", "check_loss", "check_optimizer_covers", "describe", "is_pml_object"]


class IncompatibleComponentError(OmlcoreError, TypeError):
    """A component does not fit where it is used; the message names it, the mismatch and the fix."""


def describe(obj: object) -> str:
    """The class name, with the package for foreign objects (``pytorch_metric_learning's VICRegLoss``) and the wrapped
    object for the PML adapter's wrappers (``PMLLoss(pytorch_metric_learning's ArcFaceLoss)``)."""
    cls = type(obj)
    package = cls.__module__.split(".")[0]
    if package == "omlcore_pml":
        inner = getattr(obj, "loss", None) or getattr(obj, "miner", None)
        return f"{cls.__name__}({describe(inner)})" if inner is not None else cls.__name__
    return cls.__name__ if package in ("omlcore", "omlcore_torch", "builtins") else f"{package}'s {cls.__name__}"


def is_pml_object(obj: object) -> bool:
    """True for instances of pytorch-metric-learning classes (and their subclasses); imports nothing."""
    return any(cls.__module__.startswith("pytorch_metric_learning") for cls in type(obj).__mro__)


def check_loss(loss: Callable[..., Any]) -> None:
    """Check that ``loss`` can be called as ``loss(embeddings, labels)``.

    Pytorch-metric-learning losses are checked against what each one accepts (see
    :func:`omlcore_pml.checks.check_loss`): a self-supervised loss that takes no labels is rejected here.
    """
    if not callable(loss):
        raise IncompatibleComponentError(f"the loss must be callable as loss(embeddings, labels); got {describe(loss)}")
    if is_pml_object(loss):
        from omlcore_pml.checks import check_loss as check_pml_loss

        check_pml_loss(loss)


def check_optimizer_covers(loss: object, optimizer: Optimizer) -> None:
    """Raise when ``loss`` has trainable parameters (ArcFace's class weights, proxies ...) that ``optimizer`` misses."""
    if not isinstance(loss, nn.Module):
        return
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [
        f"{name} {tuple(p.shape)}" for name, p in loss.named_parameters() if p.requires_grad and id(p) not in optimised
    ]
    if missing:
        raise IncompatibleComponentError(
            f"the loss {describe(loss)} has trainable parameters that the optimizer does not update: "
            f"{', '.join(missing)}. Give the optimizer both, e.g. "
            "torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=...), or freeze them with "
            "requires_grad_(False)."
        )
