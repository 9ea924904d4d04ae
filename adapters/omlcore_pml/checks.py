"""Checks of PML objects against omlcore's protocols, run at construction: a misfit names the object and the
mismatch before any batch is seen. Nothing here imports PML (objects are recognised by their classes' modules).

:func:`check_pml_object` is the ``check`` component ``pml.objects`` that :mod:`omlcore_pml.plugin` registers, so
that omlcore's loops (:func:`omlcore.checks.check_loss`) check a raw PML loss too.
"""

from __future__ import annotations

import inspect
from typing import Any

from omlcore.checks import IncompatibleComponentError, describe
from omlcore_pml.names import PML_LOSSES_WITHOUT_INDICES_TUPLE, PML_LOSSES_WITHOUT_LABELS

__all__ = ["check_loss", "check_miner", "check_pml_object", "is_pml_object", "pml_kind"]

_PACKAGE = "pytorch_metric_learning"
_KINDS = {
    "losses": "loss",
    "miners": "miner",
    "distances": "distance",
    "reducers": "reducer",
    "regularizers": "regularizer",
}
_USE = {
    "distance": "pass it to a loss or miner as distance=...",
    "reducer": "pass it to a loss as reducer=...",
    "regularizer": "pass it to a loss as embedding_regularizer=...",
}


def is_pml_object(obj: object) -> bool:
    """True for instances of pytorch-metric-learning classes (and their subclasses); imports nothing."""
    return any(cls.__module__.split(".")[0] == _PACKAGE for cls in type(obj).__mro__)


def pml_kind(obj: object) -> str | None:
    """``"loss"``, ``"miner"``, ``"distance"``, ``"reducer"`` or ``"regularizer"`` for a PML object, else None."""
    for cls in type(obj).__mro__:
        parts = cls.__module__.split(".")
        if parts[0] == _PACKAGE and len(parts) > 1 and parts[1] in _KINDS:
            return _KINDS[parts[1]]
    return None


def _pml_class_names(obj: object) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__ if cls.__module__.split(".")[0] == _PACKAGE}


def _forward_parameters(obj: Any) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(getattr(obj, "forward", obj)).parameters)
    except (TypeError, ValueError):
        return None


def check_loss(loss: object, *, miner: object | None = None) -> None:
    """Raise :class:`IncompatibleComponentError` unless ``loss`` can be called as ``loss(embeddings, labels)`` and,
    when a ``miner`` feeds it, as ``loss(embeddings, labels, indices_tuple)``."""
    what = describe(loss)
    kind = pml_kind(loss)
    if kind == "miner":
        raise IncompatibleComponentError(
            f"{what} is a PML miner, not a loss; use it as the miner of a loss: PMLLoss(loss, miner=...)"
        )
    if kind in _USE:
        raise IncompatibleComponentError(f"{what} is a PML {kind}, not a loss; {_USE[kind]}")
    if not callable(loss):
        raise IncompatibleComponentError(f"{what} is not callable, so it cannot be a loss(embeddings, labels)")
    parameters = _forward_parameters(loss)
    classes = _pml_class_names(loss)
    rejects_labels = sorted(classes & set(PML_LOSSES_WITHOUT_LABELS))
    if rejects_labels or (parameters is not None and "labels" not in parameters):
        signature = f"forward({', '.join(parameters)})" if parameters is not None else "its forward"
        reason = (
            f"PML's {rejects_labels[0]} raises when it is given labels"
            if rejects_labels
            else f"it takes {signature}, without labels"
        )
        raise IncompatibleComponentError(
            f"{what} does not fit omlcore's Loss, which is called as loss(embeddings, labels): {reason}. It is a "
            "self-supervised loss; use a supervised one (e.g. pml.TripletMarginLoss, pml.ArcFaceLoss) with omlcore's "
            "loops, or call it yourself in a plain PyTorch loop."
        )
    if miner is None:
        return
    rejects_tuples = sorted(classes & set(PML_LOSSES_WITHOUT_INDICES_TUPLE))
    if rejects_tuples or (parameters is not None and "indices_tuple" not in parameters):
        reason = (
            f"PML's {rejects_tuples[0]} raises 'indices_tuple is not supported'"
            if rejects_tuples
            else "its forward has no indices_tuple argument"
        )
        raise IncompatibleComponentError(
            f"{what} cannot take the tuples mined by {describe(miner)}: {reason}. Use the loss without a miner, "
            "or a loss that accepts indices_tuple (e.g. pml.TripletMarginLoss, pml.ContrastiveLoss, "
            "pml.MultiSimilarityLoss)."
        )


def check_miner(miner: Any) -> None:
    """Raise :class:`IncompatibleComponentError` unless ``miner`` can be called as ``miner(embeddings, labels)``."""
    what = describe(miner)
    kind = pml_kind(miner)
    if kind == "loss":
        raise IncompatibleComponentError(
            f"{what} is a PML loss, not a miner; use it as the loss: PMLLoss({type(miner).__name__}(...), miner=...)"
        )
    if kind in _USE:
        raise IncompatibleComponentError(f"{what} is a PML {kind}, not a miner; {_USE[kind]}")
    if not callable(miner):
        raise IncompatibleComponentError(f"{what} is not callable, so it cannot be a miner(embeddings, labels)")


def check_pml_object(obj: object, role: str) -> None:
    """omlcore's ``check`` of PML objects: one used as a ``"loss"`` goes through :func:`check_loss`, as a ``"miner"``
    through :func:`check_miner`; other objects and roles are left alone.

    Raises:
        IncompatibleComponentError: a PML object does not fit ``role``.
    """
    if not is_pml_object(obj):
        return
    if role == "loss":
        check_loss(obj)
    elif role == "miner":
        check_miner(obj)
