"""One rule for class labels, shared by the miners, the losses and retrieval / metrics.

Labels are class ids, turned into an int64 tensor by :func:`as_class_ids`:

- integers (tensors, numpy arrays, sequences of any integer dtype) are taken as they are;
- floats only when every value is a whole number (``[0.0, 3.0]``, as other metric-learning libraries accept them);
  a NaN, an infinity or a fraction is an :class:`InvalidLabelsError` naming the first bad positions and values;
- booleans, complex numbers, strings and other objects are a ``TypeError``: code them as integer ids first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from omlcore.errors import OmlcoreError

__all__ = ["InvalidLabelsError", "as_class_ids"]

_SHOWN = 5  # how many bad labels an error lists
_INT64_LIMIT = 2.0**63  # floats at or beyond it do not fit an int64 class id
_NUMERIC_KINDS = "biufc"  # numpy dtype kinds that torch takes: bool, signed, unsigned, float, complex


class InvalidLabelsError(OmlcoreError, ValueError):
    """Floating labels that are not whole numbers (NaN, infinity, fractions), so no class ids."""


def as_class_ids(name: str, labels: Any, device: torch.device | str | None = None) -> Tensor:
    """``labels`` as int64 class ids (on ``device`` when given), by the rule of :mod:`omlcore.labels`.

    Args:
        name: how errors call the labels, e.g. ``"HardTripletsMiner: labels"``.
        labels: a tensor, a numpy array or a sequence of numbers; a tensor of int64 is returned as it is.
        device: where the result lives; default: where ``labels`` are (the CPU for arrays and sequences).

    Raises:
        TypeError: booleans, complex numbers, strings or other objects.
        InvalidLabelsError: floats that are not all whole numbers.
    """
    tensor = labels if isinstance(labels, Tensor) else _tensor_of(name, labels)
    if device is not None:
        tensor = tensor.to(device)
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(
            f"{name} must hold integer class ids, got dtype {tensor.dtype}. Fix: pass integer ids (e.g. from "
            "pandas.factorize)"
        )
    if tensor.is_floating_point():
        flat = tensor.flatten()
        bad = (~(torch.isfinite(flat) & (flat == flat.round()) & (flat.abs() < _INT64_LIMIT))).nonzero().flatten()
        if len(bad):
            shown = bad[:_SHOWN]
            more = f" (first {_SHOWN} of {len(bad)})" if len(bad) > _SHOWN else ""
            raise InvalidLabelsError(
                f"{name} must be class ids: integers, or floats that are whole numbers; got {tensor.dtype} values "
                f"{flat[shown].tolist()} at positions {shown.tolist()}{more}. Fix: give these items a class or drop "
                "them (a NaN label is a missing one), or map the labels to integer ids (e.g. with pandas.factorize)"
            )
    return tensor.long()


def _tensor_of(name: str, values: Any) -> Tensor:
    """A copy of an array or sequence as a tensor (read-only arrays included); strings and objects raise."""
    array = np.asarray(values)
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"{name} must hold integer class ids, got numpy dtype {array.dtype} ({array.flatten()[:_SHOWN].tolist()}"
            f"{' ...' if array.size > _SHOWN else ''}). Fix: code them as integer ids, e.g. with pandas.factorize"
        )
    return torch.tensor(array)
