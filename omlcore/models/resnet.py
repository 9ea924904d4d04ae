"""ResNet 18/34/50/101/152 extractors with average or GeM pooling, in torchvision's state-dict layout.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(https://arxiv.org/abs/1512.03385); the bottleneck strides on its 3x3 convolution ("ResNet v1.5"), as
torchvision does, so torchvision's ImageNet weights load unchanged (the classifier ``fc`` is dropped).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from omlcore.models.base import ExtractorBase, Weights, strip_prefix
from omlcore.models.pooling import GeM, GlobalAvgPool

__all__ = [
    "RESNET_ARCHS",
    "BasicBlock",
    "Bottleneck",
    "ResNetExtractor",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet 18 / 34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a shortcut (ResNet 50 / 101 / 152)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = _conv1x1(channels, channels * self.expansion)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


RESNET_ARCHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
"""Block type and blocks per stage of each ResNet."""

# MoCo v1/v2 checkpoints hold a query and a key encoder; the query encoder is the one to use.
_MOCO_QUERY_PREFIXES = ("module.encoder_q.", "encoder_q.")


class ResNetExtractor(ExtractorBase):
    """A ResNet without its classifier: the pooled last feature map is the embedding (512 or 2048 values).

    Args:
        arch: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``.
        weights: a zoo name (``"resnet50_imagenet1k_v1"``, ``"resnet50_moco_v2"``), a checkpoint file or a
            state dict (torchvision, MoCo, OML and omlcore layouts), or None for random weights.
        gem_p: pool with :class:`~omlcore.models.pooling.GeM` of this power; None averages.
        gem_learnable: train GeM's power (state-dict key ``pool.p``).
        normalise_features: L2-normalise the embeddings.
        in_channels: channels of the input images.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: Weights = None,
        gem_p: float | None = None,
        gem_learnable: bool = False,
        normalise_features: bool = False,
        in_channels: int = 3,
    ) -> None:
        if arch not in RESNET_ARCHS:
            raise ValueError(f"Unknown ResNet arch {arch!r}; choose one of {', '.join(RESNET_ARCHS)}")
        block, depths = RESNET_ARCHS[arch]
        super().__init__(arch, 512 * block.expansion, normalise_features)
        self.gem_p = gem_p
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels_in = 64
        stages = []
        for index, depth in enumerate(depths):
            channels = 64 * 2**index
            stage, channels_in = self._stage(block, channels_in, channels, depth, stride=1 if index == 0 else 2)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool: nn.Module = GlobalAvgPool() if gem_p is None else GeM(gem_p, learnable=gem_learnable)
        self._init_weights()
        self.load_weights(weights)

    @staticmethod
    def _stage(
        block: type[BasicBlock] | type[Bottleneck], channels_in: int, channels: int, depth: int, stride: int
    ) -> tuple[nn.Sequential, int]:
        channels_out = channels * block.expansion
        downsample = None
        if stride != 1 or channels_in != channels_out:
            downsample = nn.Sequential(_conv1x1(channels_in, channels_out, stride), nn.BatchNorm2d(channels_out))
        blocks: list[nn.Module] = [block(channels_in, channels, stride, downsample)]
        blocks += [block(channels_out, channels) for _ in range(depth - 1)]
        return nn.Sequential(*blocks), channels_out

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_map(self, images: Tensor) -> Tensor:
        """The last stage's output ``(B, feat_dim, H / 32, W / 32)``, before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_features(self, images: Tensor) -> Tensor:
        return self.pool(self.feature_map(images))

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """torchvision / OML / MoCo layouts -> this model: strip a prefix, drop ``fc`` (classifier or projector)."""
        for prefix in _MOCO_QUERY_PREFIXES:
            if any(key.startswith(prefix) for key in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
                break
        converted = strip_prefix(state_dict, "layer1.0.conv1.weight", ignore=("fc.", "criterion."))
        own_p = self.pool.state_dict().get("p")
        if own_p is not None and "pool.p" not in converted:  # a learnable GeM keeps its initial power
            converted["pool.p"] = own_p.detach().clone()
        return converted


def resnet18(
    weights: Weights = None,
    gem_p: float | None = None,
    gem_learnable: bool = False,
    normalise_features: bool = False,
    in_channels: int = 3,
) -> ResNetExtractor:
    """ResNet-18 extractor (512-d); the arguments are those of :class:`ResNetExtractor`."""
    return ResNetExtractor("resnet18", weights, gem_p, gem_learnable, normalise_features, in_channels)


def resnet34(
    weights: Weights = None,
    gem_p: float | None = None,
    gem_learnable: bool = False,
    normalise_features: bool = False,
    in_channels: int = 3,
) -> ResNetExtractor:
    """ResNet-34 extractor (512-d); the arguments are those of :class:`ResNetExtractor`."""
    return ResNetExtractor("resnet34", weights, gem_p, gem_learnable, normalise_features, in_channels)


def resnet50(
    weights: Weights = None,
    gem_p: float | None = None,
    gem_learnable: bool = False,
    normalise_features: bool = False,
    in_channels: int = 3,
) -> ResNetExtractor:
    """ResNet-50 extractor (2048-d); the arguments are those of :class:`ResNetExtractor`."""
    return ResNetExtractor("resnet50", weights, gem_p, gem_learnable, normalise_features, in_channels)


def resnet101(
    weights: Weights = None,
    gem_p: float | None = None,
    gem_learnable: bool = False,
    normalise_features: bool = False,
    in_channels: int = 3,
) -> ResNetExtractor:
    """ResNet-101 extractor (2048-d); the arguments are those of :class:`ResNetExtractor`."""
    return ResNetExtractor("resnet101", weights, gem_p, gem_learnable, normalise_features, in_channels)


def resnet152(
    weights: Weights = None,
    gem_p: float | None = None,
    gem_learnable: bool = False,
    normalise_features: bool = False,
    in_channels: int = 3,
) -> ResNetExtractor:
    """ResNet-152 extractor (2048-d); the arguments are those of :class:`ResNetExtractor`."""
    return ResNetExtractor("resnet152", weights, gem_p, gem_learnable, normalise_features, in_channels)
