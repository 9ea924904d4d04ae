"""Image transforms without torchvision: PIL / numpy / torch operations and ready-made presets."""

from __future__ import annotations

from omlcore.transforms.ops import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    ColorJitter,
    Compose,
    Interpolation,
    LetterBox,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeShorterSide,
    ToTensor,
)
from omlcore.transforms.presets import (
    letterbox_normalize,
    normalize,
    resize_center_crop,
    resize_normalize,
    to_tensor,
    train_augmentations,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Interpolation",
    "LetterBox",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "ResizeShorterSide",
    "ToTensor",
    "letterbox_normalize",
    "normalize",
    "resize_center_crop",
    "resize_normalize",
    "to_tensor",
    "train_augmentations",
]
