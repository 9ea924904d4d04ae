"""Input checks of the retrieval engine: every error names the culprit and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omlcore.errors import OmlcoreError
from omlcore.labels import as_class_ids

__all__ = [
    "RetrievalInputError",
    "as_bool_mask",
    "as_embeddings",
    "as_int_keys",
    "as_labels",
    "check_finite",
    "check_length",
    "check_same_dim",
]

_SHOWN = 5  # how many offending rows an error lists


class RetrievalInputError(OmlcoreError, ValueError):
    """Embeddings, labels or masks given to retrieval / metrics are malformed; the message says how to fix them."""


def _first(rows: Tensor, names: Tensor | None = None) -> str:
    shown = rows[:_SHOWN] if names is None else names[rows[:_SHOWN]]
    more = f" (first {_SHOWN} of {len(rows)})" if len(rows) > _SHOWN else ""
    return ", ".join(str(int(r)) for r in shown) + more


def as_embeddings(name: str, value: Any) -> Tensor:
    """``value`` as a 2-D floating tensor ``(N, D)``, without copying when it already is one."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(value).__name__}")
    if value.dim() != 2:
        raise RetrievalInputError(
            f"{name} must be 2-D (N, D), got shape {tuple(value.shape)}"
            + ("; add a dimension with .unsqueeze(0) for a single embedding" if value.dim() == 1 else "")
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {value.dtype}; convert it with .float()")
    return value


def check_finite(name: str, embeddings: Tensor, row_names: Tensor | None = None) -> None:
    """Raise when ``embeddings`` has NaN or Inf values, naming the first bad rows (``row_names[row]`` if given)."""
    suspects = (~torch.isfinite(embeddings.sum(dim=1))).nonzero().flatten()  # NaN / Inf propagate into the sum
    if len(suspects) == 0:
        return
    bad = torch.zeros(len(embeddings), dtype=torch.bool, device=embeddings.device)
    bad[suspects] = ~torch.isfinite(embeddings[suspects]).all(dim=1)  # a sum may also overflow: check exactly
    if bool(bad.any()):
        rows = bad.nonzero().flatten().cpu()
        what = "rows" if row_names is None else "items with index"
        raise RetrievalInputError(
            f"{name} contain NaN or Inf in {len(rows)} of {len(embeddings)} rows: {what} "
            f"{_first(rows, None if row_names is None else row_names.cpu())}. The model produced invalid outputs for "
            "them (diverged training, a zero vector normalised, corrupt input): fix or drop these items."
        )


def _as_tensor(value: Any) -> Tensor:
    """A tensor view of a tensor, a copy of anything else (lists, numpy arrays, read-only ones included)."""
    return value if isinstance(value, Tensor) else torch.tensor(np.asarray(value))


def as_labels(name: str, value: Any, length: int, device: torch.device) -> Tensor:
    """Class labels as a 1-D int64 tensor of ``length`` on ``device``, by the one rule of :mod:`omlcore.labels`
    (integers, or floats that are whole numbers; a ``TypeError`` or :class:`~omlcore.labels.InvalidLabelsError`
    otherwise)."""
    tensor = as_class_ids(name, value)
    check_length(name, tensor, length)
    return tensor.to(device)


def as_int_keys(name: str, value: Any, length: int, device: torch.device) -> Tensor:
    """Integer keys (sequence ids, item ids; negative means "none") as 1-D int64 of ``length`` on ``device``."""
    tensor = _as_tensor(value)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(
            f"{name} must hold integer ids (negative = none), got dtype {tensor.dtype}; "
            "code string ids with pandas.factorize (missing values become -1)"
        )
    check_length(name, tensor, length)
    return tensor.to(device=device, dtype=torch.long)


def as_bool_mask(name: str, value: Any, length: int, device: torch.device) -> Tensor:
    """A 1-D boolean mask of ``length``: booleans, or integers that are all 0 or 1."""
    tensor = _as_tensor(value)
    if tensor.dtype != torch.bool:
        if tensor.is_floating_point() or tensor.is_complex() or bool(((tensor != 0) & (tensor != 1)).any()):
            raise TypeError(f"{name} must be booleans (or 0/1 integers), got dtype {tensor.dtype}")
        tensor = tensor != 0
    check_length(name, tensor, length)
    return tensor.to(device)


def check_length(name: str, tensor: Tensor, length: int, of: str = "the embeddings") -> None:
    """A 1-D tensor with one entry per row of ``of``."""
    if tensor.dim() != 1 or len(tensor) != length:
        raise RetrievalInputError(
            f"{name} must be 1-D with one entry per row of {of} ({length}), got shape {tuple(tensor.shape)}"
        )


def check_same_dim(names: Sequence[str], tensors: Sequence[Tensor]) -> None:
    """All ``tensors`` have the same embedding size and device."""
    dims = {int(t.shape[1]) for t in tensors}
    if len(dims) > 1:
        sizes = ", ".join(f"{n}: {tuple(t.shape)}" for n, t in zip(names, tensors, strict=True))
        raise RetrievalInputError(f"embedding sizes differ ({sizes}); queries and gallery need the same model")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise RetrievalInputError(
            f"{' and '.join(names)} live on different devices {sorted(map(str, devices))}; move them with .to(device)"
        )
