"""Image datasets over the CSV data contract: one for training, one for query / gallery evaluation.

Items are dictionaries keyed by the names in :mod:`omlcore.keys`, so they batch with the default collate
function of ``torch.utils.data.DataLoader``:

>>> train = ImageLabeledDataset("dataset/df.csv", transform="train_augmentations")  # doctest: +SKIP
>>> valid = ImageQueryGalleryDataset("dataset/df.csv")  # doctest: +SKIP

Without ``transform``, images are normalised at their own size, as in OML (see :data:`TransformSpec`).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import Dataset

from omlcore.config import resolve
from omlcore.datasets.csv_format import CheckImages, _mixed_categories, read_dataset_csv, validate_dataframe
from omlcore.datasets.pixels import to_rgb
from omlcore.errors import DataValidationError
from omlcore.keys import (
    BBOX_COLUMNS,
    CATEGORIES,
    CATEGORY_COLUMN,
    IMAGES,
    INDEX,
    IS_GALLERY,
    IS_GALLERY_COLUMN,
    IS_QUERY,
    IS_QUERY_COLUMN,
    LABEL_COLUMN,
    LABELS,
    PATH_COLUMN,
    PATHS,
    SEQUENCE_COLUMN,
    SEQUENCES,
    SPLIT_COLUMN,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
)
from omlcore.transforms.presets import normalize

__all__ = ["ImageBaseDataset", "ImageLabeledDataset", "ImageQueryGalleryDataset", "TransformSpec", "resolve_transform"]

#: A callable (PIL image -> tensor), a registered transform name, a ``{"name": ..., "args": {...}}`` config, or
#: None for the default, :func:`omlcore.transforms.presets.normalize` (``"normalize"``, OML's default): to tensor and
#: ImageNet mean / std at the image's own size, no resize. Pass e.g. ``"resize_normalize"`` (224 x 224) or
#: ``{"name": "resize_normalize", "args": {"size": 64}}`` to batch images of different sizes.
TransformSpec = Callable[[Image.Image], Any] | str | Mapping[str, Any] | None


def resolve_transform(transform: TransformSpec) -> Callable[[Image.Image], Any]:
    """Turn a :data:`TransformSpec` into a callable; names and configs are built through the registry."""
    if transform is None:
        return normalize()
    if isinstance(transform, (str, Mapping)):
        built = resolve("transform", transform)
        if not callable(built):
            raise TypeError(f"transform {transform!r} built a {type(built).__name__}, which is not callable")
        return built
    if callable(transform):
        return transform
    raise TypeError(
        "transform must be a callable, the name of a registered transform, a {'name': ..., 'args': {...}} "
        f"config or None; got {type(transform).__name__}"
    )


class ImageBaseDataset(Dataset[dict[str, Any]]):
    """Rows of one split of a dataset CSV / dataframe, decoded with Pillow into 8-bit RGB, cropped to their bbox.

    Args:
        data: a dataframe, or the path of a CSV file (read with :func:`read_dataset_csv`).
        dataset_root: the folder relative paths start from; defaults to the CSV's folder, or to the current
            working directory for a dataframe.
        transform: see :data:`TransformSpec`; the default normalises at the image's own size, without resizing.
        split: keep the rows of this split; None keeps all rows.
        check_images: how much of the image files to check up front: ``"none"``, ``"exists"`` or ``"decode"``
            (only the selected rows' files are checked).
        allow_lone_queries: accept validation queries without a gallery match (see :func:`validate_dataframe`).

    The whole table is validated (every row, every split) before the split is selected. Items carry
    :data:`~omlcore.keys.IMAGES`, :data:`~omlcore.keys.LABELS`, :data:`~omlcore.keys.INDEX`,
    :data:`~omlcore.keys.PATHS`, plus :data:`~omlcore.keys.CATEGORIES` (str) and
    :data:`~omlcore.keys.SEQUENCES` (int code) when those columns exist. Sequences are coded ``0, 1, ...`` in
    sorted order of their values (as text); a row without a sequence gets ``-1``, i.e. belongs to no sequence.
    """

    def __init__(
        self,
        data: pd.DataFrame | str | os.PathLike[str],
        dataset_root: str | os.PathLike[str] | None = None,
        transform: TransformSpec = None,
        *,
        split: str | None = None,
        check_images: CheckImages = "exists",
        allow_lone_queries: bool = False,
    ) -> None:
        if split not in (SPLIT_TRAIN, SPLIT_VALIDATION, None):
            raise ValueError(f"split must be '{SPLIT_TRAIN}', '{SPLIT_VALIDATION}' or None (all rows), got {split!r}")
        if isinstance(data, pd.DataFrame):
            self.source: Path | None = None
            table = validate_dataframe(data, dataset_root, check_images="none", allow_lone_queries=allow_lone_queries)
        elif isinstance(data, (str, os.PathLike)):
            self.source = Path(data)
            dataset_root = dataset_root if dataset_root is not None else self.source.parent
            table = read_dataset_csv(
                self.source, dataset_root, check_images="none", allow_lone_queries=allow_lone_queries
            )
        else:
            raise TypeError(f"data must be a pandas DataFrame or the path of a CSV file, got {type(data).__name__}")
        if split is not None:
            table = table[table[SPLIT_COLUMN] == split]
            if table.empty:
                raise DataValidationError(
                    f"{self._what()} has no rows with split == '{split}'. Fix: mark the rows to use with "
                    f"split='{split}', or pass split=None to use every row."
                )
        if check_images != "none":  # files of the selected rows only; the column checks above covered every row
            validate_dataframe(
                table.drop(columns=CATEGORY_COLUMN, errors="ignore"),  # its warning, if any, was given above
                dataset_root,
                check_images=check_images,
                allow_lone_queries=True,
                source=self.source,
            )
        self.df = table
        self.split = split
        self.transform = resolve_transform(transform)
        self.paths: list[str] = table[PATH_COLUMN].tolist()
        self.labels: np.ndarray = table[LABEL_COLUMN].to_numpy(dtype=np.int64)
        self.categories: np.ndarray | None = (
            table[CATEGORY_COLUMN].astype(str).to_numpy() if CATEGORY_COLUMN in table.columns else None
        )
        self.sequences: np.ndarray | None = None
        if SEQUENCE_COLUMN in table.columns:
            sequence = table[SEQUENCE_COLUMN]
            codes, _ = pd.factorize(sequence.where(sequence.isna(), sequence.astype(str)), sort=True)
            self.sequences = codes.astype(np.int64)
        self.bboxes: np.ndarray | None = (
            table[list(BBOX_COLUMNS)].to_numpy(dtype=np.float64) if set(BBOX_COLUMNS) <= set(table.columns) else None
        )

    def _what(self) -> str:
        return f"Dataset CSV '{self.source}'" if self.source is not None else "The dataframe"

    def _row(self, idx: int) -> str:
        label = self.df.index[idx]
        line = f", CSV line {int(label) + 2} of '{self.source}'" if self.source is not None else ""
        return f"row {label}{line}"

    def __len__(self) -> int:
        return len(self.paths)

    def get_labels(self) -> np.ndarray:
        """The int64 label of every item, in item order."""
        return self.labels

    def get_label2category(self, user: str = "label2category") -> dict[int, str]:
        """The category of every label of these items (OML's ``get_label2category``), for category-balanced samplers.

        Args:
            user: who needs the mapping (e.g. the sampler's name), named in the errors.

        Raises:
            DataValidationError: the data has no ``category`` column, or a label has items in several categories
                (accepted by the data format, but then a label has no single category).
        """
        if self.categories is None:
            raise DataValidationError(
                f"{self._what()} has no '{CATEGORY_COLUMN}' column, which {user} needs. Fix: give every row a "
                "category, or use a sampler without categories (e.g. 'balance')."
            )
        mixed = _mixed_categories(self.labels, self.categories)
        if mixed is not None:
            raise DataValidationError(
                f"{user} needs one category per label, but {mixed}. Fix: correct their categories, give each "
                "category's items their own labels, or use a sampler without categories ('balance')."
            )
        return dict(zip(self.labels.tolist(), self.categories.tolist(), strict=True))

    def read_image(self, idx: int) -> Image.Image:
        """Item ``idx`` as an 8-bit RGB PIL image, cropped to its bbox when it has one.

        Image modes are converted by :func:`~omlcore.datasets.pixels.to_rgb` (16-bit and float scaled, transparency
        composited over white); bbox edges are rounded to whole pixels (halves to even).
        """
        path = self.paths[idx]
        try:
            with Image.open(path) as opened:
                image = to_rgb(opened)
        except DataValidationError as error:
            raise DataValidationError(f"Cannot read the image '{path}' ({self._row(idx)}): {error}.") from error
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DataValidationError(
                f"Cannot read the image '{path}' ({self._row(idx)}): {type(error).__name__}: {error}. "
                "Fix: replace or re-export the file, or remove the row; check_images='decode' finds every "
                "unreadable file up front."
            ) from error
        if self.bboxes is None or np.isnan(self.bboxes[idx]).any():
            return image
        x_1, x_2, y_1, y_2 = self.bboxes[idx]
        left, right, top, bottom = (int(edge) for edge in np.rint(self.bboxes[idx]))
        width, height = image.size
        if not (0 <= left < right <= width and 0 <= top < bottom <= height):
            raise DataValidationError(
                f"The bbox of {self._row(idx)} (x_1={x_1:g}, x_2={x_2:g}, y_1={y_1:g}, y_2={y_2:g}) does not lie "
                f"inside its image '{path}' of size {width}x{height} (width x height). Fix: correct or clip the "
                "bbox (0 <= x_1 < x_2 <= width, 0 <= y_1 < y_2 <= height), or leave all four values empty."
            )
        return image.crop((left, top, right, bottom))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = operator.index(idx)
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} is out of range for a dataset of {len(self)} items")
        idx %= len(self)
        item: dict[str, Any] = {
            IMAGES: self.transform(self.read_image(idx)),
            LABELS: int(self.labels[idx]),
            INDEX: idx,
            PATHS: self.paths[idx],
        }
        if self.categories is not None:
            item[CATEGORIES] = str(self.categories[idx])
        if self.sequences is not None:
            item[SEQUENCES] = int(self.sequences[idx])
        return item

    def __repr__(self) -> str:
        split = f"split={self.split!r}" if self.split is not None else "all splits"
        origin = f"from '{self.source}'" if self.source is not None else "from a dataframe"
        return f"{type(self).__name__}({len(self)} items, {split}, {origin})"


class ImageLabeledDataset(ImageBaseDataset):
    """Training dataset: the ``train`` rows by default (see :class:`ImageBaseDataset` for the arguments).

    The query / gallery checks of the validation rows are skipped when ``split="train"``, since those rows
    are not used here; every other check covers the whole table.
    """

    def __init__(
        self,
        data: pd.DataFrame | str | os.PathLike[str],
        dataset_root: str | os.PathLike[str] | None = None,
        transform: TransformSpec = None,
        *,
        split: str | None = SPLIT_TRAIN,
        check_images: CheckImages = "exists",
        allow_lone_queries: bool = False,
    ) -> None:
        super().__init__(
            data,
            dataset_root,
            transform,
            split=split,
            check_images=check_images,
            allow_lone_queries=allow_lone_queries or split == SPLIT_TRAIN,
        )


class ImageQueryGalleryDataset(ImageBaseDataset):
    """Evaluation dataset: the ``validation`` rows by default; items also carry IS_QUERY and IS_GALLERY (bool).

    See :class:`ImageBaseDataset` for the arguments.
    """

    def __init__(
        self,
        data: pd.DataFrame | str | os.PathLike[str],
        dataset_root: str | os.PathLike[str] | None = None,
        transform: TransformSpec = None,
        *,
        split: str | None = SPLIT_VALIDATION,
        check_images: CheckImages = "exists",
        allow_lone_queries: bool = False,
    ) -> None:
        super().__init__(
            data,
            dataset_root,
            transform,
            split=split,
            check_images=check_images,
            allow_lone_queries=allow_lone_queries,
        )
        self.is_query: np.ndarray = self.df[IS_QUERY_COLUMN].to_numpy(dtype=bool)
        self.is_gallery: np.ndarray = self.df[IS_GALLERY_COLUMN].to_numpy(dtype=bool)

    def get_query_ids(self) -> np.ndarray:
        """Item indices of the queries."""
        return np.flatnonzero(self.is_query)

    def get_gallery_ids(self) -> np.ndarray:
        """Item indices of the gallery items."""
        return np.flatnonzero(self.is_gallery)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = super().__getitem__(idx)
        position = item[INDEX]
        item[IS_QUERY] = bool(self.is_query[position])
        item[IS_GALLERY] = bool(self.is_gallery[position])
        return item
