"""Uploaded query images: size-limited, decoded by Pillow or refused by name, kept for paging under a random token."""

from __future__ import annotations

import io
import secrets
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image
from torch import Tensor

from omlcore.datasets.pixels import to_rgb
from omlcore.serve.explorer import ExplorerError
from omlcore.serve.thumbnails import encode_thumbnail

__all__ = ["MAX_PIXELS", "MAX_UPLOAD_BYTES", "Upload", "UploadError", "UploadStore", "decode_upload"]

#: The largest upload accepted, in bytes (``omlcore serve --max-upload-mb`` changes it).
MAX_UPLOAD_BYTES = 10 * 2**20
#: The most pixels an uploaded image may have (a small file can decode to a huge image).
MAX_PIXELS = 40_000_000


class UploadError(ExplorerError):
    """An upload refused: too large, or not an image Pillow decodes. ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> Image.Image:
    """The uploaded file ``name`` as an 8-bit RGB image.

    Raises:
        UploadError: more than ``max_bytes`` (413), empty, or not an image Pillow can decode, or one of more than
            :data:`MAX_PIXELS` pixels (415).
    """
    if len(data) > max_bytes:
        raise UploadError(f"'{name}' has {len(data)} bytes; uploads are limited to {max_bytes} bytes", 413)
    if not data:
        raise UploadError(f"'{name}' is empty: upload an image file (PNG, JPEG, WebP ...)", 415)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise UploadError(
                        f"'{name}' is {image.width} x {image.height} pixels; at most {MAX_PIXELS} pixels are accepted",
                        413,
                    )
                image.load()
                return to_rgb(image)
    except UploadError:
        raise
    except Exception as error:  # Pillow raises many types for files it cannot read
        raise UploadError(
            f"'{name}' is not an image Pillow can decode ({type(error).__name__}: {error}): upload a PNG, JPEG, WebP, "
            "BMP, GIF or TIFF file",
            415,
        ) from None


@dataclass(frozen=True)
class Upload:
    """A decoded, embedded upload: its file name, embedding ``(D,)`` and thumbnail (bytes and media type)."""

    token: str
    name: str
    embedding: Tensor
    thumbnail: bytes
    media_type: str


class UploadStore:
    """The last ``capacity`` uploads by random token (so that their results can be paged), the oldest dropped."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._uploads: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, name: str, image: Image.Image, embedding: Tensor) -> Upload:
        data, media_type = encode_thumbnail(image)
        upload = Upload(secrets.token_urlsafe(12), name, embedding, data, media_type)
        with self._lock:
            self._uploads[upload.token] = upload
            while len(self._uploads) > self.capacity:
                self._uploads.popitem(last=False)
        return upload

    def get(self, token: str) -> Upload:
        """The upload of ``token``; :class:`UploadError` (404) once it was dropped or for an unknown token."""
        with self._lock:
            upload = self._uploads.get(token)
        if upload is None:
            raise UploadError(
                f"no upload '{token}' (the server keeps the last {self.capacity} uploads): upload the image again", 404
            )
        return upload
