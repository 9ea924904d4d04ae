"""The preprocessing of pretrained models: shorter-side resize, letterbox, and the registered presets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from omlcore.config import resolve
from omlcore.plugins import get_registry
from omlcore.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    LetterBox,
    Normalize,
    ResizeShorterSide,
    ToTensor,
    letterbox_normalize,
    resize_center_crop,
)


def image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(
    ("size", "expected"), [((300, 200), (336, 224)), ((200, 300), (224, 336)), ((100, 100), (224, 224))]
)
def test_resize_shorter_side_keeps_the_aspect_ratio(size: tuple[int, int], expected: tuple[int, int]) -> None:
    resized = ResizeShorterSide(224)(image(*size))
    assert resized.size == expected
    reference = image(*size).resize(expected, Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(resized), np.asarray(reference))


def test_resize_shorter_side_truncates_the_long_side_like_torchvision() -> None:
    assert ResizeShorterSide(256)(image(333, 500)).size == (256, int(256 * 500 / 333))


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (224, 224), (50, 20)])
def test_letterbox_against_resize_and_pad_by_hand(size: tuple[int, int]) -> None:
    width, height = size
    boxed = np.asarray(LetterBox(224, fill=255)(image(width, height)))
    scale = 224 / max(width, height)
    inner_w, inner_h = round(width * scale), round(height * scale)
    inner = np.asarray(image(width, height).resize((inner_w, inner_h), Image.Resampling.BILINEAR))
    top, left = (224 - inner_h) // 2, (224 - inner_w) // 2
    expected = np.full((224, 224, 3), 255, dtype=np.uint8)
    expected[top : top + inner_h, left : left + inner_w] = inner
    assert np.array_equal(boxed, expected)


def test_letterbox_of_grayscale_and_bad_arguments() -> None:
    gray = LetterBox(10, fill=7)(Image.new("L", (20, 10), 200))
    assert gray.mode == "L" and gray.size == (10, 10)
    assert np.asarray(gray)[0, 0] == 7 and np.asarray(gray)[5, 5] == 200
    with pytest.raises(ValueError, match="positive int"):
        LetterBox(0)
    with pytest.raises(ValueError, match="grey level"):
        LetterBox(10, fill=300)
    with pytest.raises(ValueError, match="positive int"):
        ResizeShorterSide(-1)
    with pytest.raises(TypeError, match="PIL"):
        LetterBox(10)(torch.zeros(3, 4, 4))


def test_presets_compose_the_ops() -> None:
    picture = image(300, 200)
    pipeline = resize_center_crop(resize=256, crop=224, mean=CLIP_MEAN, std=CLIP_STD)
    expected = Normalize(CLIP_MEAN, CLIP_STD)(ToTensor()(CenterCrop(224)(ResizeShorterSide(256, "bicubic")(picture))))
    torch.testing.assert_close(pipeline(picture), expected)
    letterboxed = letterbox_normalize(size=64)(picture)
    torch.testing.assert_close(letterboxed, Normalize(IMAGENET_MEAN, IMAGENET_STD)(ToTensor()(LetterBox(64)(picture))))
    assert pickle.loads(pickle.dumps(pipeline))(picture).shape == (3, 224, 224)
    assert "ResizeShorterSide(size=256, interpolation='bicubic')" in repr(pipeline)
    assert "LetterBox(size=64, fill=0, interpolation='bilinear')" in repr(letterbox_normalize(size=64))


def test_presets_are_registered_transforms() -> None:
    registry = get_registry()
    assert registry.build("transform", "resize_center_crop")(image(500, 400)).shape == (3, 224, 224)
    assert registry.build("transform", "letterbox_normalize", size=32)(image(50, 10)).shape == (3, 32, 32)
    built = resolve("transform", {"name": "pretrained", "args": {"name": "openai_vitb32_224"}})
    assert built(image(90, 60)).shape == (3, 224, 224)
