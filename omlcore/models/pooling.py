"""Global pooling of a convolutional feature map ``(B, C, H, W)`` into one vector ``(B, C)`` per image."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GeM", "GlobalAvgPool"]


class GlobalAvgPool(nn.Module):
    """The mean over all positions: ``(B, C, H, W) -> (B, C)``."""

    def forward(self, features: Tensor) -> Tensor:
        return features.mean(dim=(2, 3))


class GeM(nn.Module):
    """Generalised-mean pooling: ``(mean(clamp(x, eps) ** p)) ** (1 / p)`` over all positions.

    ``p = 1`` is average pooling and ``p -> inf`` max pooling; 3 is a common choice for retrieval.
    Radenović, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI 2018
    (https://arxiv.org/abs/1711.02512).

    Args:
        p: the power, > 0.
        eps: lower clamp of the features (the power of a negative number is undefined).
        learnable: make ``p`` a trained parameter (state-dict key ``p``), as in the paper.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM: p must be positive, got {p}")
        self.eps = float(eps)
        self.learnable = learnable
        if learnable:
            self.p: Tensor | float = nn.Parameter(torch.tensor(float(p)))
        else:
            self.p = float(p)

    def forward(self, features: Tensor) -> Tensor:
        powered = features.clamp(min=self.eps).pow(self.p)
        return powered.mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4g}, eps={self.eps}, learnable={self.learnable}"
