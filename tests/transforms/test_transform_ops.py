"""Transforms against independent numpy references; random ones bounded and reproducible under torch seeds."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from omlcore.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)


def random_pixels(height: int = 30, width: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def image_of(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels)


def test_to_tensor_matches_numpy() -> None:
    pixels = random_pixels()
    tensor = ToTensor()(image_of(pixels))
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 30, 40)
    np.testing.assert_allclose(tensor.numpy(), pixels.transpose(2, 0, 1) / 255.0, rtol=0, atol=1e-7)


def test_to_tensor_of_grayscale_and_unsupported_modes() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tensor = ToTensor()(Image.fromarray(gray, mode="L"))
    assert tensor.shape == (1, 3, 4)
    np.testing.assert_allclose(tensor[0].numpy(), gray / 255.0, atol=1e-7)
    with pytest.raises(TypeError, match=r"got mode 'F'\. Convert it first"):
        ToTensor()(Image.new("F", (2, 2)))
    with pytest.raises(TypeError, match=r"ToTensor expects a PIL\.Image\.Image, got ndarray"):
        ToTensor()(gray)  # type: ignore[arg-type]


def test_normalize_matches_numpy_and_leaves_the_input_alone() -> None:
    tensor = torch.rand(3, 5, 6)
    before = tensor.clone()
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = Normalize(mean, std)(tensor)
    expected = (tensor.numpy() - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(tensor, before)
    batch = Normalize(mean, std)(torch.stack([tensor, tensor]))
    assert torch.allclose(batch[1], out)


def test_normalize_rejects_bad_statistics_and_inputs() -> None:
    with pytest.raises(ValueError, match="one value per channel, got 3 and 2"):
        Normalize((0.5, 0.5, 0.5), (1.0, 1.0))
    with pytest.raises(ValueError, match="every std must be positive"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="3 channel statistics but the tensor has 1 channels"):
        Normalize((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))(torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match="use ToTensor before it"):
        Normalize((0.5,), (1.0,))(torch.zeros(1, 2, 2, dtype=torch.uint8))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_resize_sizes_and_constant_images(interpolation: str) -> None:
    image = image_of(random_pixels())
    assert Resize(17, interpolation)(image).size == (17, 17)  # an int is a square side
    assert Resize((12, 50), interpolation)(image).size == (50, 12)  # (height, width)
    constant = image_of(np.full((30, 40, 3), (10, 128, 250), dtype=np.uint8))
    for size in (7, (64, 9)):
        out = np.asarray(Resize(size, interpolation)(constant))
        assert (out == np.array([10, 128, 250], dtype=np.uint8)).all()


def test_resize_keeps_a_gradient_monotonic() -> None:
    gradient = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (8, 1, 3))
    row = np.asarray(Resize((8, 16))(image_of(gradient)))[4, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[0] < 20 and row[-1] > 235


def test_resize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size must be positive"):
        Resize(0)
    with pytest.raises(ValueError, match=r"interpolation must be one of \['bicubic', 'bilinear', 'nearest'\]"):
        Resize(4, "lanczos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"an int or a \(height, width\) pair"):
        Resize((1, 2, 3))


CENTER_CROPS = [(10, (10, 20, 15, 25)), ((7, 12), (12, 19, 14, 26)), ((30, 40), (0, 30, 0, 40))]


@pytest.mark.parametrize(("size", "rows_cols"), CENTER_CROPS)
def test_center_crop_matches_numpy_slicing(size: int | tuple[int, int], rows_cols: tuple[int, int, int, int]) -> None:
    pixels = random_pixels()  # 30 x 40: the crop is centred, rounding half to even like torchvision
    top, bottom, left, right = rows_cols
    np.testing.assert_array_equal(np.asarray(CenterCrop(size)(image_of(pixels))), pixels[top:bottom, left:right])


def test_center_crop_larger_than_the_image_pads_with_black() -> None:
    pixels = random_pixels(4, 6)
    out = np.asarray(CenterCrop((6, 10))(image_of(pixels)))
    assert out.shape == (6, 10, 3)
    np.testing.assert_array_equal(out[1:5, 2:8], pixels)
    assert out[0].max() == 0 and out[:, :2].max() == 0


def test_random_resized_crop_boxes_stay_inside_the_image_and_respect_the_bounds() -> None:
    transform = RandomResizedCrop(8, scale=(0.2, 0.9), ratio=(0.5, 2.0))
    torch.manual_seed(0)
    for width, height in [(40, 30), (13, 97), (200, 5), (1, 1)]:
        for _ in range(200):
            top, left, crop_height, crop_width = transform.get_params(width, height)
            assert top >= 0 and top + crop_height <= height and crop_height > 0
            assert left >= 0 and left + crop_width <= width and crop_width > 0
    roomy = RandomResizedCrop(8, scale=(0.05, 0.4), ratio=(0.5, 2.0))  # every draw fits: never the fallback
    torch.manual_seed(1)
    for _ in range(200):
        top, left, crop_height, crop_width = roomy.get_params(1000, 1000)
        assert 0.05 * 0.98 <= crop_height * crop_width / 1000**2 <= 0.4 * 1.02
        assert 0.5 * 0.98 <= crop_width / crop_height <= 2.0 * 1.02


def test_random_resized_crop_is_reproducible_under_torch_seeds() -> None:
    image = image_of(random_pixels())
    transform = RandomResizedCrop((16, 12))

    def run(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        return [np.asarray(transform(image)) for _ in range(5)]

    first, again, other = run(3), run(3), run(4)
    assert first[0].shape == (16, 12, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_random_resized_crop_falls_back_to_a_centre_crop() -> None:
    pixels = random_pixels(20, 100)  # aspect 5: wider than any allowed ratio
    transform = RandomResizedCrop((20, 27), scale=(2.0, 3.0))  # no box can have twice the image area
    torch.manual_seed(0)
    assert transform.get_params(100, 20) == (0, 36, 20, 27)  # height kept, width = round(20 * 4 / 3)
    out = np.asarray(transform(image_of(pixels)))  # the crop already has the output size: no resampling
    np.testing.assert_array_equal(out, pixels[0:20, 36:63])
    tall = RandomResizedCrop(4, scale=(2.0, 3.0))
    assert tall.get_params(20, 100) == (36, 0, 27, 20)  # width kept, height = round(20 / (3 / 4))
    assert tall.get_params(30, 30) == (0, 0, 30, 30)  # ratio 1 is allowed: the whole image


def test_random_resized_crop_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="scale must satisfy 0 < min <= max"):
        RandomResizedCrop(8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="ratio must satisfy 0 < min <= max"):
        RandomResizedCrop(8, ratio=(0.0, 1.0))


def test_horizontal_flip_matches_numpy() -> None:
    pixels = random_pixels()
    np.testing.assert_array_equal(np.asarray(RandomHorizontalFlip(p=1.0)(image_of(pixels))), pixels[:, ::-1])
    np.testing.assert_array_equal(np.asarray(RandomHorizontalFlip(p=0.0)(image_of(pixels))), pixels)
    tensor = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    flipped = RandomHorizontalFlip(p=1.0)(tensor)
    assert isinstance(flipped, torch.Tensor)
    np.testing.assert_array_equal(flipped.numpy(), pixels.transpose(2, 0, 1)[:, :, ::-1])


def test_horizontal_flip_draws_from_torch() -> None:
    pixels = random_pixels(2, 3)
    flip = RandomHorizontalFlip()

    def flips(seed: int) -> list[bool]:
        torch.manual_seed(seed)
        return [not np.array_equal(np.asarray(flip(image_of(pixels))), pixels) for _ in range(400)]

    drawn = flips(0)
    assert drawn == flips(0)
    assert 150 < sum(drawn) < 250
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        RandomHorizontalFlip(1.5)


def test_color_jitter_with_zero_strength_is_the_identity() -> None:
    pixels = random_pixels()
    np.testing.assert_array_equal(np.asarray(ColorJitter()(image_of(pixels))), pixels)


def test_color_jitter_factors_against_numpy() -> None:
    pixels = random_pixels()
    darker = np.asarray(ColorJitter(brightness=(0.5, 0.5))(image_of(pixels))).astype(int)
    assert np.abs(darker - pixels * 0.5).max() <= 1  # brightness blends with black
    gray = np.asarray(ColorJitter(saturation=(0.0, 0.0))(image_of(pixels))).astype(int)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    flat = np.asarray(ColorJitter(contrast=(0.0, 0.0))(image_of(pixels)))
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1  # contrast 0: one uniform grey


def test_color_jitter_is_reproducible_and_bounded() -> None:
    image = image_of(random_pixels())
    jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)

    def run(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        return np.asarray(jitter(image))

    assert np.array_equal(run(5), run(5)) and not np.array_equal(run(5), run(6))
    assert jitter.brightness == (0.6, 1.4)
    assert ColorJitter(brightness=2.0).brightness == (0.0, 3.0)
    with pytest.raises(ValueError, match="brightness must be non-negative"):
        ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match="contrast bounds must satisfy 0 <= min <= max"):
        ColorJitter(contrast=(1.5, 0.5))


def test_compose_applies_in_order_and_reprs() -> None:
    calls: list[str] = []
    compose = Compose([lambda x: calls.append("a") or x + 1, lambda x: calls.append("b") or x * 10])
    assert compose(1) == 20 and calls == ["a", "b"]
    pipeline = Compose([Resize(8), ToTensor(), Normalize((0.5,), (0.25,))])
    assert repr(pipeline) == (
        "Compose([\n"
        "    Resize(size=(8, 8), interpolation='bilinear'),\n"
        "    ToTensor(),\n"
        "    Normalize(mean=(0.5,), std=(0.25,)),\n"
        "])"
    )
    assert repr(Compose([])) == "Compose([])"


def test_reprs_show_the_parameters() -> None:
    assert repr(CenterCrop(5)) == "CenterCrop(size=(5, 5))"
    assert repr(RandomHorizontalFlip(0.3)) == "RandomHorizontalFlip(p=0.3)"
    assert repr(RandomResizedCrop(4, scale=(0.5, 1.0))) == (
        f"RandomResizedCrop(size=(4, 4), scale=(0.5, 1.0), ratio=(0.75, {4 / 3}), interpolation='bilinear')"
    )
    assert repr(ColorJitter(brightness=0.5)) == (
        "ColorJitter(brightness=(0.5, 1.5), contrast=(1.0, 1.0), saturation=(1.0, 1.0))"
    )


def test_transforms_pickle_for_dataloader_workers() -> None:
    pipeline = Compose([RandomResizedCrop(8), RandomHorizontalFlip(), ColorJitter(0.1, 0.1, 0.1), ToTensor()])
    clone = pickle.loads(pickle.dumps(pipeline))
    image = image_of(random_pixels())
    torch.manual_seed(0)
    expected = pipeline(image)
    torch.manual_seed(0)
    assert torch.equal(clone(image), expected)
    assert math.isclose(clone.transforms[1].p, 0.5)
