"""How a decoded image file becomes the 8-bit RGB picture that transforms receive: one rule per Pillow mode.

- ``RGB`` is kept as it is; ``L``, ``1``, ``P`` (without transparency), ``CMYK``, ``YCbCr`` ... go through Pillow's
  conversion (CMYK without colour management: ``R = (255 - C) * (255 - K) / 255``, rounded).
- Integer gray images, 16-bit (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) and 32-bit (``I``, which some libraries
  write for 16-bit data), hold intensities in ``0 .. 65535``: a value ``v`` becomes ``round(v * 255 / 65535)``
  (``v / 257``). An ``I`` image with values outside that range is a :class:`~omlcore.errors.DataValidationError`.
- Float gray images (``F``) hold intensities in ``[0, 1]``: ``v`` becomes ``round(v * 255)``. Values outside
  ``[0, 1]`` or NaN are a :class:`~omlcore.errors.DataValidationError`: no range is guessed, since stretching each
  image by its own minimum and maximum would give every image its own brightness.
- Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, or a transparent colour of a ``P`` / ``L`` / ``RGB`` /
  16-bit image) is composited over :data:`ALPHA_BACKGROUND`, white: ``round((c * a + 255 * (255 - a)) / 255)``;
  a fully transparent pixel becomes white whatever colour it stores.

>>> with Image.open("photo.png") as image:  # doctest: +SKIP
...     rgb = to_rgb(image)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from omlcore.errors import DataValidationError

__all__ = ["ALPHA_BACKGROUND", "to_rgb"]

#: The colour that transparent pixels are composited over (white, as product photos are shown).
ALPHA_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_UINT16_MAX = 65535


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit RGB image, by the rule of :mod:`omlcore.datasets.pixels` for its mode.

    Raises:
        DataValidationError: an ``I`` image with values outside ``0 .. 65535``, or an ``F`` image with values
            outside ``[0, 1]`` (the message names the mode, the range found and the fix).
    """
    if image.mode in _INTEGER_MODES or image.mode == "F":
        return _gray_to_rgb(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        return Image.fromarray(_composite(rgba[..., :3], rgba[..., 3]))
    return image.convert("RGB")  # a loaded copy, also of an RGB image: it outlives the file


def _gray_to_rgb(image: Image.Image) -> Image.Image:
    """An ``I;16*`` / ``I`` / ``F`` image scaled to 8 bits, as gray RGB; its transparent value, if any, composited."""
    values = np.asarray(image)
    if image.mode == "F":
        scale, top, written = 255.0, 1.0, "intensities in [0, 1] (0.0 black, 1.0 white)"
    else:
        scale, top, written = 255 / _UINT16_MAX, float(_UINT16_MAX), "16-bit intensities in 0 .. 65535"
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (low >= 0.0 and high <= top):  # False for NaN too
        found = "NaN values" if np.isnan(low) or np.isnan(high) else f"values from {low:g} to {high:g}"
        raise DataValidationError(
            f"a {image.mode!r} image ({image.width}x{image.height}) with {found}: omlcore reads {image.mode!r} "
            f"images as {written} and does not guess another range. Fix: re-export the image as 8-bit or 16-bit "
            "(e.g. PNG)" + (", or scale its values to [0, 1]" if image.mode == "F" else "")
        )
    gray = np.repeat(values.astype(np.float64)[..., None] * scale, 3, axis=2)
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)):
        return Image.fromarray(_composite(gray, np.where(values == transparent, 0.0, 255.0)))
    return Image.fromarray(np.rint(gray).astype(np.uint8))


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``rgb`` (H x W x 3, 0..255 floats) over :data:`ALPHA_BACKGROUND` with ``alpha`` (H x W, 0..255), as uint8."""
    weight = alpha[..., None] / 255.0
    background = np.asarray(ALPHA_BACKGROUND, dtype=np.float64)
    return np.rint(rgb * weight + background * (1.0 - weight)).astype(np.uint8)
