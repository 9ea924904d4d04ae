"""A small on-disk image dataset (PNG and JPEG files drawn with numpy + PIL) and a valid in-memory table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

N_LABELS = 6
IMAGES_PER_LABEL = 4
TRAIN_LABELS = (0, 1, 2)


@dataclass(frozen=True)
class ImageSet:
    """The generated dataset: its folder, its table (relative paths), the CSV written from it, and the pixels."""

    root: Path
    df: pd.DataFrame
    csv: Path
    pixels: dict[str, np.ndarray]  # relative path -> the RGB array the file decodes to


def _row(label: int, k: int) -> dict[str, object]:
    train = label in TRAIN_LABELS
    path = f"label_{label}/{k}.{'jpg' if k == 3 else 'png'}"
    row: dict[str, object] = {
        "label": label,
        "path": path,
        "split": "train" if train else "validation",
        "is_query": None if train else k in (0, 1),
        "is_gallery": None if train else k in (1, 2, 3),
        "category": "shoes" if label % 2 == 0 else "bags",
        "sequence": f"seq_{label}" if k < 2 else None,
    }
    bbox = (3, 3 + 20 + k, 2, 2 + 15 + label) if k == 1 else (None, None, None, None)
    row.update(dict(zip(("x_1", "x_2", "y_1", "y_2"), bbox, strict=True)))
    return row


def image_size(label: int, k: int) -> tuple[int, int]:
    """``(width, height)`` of image ``k`` of ``label``: every image has its own size."""
    return 40 + 4 * k, 30 + 2 * label


def write_images(root: Path) -> ImageSet:
    """Draw ``N_LABELS x IMAGES_PER_LABEL`` random images under ``root`` and write ``root / "df.csv"``."""
    rng = np.random.default_rng(0)
    keys = [(label, k) for label in range(N_LABELS) for k in range(IMAGES_PER_LABEL)]
    rows = [_row(label, k) for label, k in keys]
    pixels: dict[str, np.ndarray] = {}
    for (label, k), row in zip(keys, rows, strict=True):
        width, height = image_size(label, k)
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        file = root / str(row["path"])
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(file)
        with Image.open(file) as decoded:  # JPEG is lossy: keep what the file decodes to
            pixels[str(row["path"])] = np.asarray(decoded.convert("RGB"))
    df = pd.DataFrame(rows)
    csv = root / "df.csv"
    df.to_csv(csv, index=False)
    return ImageSet(root=root, df=df, csv=csv, pixels=pixels)


@pytest.fixture(scope="session")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    """A read-only image dataset shared by the tests of this folder (copy it before changing files)."""
    return write_images(tmp_path_factory.mktemp("image_set"))


@pytest.fixture
def fresh_image_set(tmp_path: Path) -> ImageSet:
    """A private image dataset that a test may damage."""
    return write_images(tmp_path)


@pytest.fixture
def valid_df() -> pd.DataFrame:
    """A valid table that references no real file (use ``check_images="none"``); 8 rows, index 0..7.

    Rows 0-3 are train rows (labels 0, 0, 1, 1); rows 4-7 are validation rows (labels 2, 2, 3, 3), one query
    row and one gallery row per label.
    """
    return pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 2, 2, 3, 3],
            "path": [f"img/{i}.png" for i in range(8)],
            "split": ["train"] * 4 + ["validation"] * 4,
            "is_query": [None] * 4 + [True, False, True, False],
            "is_gallery": [None] * 4 + [False, True, False, True],
        }
    )
