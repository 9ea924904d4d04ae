"""Checks run when a training loop or module is built, so that a misfit fails at once, not mid-epoch.

What is here knows no framework: a loss must be callable, its trainable parameters must be optimised. What a
framework's objects must satisfy comes from the plugin that knows them: a ``check`` component (hook
:func:`~omlcore.hookspecs.register_checks`) is a callable ``check(obj, role)`` that raises
:class:`IncompatibleComponentError` when ``obj`` does not fit ``role`` (``"loss"``, ``"miner"`` ...) and returns for
objects it does not know. :func:`run_checks` calls every registered check; :func:`check_loss` calls them on a loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.optim import Optimizer

from omlcore.errors import OmlcoreError
from omlcore.plugins import get_registry
from omlcore.registry import Registry

__all__ = [
    "WRAPPED_COMPONENT",
    "IncompatibleComponentError",
    "check_loss",
    "check_optimizer_covers",
    "describe",
    "run_checks",
]

#: The attribute (e.g. a property) through which a wrapper exposes the component it wraps, so that
#: :func:`describe` names both: ``Wrapper(Inner)``.
WRAPPED_COMPONENT = "wrapped_component"


class IncompatibleComponentError(OmlcoreError, TypeError):
    """A component does not fit where it is used; the message names it, the mismatch and the fix."""


def describe(obj: object) -> str:
    """How errors name a component: its class name, after its package unless the class is omlcore's (packages
    ``omlcore`` and ``omlcore_*``) or a builtin (``other_package's FancyLoss``). A wrapper whose class defines
    :data:`WRAPPED_COMPONENT` is shown with what it wraps: ``LossWrapper(other_package's FancyLoss)``."""
    cls = type(obj)
    package = cls.__module__.split(".")[0]
    own = package in ("omlcore", "builtins") or package.startswith("omlcore_")
    name = cls.__name__ if own else f"{package}'s {cls.__name__}"
    inner = getattr(obj, WRAPPED_COMPONENT) if hasattr(cls, WRAPPED_COMPONENT) else None
    return f"{name}({describe(inner)})" if inner is not None else name


def run_checks(obj: object, role: str, *, registry: Registry | None = None) -> None:
    """Call every registered ``check`` (in name order) on ``obj`` used as ``role``.

    A check whose framework is not installed is skipped: no object of that framework can exist.

    Args:
        obj: the component, e.g. a loss.
        role: where it is used: ``"loss"``, ``"miner"`` ...
        registry: where the checks are registered; default: the process-wide :func:`omlcore.plugins.get_registry`.

    Raises:
        IncompatibleComponentError: a check found a misfit.
    """
    registry = registry if registry is not None else get_registry()
    for entry in registry.entries("check"):
        if entry.available:
            entry.load()(obj, role)


def check_loss(loss: Callable[..., Any], *, registry: Registry | None = None) -> None:
    """Raise :class:`IncompatibleComponentError` unless ``loss`` can be called as ``loss(embeddings, labels)``.

    ``loss`` must be callable and pass every registered check (:func:`run_checks`, role ``"loss"``), e.g. a
    framework adapter's check that rejects that framework's self-supervised losses, which take no labels.
    """
    if not callable(loss):
        raise IncompatibleComponentError(f"the loss must be callable as loss(embeddings, labels); got {describe(loss)}")
    run_checks(loss, "loss", registry=registry)


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
