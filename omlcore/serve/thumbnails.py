"""Thumbnails of indexed items: made once with Pillow, kept on disk, served by item id (never by a path).

The cache folder holds one file per item and size, named by the item's id: the request's id is looked up in the
index first, so no text of a request ever becomes part of a path.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from omlcore.datasets.pixels import to_rgb

__all__ = ["THUMBNAIL_SIZE", "Thumbnails", "default_cache_folder", "encode_thumbnail"]

#: The longest side of a thumbnail, in pixels.
THUMBNAIL_SIZE = 128
_LOSSLESS = {"PNG", "GIF", "BMP", "TIFF"}


def default_cache_folder(index_folder: Path) -> Path:
    """``<omlcore cache>/thumbnails/<sha256 of the index's manifest, 16 digits>``: a rebuilt index gets new ones."""
    from omlcore.models.hub import cache_dir  # here: importing omlcore.models builds the extractor registry

    digest = hashlib.sha256((index_folder / "manifest.json").read_bytes()).hexdigest()[:16]
    return cache_dir() / "thumbnails" / digest


def encode_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> tuple[bytes, str]:
    """``image`` shrunk to fit a ``size`` square: PNG bytes for lossless sources (drawings, glyphs), else JPEG; and
    the media type."""
    lossless = image.format in _LOSSLESS
    small = to_rgb(image)
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if lossless:
        small.save(buffer, format="PNG", optimize=True)
    else:
        small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), "image/png" if lossless else "image/jpeg"


class Thumbnails:
    """A disk cache of thumbnails in ``folder`` (created when needed), ``size`` pixels on the longest side."""

    def __init__(self, folder: Path, size: int = THUMBNAIL_SIZE) -> None:
        self.folder, self.size = Path(folder), size

    def get(self, item_id: int, load: Callable[[], Image.Image]) -> tuple[bytes, str]:
        """The thumbnail of item ``item_id`` (an id the index holds) and its media type; ``load`` opens the item's
        image the first time."""
        name = f"{int(item_id)}-{self.size}"
        for suffix, media_type in ((".png", "image/png"), (".jpg", "image/jpeg")):
            cached = self.folder / f"{name}{suffix}"
            if cached.is_file():
                return cached.read_bytes(), media_type
        with load() as image:
            data, media_type = encode_thumbnail(image, self.size)
        self.folder.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if media_type == "image/png" else ".jpg"
        with tempfile.NamedTemporaryFile("wb", dir=self.folder, prefix=f".{name}.", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, self.folder / f"{name}{suffix}")
        return data, media_type
