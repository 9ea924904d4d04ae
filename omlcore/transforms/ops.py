"""Image transforms built on PIL, numpy and torch only (no torchvision).

Each transform is a small picklable class with ``__call__`` and ``__repr__``. Random transforms draw
from torch's global RNG, so ``torch.manual_seed`` and the per-worker seeding of
``torch.utils.data.DataLoader`` make them reproducible.

Image transforms take and return ``PIL.Image.Image``; :class:`ToTensor` turns an image into a float32
``C x H x W`` tensor and :class:`Normalize` works on that tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageEnhance

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
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

Interpolation = Literal["nearest", "bilinear", "bicubic"]
_RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA")


def _size_hw(size: int | Sequence[int], what: str) -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int is a square side."""
    if isinstance(size, int):
        height = width = size
    else:
        if len(size) != 2:
            raise ValueError(f"{what}: size must be an int or a (height, width) pair, got {size!r}")
        height, width = (int(side) for side in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"{what}: size must be positive, got {size!r}")
    return height, width


def _resampling(interpolation: str, what: str) -> Image.Resampling:
    if interpolation not in _RESAMPLING:
        raise ValueError(f"{what}: interpolation must be one of {sorted(_RESAMPLING)}, got {interpolation!r}")
    return _RESAMPLING[interpolation]


def _check_image(image: Any, what: str) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"{what} expects a PIL.Image.Image, got {type(image).__name__}")
    return image


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high).item())


class Compose:
    """Apply ``transforms`` one after the other."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any) -> Any:
        for transform in self.transforms:
            image = transform(image)
        return image

    def __repr__(self) -> str:
        inner = "".join(f"\n    {transform!r}," for transform in self.transforms)
        return f"{type(self).__name__}([{inner}\n])" if inner else f"{type(self).__name__}([])"


class ToTensor:
    """PIL image (8-bit ``RGB``, ``RGBA``, ``L``, ``LA``) -> float32 ``C x H x W`` tensor with values in [0, 1]."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = _check_image(image, "ToTensor")
        if image.mode == "1":
            image = image.convert("L")
        if image.mode not in _EIGHT_BIT_MODES:
            raise TypeError(
                f"ToTensor supports 8-bit images of mode {', '.join(_EIGHT_BIT_MODES)}; got mode {image.mode!r}. "
                "Convert it first, e.g. image.convert('RGB')."
            )
        array = np.array(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div_(255.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Normalize:
    """``(tensor - mean) / std`` per channel, for a ``C x H x W`` (or ``N x C x H x W``) float tensor.

    Returns a new tensor; the input is left unchanged.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"Normalize: mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if any(value <= 0 for value in std):
            raise ValueError(f"Normalize: every std must be positive, got {tuple(std)}")
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() < 3:
            raise TypeError("Normalize expects a float tensor of shape C x H x W (use ToTensor before it)")
        channels = tensor.shape[-3]
        if channels != len(self.mean):
            raise ValueError(
                f"Normalize has {len(self.mean)} channel statistics but the tensor has {channels} channels"
            )
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return (tensor - mean) / std

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


class Resize:
    """Resize to a fixed size, ignoring the aspect ratio.

    Args:
        size: an int is the side of the square output (``size x size``), unlike torchvision where an int
            sets the shorter side; or a ``(height, width)`` pair.
        interpolation: PIL's ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"`` filter.
    """

    def __init__(self, size: int | Sequence[int], interpolation: Interpolation = "bilinear") -> None:
        self.size = _size_hw(size, "Resize")
        self.interpolation = interpolation
        self._resample = _resampling(interpolation, "Resize")

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = self.size
        return _check_image(image, "Resize").resize((width, height), self._resample)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    """Crop the centre ``(height, width)`` (an int is a square); a crop larger than the image is padded with black."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_hw(size, "CenterCrop")

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _check_image(image, "CenterCrop")
        crop_height, crop_width = self.size
        width, height = image.size
        top = round((height - crop_height) / 2.0)
        left = round((width - crop_width) / 2.0)
        return image.crop((left, top, left + crop_width, top + crop_height))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class RandomResizedCrop:
    """Inception-style crop: a random area fraction and aspect ratio, then a resize to ``size``.

    Up to 10 tries draw ``area_fraction ~ U(scale)`` and ``log(aspect) ~ U(log(ratio))``; the first box that
    fits inside the image wins. After 10 failures the crop falls back to the largest centred box whose aspect
    ratio is clamped to ``ratio``.

    Args:
        size: output size; an int is a square side, else ``(height, width)``.
        scale: bounds of the crop area as a fraction of the image area.
        ratio: bounds of the crop aspect ratio (width / height).
        interpolation: the PIL filter of the final resize.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Interpolation = "bilinear",
    ) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomResizedCrop: scale must satisfy 0 < min <= max, got {scale!r}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must satisfy 0 < min <= max, got {ratio!r}")
        self.size = _size_hw(size, "RandomResizedCrop")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation
        self._resample = _resampling(interpolation, "RandomResizedCrop")

    def get_params(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Draw a crop box ``(top, left, crop_height, crop_width)`` for an image of ``width x height``."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(*log_ratio))
            crop_width = round(math.sqrt(target_area * aspect))
            crop_height = round(math.sqrt(target_area / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(torch.randint(0, height - crop_height + 1, (1,)).item())
                left = int(torch.randint(0, width - crop_width + 1, (1,)).item())
                return top, left, crop_height, crop_width
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            crop_width, crop_height = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            crop_width, crop_height = round(height * self.ratio[1]), height
        else:
            crop_width, crop_height = width, height
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _check_image(image, "RandomResizedCrop")
        top, left, crop_height, crop_width = self.get_params(*image.size)
        height, width = self.size
        box = (left, top, left + crop_width, top + crop_height)
        return image.resize((width, height), self._resample, box=box)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``; works on a PIL image or on a tensor (flips the last dimension)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return image
        if isinstance(image, torch.Tensor):
            return image.flip(-1)
        return _check_image(image, "RandomHorizontalFlip").transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def _jitter_range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    """``b`` -> ``(max(0, 1 - b), 1 + b)``; a pair is taken as explicit factor bounds."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"ColorJitter: {name} must be non-negative, got {value}")
        return max(0.0, 1.0 - value), 1.0 + value
    low, high = (float(bound) for bound in value)
    if not 0 <= low <= high:
        raise ValueError(f"ColorJitter: {name} bounds must satisfy 0 <= min <= max, got {value!r}")
    return low, high


class ColorJitter:
    """Random brightness, contrast and saturation (PIL ``ImageEnhance``), applied in a random order.

    Each argument ``b`` draws an enhancement factor from ``[max(0, 1 - b), 1 + b]`` (0 disables it); a
    ``(min, max)`` pair gives the factor bounds directly.
    """

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0.0,
        contrast: float | tuple[float, float] = 0.0,
        saturation: float | tuple[float, float] = 0.0,
    ) -> None:
        self.brightness = _jitter_range(brightness, "brightness")
        self.contrast = _jitter_range(contrast, "contrast")
        self.saturation = _jitter_range(saturation, "saturation")

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _check_image(image, "ColorJitter")
        enhancers: list[tuple[tuple[float, float], Callable[[Image.Image], Any]]] = [
            (self.brightness, ImageEnhance.Brightness),
            (self.contrast, ImageEnhance.Contrast),
            (self.saturation, ImageEnhance.Color),
        ]
        for position in torch.randperm(len(enhancers)).tolist():
            (low, high), enhancer = enhancers[position]
            if (low, high) != (1.0, 1.0):
                image = enhancer(image).enhance(_uniform(low, high))
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation})"
        )


class ResizeShorterSide:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio (torchvision's ``Resize(int)``).

    The longer side becomes ``int(size * long / short)``; pair it with :class:`CenterCrop` for the usual
    "resize 256, crop 224" evaluation of ImageNet models.
    """

    def __init__(self, size: int, interpolation: Interpolation = "bilinear") -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"ResizeShorterSide: size must be a positive int, got {size!r}")
        self.size = size
        self.interpolation = interpolation
        self._resample = _resampling(interpolation, "ResizeShorterSide")

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _check_image(image, "ResizeShorterSide")
        width, height = image.size
        if width <= height:
            new_width, new_height = self.size, int(self.size * height / width)
        else:
            new_width, new_height = int(self.size * width / height), self.size
        return image.resize((new_width, new_height), self._resample)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r})"


class LetterBox:
    """Resize so that the longer side is ``size`` (aspect ratio kept), then pad evenly to ``size x size``.

    Albumentations' ``LongestMaxSize`` + ``PadIfNeeded`` (constant border), which OML uses for several of its
    pretrained models. ``fill`` is the grey level of the border in every channel (OML pads with 255).
    """

    def __init__(self, size: int, fill: int = 0, interpolation: Interpolation = "bilinear") -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"LetterBox: size must be a positive int, got {size!r}")
        if not 0 <= fill <= 255:
            raise ValueError(f"LetterBox: fill must be a grey level in [0, 255], got {fill!r}")
        self.size = size
        self.fill = int(fill)
        self.interpolation = interpolation
        self._resample = _resampling(interpolation, "LetterBox")

    def __call__(self, image: Image.Image) -> Image.Image:
        image = _check_image(image, "LetterBox")
        width, height = image.size
        scale = self.size / max(width, height)
        new_width = min(self.size, max(1, round(width * scale)))
        new_height = min(self.size, max(1, round(height * scale)))
        resized = image.resize((new_width, new_height), self._resample)
        bands = len(image.getbands())
        canvas = Image.new(image.mode, (self.size, self.size), self.fill if bands == 1 else (self.fill,) * bands)
        canvas.paste(resized, ((self.size - new_width) // 2, (self.size - new_height) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, fill={self.fill}, interpolation={self.interpolation!r})"
