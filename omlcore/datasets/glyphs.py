"""Glyphs: a small real dataset shipped with omlcore, characters rendered from libre typefaces.

Class = character, sample = typeface: every image is one character drawn in one font family (its regular
style), rendered from the fonts of Debian's ``fonts-*`` packages by ``scripts/build_glyphs_dataset.py``.

- train: Latin capitals, Latin small letters (distinct classes), digits, and Greek letters that look like
  no Latin one;
- validation: Cyrillic letters that look like no Latin or Greek one, every image both query and gallery.

Images are ``GLYPH_SIZE x GLYPH_SIZE`` grayscale, the character centred horizontally on its ink and set on a
common baseline at a common cap height, so that case and size differences survive (``o`` is smaller than
``O``). The images ship as one compressed array file (``data/glyphs.npz``) with the list of fonts, their
packages and licences (``data/glyphs_fonts.csv``); :func:`materialize_glyphs` writes them in OML's CSV + PNG
layout on first use:

>>> from omlcore.datasets.glyphs import materialize_glyphs
>>> root = materialize_glyphs()  # doctest: +SKIP
>>> train = ImageLabeledDataset(root / "df.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from omlcore.datasets.csv_format import read_dataset_csv
from omlcore.errors import OmlcoreError
from omlcore.keys import (
    CATEGORY_COLUMN,
    IS_GALLERY_COLUMN,
    IS_QUERY_COLUMN,
    LABEL_COLUMN,
    PATH_COLUMN,
    SPLIT_COLUMN,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
)

__all__ = [
    "CHARACTER_CATEGORIES",
    "GLYPHS_FORMAT",
    "GLYPH_SIZE",
    "TRAIN_CHARACTERS",
    "VALIDATION_CHARACTERS",
    "GlyphFont",
    "Glyphs",
    "GlyphsError",
    "default_glyphs_root",
    "glyphs_dataframe",
    "load_glyphs",
    "materialize_glyphs",
]

#: Side of the square images, in pixels.
GLYPH_SIZE = 32
#: The classes by category (the dataframe's ``category`` column), in label order: label 0 is "A".
CHARACTER_CATEGORIES: dict[str, str] = {
    "latin_upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "latin_lower": "abcdefghijklmnopqrstuvwxyz",
    "digit": "0123456789",
    # Not the capitals shaped like Latin ones (alpha, beta, epsilon, zeta, eta, iota, kappa, mu, nu, omicron, rho,
    # tau, upsilon, chi) nor the small iota, kappa, nu, omicron, rho, upsilon, chi (dotless i, small K, v, o, p, u, x).
    "greek_upper": "ΓΔΘΛΞΠΣΦΨΩ",
    "greek_lower": "αβγδεζηθλμξπσςτφψω",
    # Not the letters shaped like Latin ones (a, ve, ie, io, ka, em, en, o, er, es, te, u, ha: capitals; a, ie, io,
    # o, er, es, u, ha: small) or Greek ones (ghe, pe, ef), nor ze (the digit 3), nor the small ve, ghe, ka, em,
    # en, pe, te, ef, which are small capitals B, Gamma, K, M, H, Pi, T, Phi.
    "cyrillic_upper": "БДЖИЙЛЦЧШЩЪЫЬЭЮЯ",
    "cyrillic_lower": "бджийлцчшщъыьэюя",
}
TRAIN_CHARACTERS = "".join(CHARACTER_CATEGORIES[name] for name in CHARACTER_CATEGORIES if "cyrillic" not in name)
VALIDATION_CHARACTERS = CHARACTER_CATEGORIES["cyrillic_upper"] + CHARACTER_CATEGORIES["cyrillic_lower"]
#: The format tag stored in the array file.
GLYPHS_FORMAT = "omlcore.glyphs/1"

_DATA = "data"
_ARRAYS = "glyphs.npz"
_FONTS = "glyphs_fonts.csv"
_MANIFEST = "glyphs.json"
_KEPT = "kept"


class GlyphsError(OmlcoreError):
    """The glyphs dataset cannot be read or written (a broken install, or a folder in the way)."""


@dataclass(frozen=True)
class GlyphFont:
    """One typeface of the dataset, with where it came from and its licence."""

    font_id: int
    family: str
    slug: str
    style: str
    package: str
    package_version: str
    file: str
    license: str
    copyright: str


@dataclass(frozen=True, eq=False)
class Glyphs:
    """The shipped arrays: ``images[i]`` shows ``chr(codepoints[i])`` in ``fonts[font_ids[i]]``.

    Attributes:
        images: uint8 ``(N, GLYPH_SIZE, GLYPH_SIZE)``, ink coverage (0 background, 255 full ink).
        codepoints: int32 ``(N,)`` Unicode code points.
        font_ids: int16 ``(N,)`` positions in :attr:`fonts`.
        fonts: the typefaces, ``fonts[k].font_id == k``.
        sha256: the digest of the array file (names the materialised folder).
    """

    images: np.ndarray
    codepoints: np.ndarray
    font_ids: np.ndarray
    fonts: tuple[GlyphFont, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def characters(self) -> list[str]:
        """The character of every image."""
        return [chr(code) for code in self.codepoints.tolist()]


def _data_file(name: str) -> Path:
    path = Path(str(resources.files("omlcore.datasets").joinpath(_DATA).joinpath(name)))
    if not path.is_file():
        raise GlyphsError(
            f"The glyphs data file '{path}' is missing from the omlcore installation. Fix: reinstall omlcore; "
            "in a source checkout, rebuild it with scripts/build_glyphs_dataset.py."
        )
    return path


@functools.lru_cache(maxsize=1)
def load_glyphs() -> Glyphs:
    """The shipped arrays and font table (read once per process)."""
    path = _data_file(_ARRAYS)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with np.load(path, allow_pickle=False) as arrays:
        tag = str(arrays["format"].item()) if "format" in arrays.files and arrays["format"].size == 1 else None
        if tag != GLYPHS_FORMAT:
            raise GlyphsError(f"'{path}' holds format {tag!r}, this omlcore reads {GLYPHS_FORMAT!r}; reinstall omlcore")
        images, codepoints, font_ids = arrays["images"], arrays["codepoints"], arrays["font_ids"]
        families = arrays["fonts"].tolist()
    for array in (images, codepoints, font_ids):
        array.flags.writeable = False  # shared by every caller (the result is cached)
    table = pd.read_csv(_data_file(_FONTS), dtype=str, keep_default_na=False)
    kept = table[table["status"] == _KEPT]
    fonts = tuple(
        GlyphFont(
            font_id=int(row.font_id),
            family=row.family,
            slug=row.slug,
            style=row.style,
            package=row.package,
            package_version=row.package_version,
            file=row.file,
            license=row.license,
            copyright=row.copyright,
        )
        for row in kept.itertuples(index=False)
    )
    if [font.family for font in fonts] != families or [font.font_id for font in fonts] != list(range(len(fonts))):
        raise GlyphsError(f"'{path}' and its font table '{_data_file(_FONTS)}' disagree; reinstall omlcore")
    return Glyphs(images=images, codepoints=codepoints, font_ids=font_ids, fonts=fonts, sha256=digest)


def _labels() -> dict[str, tuple[int, str]]:
    """character -> (label, category), labels in the order of :data:`CHARACTER_CATEGORIES`."""
    characters = [(char, name) for name, chars in CHARACTER_CATEGORIES.items() for char in chars]
    return {char: (label, name) for label, (char, name) in enumerate(characters)}


def _table(glyphs: Glyphs) -> pd.DataFrame:
    """The dataset CSV (relative paths ``images/u0041/<font>.png``), one row per image, in array order."""
    labels = _labels()
    characters = glyphs.characters
    known = set(labels)
    unknown = sorted({char for char in characters if char not in known})
    if unknown:
        raise GlyphsError(f"the glyphs data holds characters that are no class: {unknown}; reinstall omlcore")
    validation = set(VALIDATION_CHARACTERS)
    slugs = [font.slug for font in glyphs.fonts]
    is_validation = np.array([char in validation for char in characters], dtype=bool)
    flags = [True if flag else None for flag in is_validation.tolist()]  # empty on train rows, as in OML
    return pd.DataFrame(
        {
            LABEL_COLUMN: [labels[char][0] for char in characters],
            PATH_COLUMN: [
                f"images/u{ord(char):04x}/{slugs[font]}.png"
                for char, font in zip(characters, glyphs.font_ids.tolist(), strict=True)
            ],
            SPLIT_COLUMN: np.where(is_validation, SPLIT_VALIDATION, SPLIT_TRAIN),
            IS_QUERY_COLUMN: flags,
            IS_GALLERY_COLUMN: flags,
            CATEGORY_COLUMN: [labels[char][1] for char in characters],
            "character": characters,
            "character_name": [unicodedata.name(char, "") for char in characters],
            "font": [glyphs.fonts[font].family for font in glyphs.font_ids.tolist()],
        }
    )


def default_glyphs_root() -> Path:
    """Where :func:`materialize_glyphs` writes by default: ``<cache>/datasets/glyphs-<digest>``.

    The cache folder is :func:`omlcore.models.hub.cache_dir` (``$OMLCORE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/omlcore``, else ``~/.cache/omlcore``); the digest of the shipped array file keeps
    folders of different omlcore releases apart.
    """
    from omlcore.models.hub import cache_dir  # here: importing omlcore.models loads every extractor

    return cache_dir() / "datasets" / f"glyphs-{load_glyphs().sha256[:12]}"


def _is_complete(root: Path, digest: str) -> bool:
    try:
        manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("sha256") == digest and (root / "df.csv").is_file()


def _write(folder: Path, glyphs: Glyphs) -> None:
    """Write the images, ``df.csv``, the font table and, last, the manifest into ``folder``."""
    table = _table(glyphs)
    for path, ink in zip(table[PATH_COLUMN], glyphs.images, strict=True):
        file = folder / path
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - ink).save(file, format="PNG")
    table.to_csv(folder / "df.csv", index=False)
    shutil.copyfile(_data_file(_FONTS), folder / "fonts.csv")
    manifest = {"format": GLYPHS_FORMAT, "sha256": glyphs.sha256, "n_images": len(glyphs)}
    (folder / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def materialize_glyphs(root: str | os.PathLike[str] | None = None) -> Path:
    """Write the dataset in OML's layout (``df.csv`` + PNG files + ``fonts.csv``) once; return its folder.

    Args:
        root: the folder to create; default :func:`default_glyphs_root`.

    Idempotent and atomic: the files are written into a temporary sibling folder that is renamed to ``root``
    only when complete, so an interrupted run never leaves a folder that passes for the dataset; a folder
    that holds the same data already is returned as it is (also when another process just wrote it).

    Raises:
        GlyphsError: ``root`` exists and is not an empty folder or this dataset.
    """
    glyphs = load_glyphs()
    target = Path(root).expanduser().absolute() if root is not None else default_glyphs_root()
    if _is_complete(target, glyphs.sha256):
        return target
    _check_free(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _write(staging, glyphs)
        with contextlib.suppress(OSError):  # an empty folder in the way (a rename cannot replace it everywhere)
            target.rmdir()
        try:
            staging.rename(target)
        except OSError:
            if not _is_complete(target, glyphs.sha256):  # not another process that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_free(target: Path) -> None:
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise GlyphsError(
            f"Cannot write the glyphs dataset to '{target}': it exists and is not an empty folder nor a complete "
            "copy of this dataset. Fix: remove it, or pass another root."
        )


def glyphs_dataframe(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The dataset's validated table with absolute paths, materialised first if needed (see :func:`materialize_glyphs`).

    Columns: ``label``, ``path``, ``split``, ``is_query``, ``is_gallery``, ``category`` (e.g. ``latin_upper``,
    ``cyrillic_lower``), ``character``, ``character_name`` (Unicode name) and ``font`` (family name).
    """
    folder = materialize_glyphs(root)
    return read_dataset_csv(folder / "df.csv", folder)
