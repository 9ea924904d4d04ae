"""Ready-made transform pipelines (factories with keyword arguments, each returning a :class:`Compose`).

Registered under their function names as ``transform`` components, so a dataset or a config can name
them: ``ImageLabeledDataset(..., transform="train_augmentations")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omlcore.transforms.ops import (
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

__all__ = [
    "letterbox_normalize",
    "normalize",
    "resize_center_crop",
    "resize_normalize",
    "to_tensor",
    "train_augmentations",
]


def normalize(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Compose:
    """To tensor and normalise at the image's own size, without resizing (OML's default, ``norm_albu``).

    The default of the image datasets. Images of different sizes then need a resizing transform (or a batch size
    of 1) to be batched.
    """
    return Compose([ToTensor(), Normalize(mean, std)])


def resize_normalize(
    size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Compose:
    """Evaluation pipeline: resize to ``size x size`` (aspect ratio not kept), to tensor, normalise."""
    return Compose([Resize(size), ToTensor(), Normalize(mean, std)])


def train_augmentations(
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    hflip: float = 0.5,
    jitter: float = 0.2,
) -> Compose:
    """Training pipeline: random resized crop to ``size x size`` (area fraction in ``scale``, aspect ratio in
    ``ratio``), horizontal flip with probability ``hflip``, colour jitter of strength ``jitter`` (brightness,
    contrast, saturation), normalise. ``hflip=0`` for images whose mirror is another class (characters, text);
    ``jitter=0`` leaves the colours alone. A step with probability or strength 0 is left out; other values are
    checked by the step itself."""
    steps: list[Callable[[Any], Any]] = [RandomResizedCrop(size, scale=scale, ratio=ratio)]
    if hflip != 0:
        steps.append(RandomHorizontalFlip(hflip))
    if jitter != 0:
        steps.append(ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    return Compose([*steps, ToTensor(), Normalize(mean, std)])


def to_tensor() -> Compose:
    """Only convert to a float tensor in [0, 1]: no resize, no normalisation (images keep their own size)."""
    return Compose([ToTensor()])


def resize_center_crop(
    resize: int = 256,
    crop: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: Interpolation = "bicubic",
) -> Compose:
    """Evaluation of ImageNet models: shorter side to ``resize``, centre ``crop x crop``, to tensor, normalise."""
    return Compose([ResizeShorterSide(resize, interpolation), CenterCrop(crop), ToTensor(), Normalize(mean, std)])


def letterbox_normalize(
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    fill: int = 0,
    interpolation: Interpolation = "bilinear",
) -> Compose:
    """Evaluation that keeps the whole image: longer side to ``size``, pad to a square with ``fill``, normalise."""
    return Compose([LetterBox(size, fill, interpolation), ToTensor(), Normalize(mean, std)])
