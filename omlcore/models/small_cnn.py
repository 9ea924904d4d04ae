"""A small convolutional extractor that trains in minutes on a CPU, for small images (about 28 to 64 pixels)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from omlcore.models.base import ExtractorBase, Weights
from omlcore.models.pooling import GlobalAvgPool

__all__ = ["SmallCNN"]


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(ExtractorBase):
    """VGG-style stages (two 3x3 conv + BatchNorm + ReLU, then 2x2 max-pool), global average pooling, a linear layer.

    Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015
    (https://arxiv.org/abs/1409.1556), shrunk: with the default widths it has about 0.3 M parameters.

    Args:
        feat_dim: embedding size.
        widths: channels of each stage; each stage halves the resolution, so the input needs at least
            ``2 ** len(widths)`` pixels per side.
        in_channels: 3 for RGB, 1 for grayscale.
        weights: a checkpoint file or a state dict, or None for random weights.
        normalise_features: L2-normalise the embeddings.
    """

    def __init__(
        self,
        feat_dim: int = 128,
        widths: Sequence[int] = (32, 64, 128),
        in_channels: int = 3,
        weights: Weights = None,
        normalise_features: bool = False,
    ) -> None:
        if not widths or min(widths) <= 0 or feat_dim <= 0:
            raise ValueError(f"SmallCNN needs positive widths and feat_dim, got widths={widths}, feat_dim={feat_dim}")
        super().__init__("small_cnn", feat_dim, normalise_features)
        channels = [in_channels, *widths]
        self.features = nn.Sequential(*(_stage(a, b) for a, b in itertools.pairwise(channels)))
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(channels[-1], feat_dim)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.load_weights(weights)

    def forward_features(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(images)))
