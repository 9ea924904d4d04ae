"""Label smoothing, optionally restricted to the category of the true label (as in OML)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_smoothing"]


@torch.no_grad()
def label_smoothing(
    labels: Tensor,
    num_classes: int,
    epsilon: float,
    categories: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Soft targets ``(B, num_classes)`` for cross-entropy (Szegedy et al., https://arxiv.org/abs/1512.00567).

    Without categories: ``(1 - eps) * onehot(y) + eps / C``. With ``categories`` (``(C,)``, the category index
    of every class), ``eps`` is spread only over the classes of the true label's category:
    ``(1 - eps) * onehot(y) + eps * [cat(c) == cat(y)] / #{c': cat(c') == cat(y)}`` (OML's
    ``oml.functional.label_smoothing``). ``dtype`` is that of the result.
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"label_smoothing: epsilon must be in [0, 1), got {epsilon}")
    targets = F.one_hot(labels, num_classes).to(dtype) * (1 - epsilon)
    if categories is None:
        return targets + epsilon / num_classes
    same = categories[labels].unsqueeze(1) == categories.unsqueeze(0)
    return targets + same.to(dtype) * (epsilon / same.sum(1, keepdim=True).to(dtype))
