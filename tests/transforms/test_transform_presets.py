"""Preset pipelines: what they contain, what they output, and their public import paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import omlcore.transforms as transforms
from omlcore.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
    normalize,
    resize_normalize,
    to_tensor,
    train_augmentations,
)


def random_image(height: int = 48, width: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_constants() -> None:
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_resize_normalize_on_a_constant_image_matches_the_formula() -> None:
    color = np.array([12, 130, 240])
    constant = Image.fromarray(np.tile(color.astype(np.uint8), (20, 30, 1)))
    out = resize_normalize()(constant)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = (color / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out.std(dim=(1, 2)).numpy(), 0, atol=1e-5)


def test_resize_normalize_arguments() -> None:
    pipeline = resize_normalize(size=32, mean=CLIP_MEAN, std=CLIP_STD)
    assert [type(step) for step in pipeline.transforms] == [Resize, ToTensor, Normalize]
    assert pipeline.transforms[0].size == (32, 32)
    assert pipeline.transforms[2].mean == CLIP_MEAN and pipeline.transforms[2].std == CLIP_STD
    assert pipeline(random_image()).shape == (3, 32, 32)


def test_train_augmentations_content_and_output() -> None:
    pipeline = train_augmentations(size=40, scale=(0.5, 1.0))
    assert isinstance(pipeline, Compose)
    assert [type(step) for step in pipeline.transforms] == [
        RandomResizedCrop,
        RandomHorizontalFlip,
        ColorJitter,
        ToTensor,
        Normalize,
    ]
    crop, _, jitter, _, normalize = pipeline.transforms
    assert crop.size == (40, 40) and crop.scale == (0.5, 1.0)
    assert all(low < 1.0 < high <= 1.3 for low, high in (jitter.brightness, jitter.contrast, jitter.saturation))
    assert normalize.mean == IMAGENET_MEAN
    assert train_augmentations().transforms[0].scale == (0.2, 1.0)

    image = random_image()
    torch.manual_seed(0)
    first = pipeline(image)
    torch.manual_seed(0)
    again = pipeline(image)
    other = pipeline(image)
    assert first.shape == (3, 40, 40) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_normalize_keeps_the_size_and_normalises_like_resize_normalize() -> None:
    image = random_image(17, 23)
    out = normalize()(image)
    assert out.shape == (3, 17, 23) and out.dtype == torch.float32
    expected = (np.asarray(image) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    square = random_image(64, 64)
    assert torch.equal(normalize()(square), resize_normalize(size=64)(square))  # resizing to its own size: a no-op
    clip = normalize(mean=CLIP_MEAN, std=CLIP_STD)
    assert [type(step) for step in clip.transforms] == [ToTensor, Normalize]
    assert clip.transforms[1].mean == CLIP_MEAN and clip.transforms[1].std == CLIP_STD


def test_to_tensor_preset_keeps_the_image_as_is() -> None:
    image = random_image(17, 23)
    out = to_tensor()(image)
    assert out.shape == (3, 17, 23)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), np.asarray(image) / 255, atol=1e-7)


def test_train_augmentations_without_flip_or_jitter_for_characters() -> None:
    """``hflip=0`` never mirrors (a mirrored character is another class); ``jitter=0`` leaves colours alone."""
    pipeline = train_augmentations(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0, jitter=0)
    assert [type(step) for step in pipeline.transforms] == [RandomResizedCrop, ToTensor, Normalize]
    assert pipeline.transforms[0].ratio == (1.0, 1.0)
    image = Image.new("RGB", (16, 16))
    image.paste((255, 255, 255), (0, 0, 4, 16))  # a bar on the left
    for _ in range(20):
        out = pipeline(image)
        assert out[0, :, :4].mean() > out[0, :, 12:].mean()  # never mirrored: the bar stays on the left
    assert train_augmentations(hflip=1.0).transforms[1].p == 1.0
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip: p must be in \[0, 1\], got -0.5"):
        train_augmentations(hflip=-0.5)
    with pytest.raises(ValueError, match="brightness"):
        train_augmentations(jitter=-0.2)


@pytest.mark.parametrize("name", ["normalize", "resize_normalize", "train_augmentations", "to_tensor"])
def test_presets_are_importable_by_registry_target(name: str) -> None:
    import importlib

    module_name, attribute = f"omlcore.transforms.presets:{name}".split(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(factory(), Compose)
    assert factory is getattr(transforms, name)


def test_package_exports() -> None:
    assert sorted(transforms.__all__) == sorted(set(transforms.__all__))
    for name in transforms.__all__:
        assert getattr(transforms, name) is not None
