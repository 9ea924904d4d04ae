"""Stanford Cars / CARS196 (Krause et al., 2013; 16,185 images of 196 car models) to OML's CSV.

Three original layouts are read: the devkit (``.mat`` annotations, as torchvision and OML's converter expect),
the single ``cars_annos.mat`` with ``car_ims/``, and the CSV export of the devkit annotations
(``anno_train.csv`` / ``anno_test.csv`` / ``names.csv``, images in class folders). The ``.mat`` files need scipy
(``pip install scipy``); the CSV layout needs nothing more.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from omlcore.datasets.converters._common import (
    DatasetLayoutError,
    class_split,
    find_file,
    find_folder,
    oml_columns,
    split_flags,
)
from omlcore.errors import DataValidationError, MissingDependencyError
from omlcore.keys import LABEL_COLUMN, PATH_COLUMN, SPLIT_COLUMN, SPLIT_TRAIN, SPLIT_VALIDATION

__all__ = ["LAYOUT", "N_TRAIN_CLASSES", "build_cars_df"]

#: The first 98 classes train, the other 98 are the validation classes (the metric-learning protocol).
N_TRAIN_CLASSES = 98
LAYOUT = """\
    one of

    CARS196/                                 (the devkit: torchvision's and OML's layout; needs scipy)
    ├── devkit/
    │   ├── cars_meta.mat                    class_names
    │   └── cars_train_annos.mat             annotations: bbox_x1 bbox_y1 bbox_x2 bbox_y2 class fname
    ├── cars_test_annos_withlabels.mat       (or in devkit/) the same for the test images
    ├── cars_train/00001.jpg ...
    └── cars_test/00001.jpg ...

    CARS196/                                 (the complete annotations; needs scipy)
    ├── cars_annos.mat                       annotations: relative_im_path bbox_x1 ... class test; class_names
    └── car_ims/000001.jpg ...

    CARS196/                                 (the annotations as CSV, images in class folders)
    ├── anno_train.csv                       <fname>,<x1>,<y1>,<x2>,<y2>,<class> (no header)
    ├── anno_test.csv
    ├── names.csv                            one class name per line (optional)
    └── car_data/car_data/
        ├── train/<class name>/00001.jpg ...
        └── test/<class name>/00001.jpg ..."""
_NAME = "Stanford Cars"
_BOX = {"bbox_x1": "x_1", "bbox_x2": "x_2", "bbox_y1": "y_1", "bbox_y2": "y_2"}
_CSV_COLUMNS = ["fname", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class"]  # the order of anno_*.csv


def build_cars_df(
    root: str | os.PathLike[str], *, bboxes: bool = True, split: Literal["classes", "files"] = "classes"
) -> pd.DataFrame:
    """OML's table of Stanford Cars (paths relative to ``root``), from whichever layout of :data:`LAYOUT` is there.

    Args:
        root: the dataset folder.
        bboxes: add the car's bounding box.
        split: ``"classes"``: classes 1-98 train, 99-196 validation (every validation image both query and
            gallery), the metric-learning protocol; ``"files"``: the dataset's own train / test images, as OML's
            converter script does (the same classes on both sides).

    Columns: ``label`` (class id 1-196), ``path``, ``split``, ``is_query``, ``is_gallery``, the bbox, and
    ``class_name`` where the class names are there.
    """
    folder = Path(root)
    if split not in ("classes", "files"):
        raise ValueError(f"split must be 'classes' or 'files', got {split!r}")
    if (folder / "cars_annos.mat").is_file():
        df, names = _from_cars_annos(folder)
    elif (folder / "devkit" / "cars_train_annos.mat").is_file():
        df, names = _from_devkit(folder)
    elif (folder / "anno_train.csv").is_file():
        df, names = _from_csv(folder)
    else:
        raise DatasetLayoutError(
            f"{_NAME}: none of 'cars_annos.mat', 'devkit/cars_train_annos.mat' or 'anno_train.csv' found in "
            f"'{folder}'. Fix: point the converter at the folder that holds the dataset as it was downloaded and "
            f"extracted:\n{LAYOUT}"
        )
    df[LABEL_COLUMN] = df["class"].astype(int)
    if split == "classes":
        df[SPLIT_COLUMN] = class_split(df[LABEL_COLUMN], N_TRAIN_CLASSES)
    else:
        df[SPLIT_COLUMN] = np.where(df["test"].astype(bool), SPLIT_VALIDATION, SPLIT_TRAIN)
    df = pd.concat([df, split_flags(df[SPLIT_COLUMN])], axis=1)
    if bboxes:
        df = df.rename(columns=_BOX)
        for column in _BOX.values():
            df[column] = df[column].astype(float)
    if names is not None:
        known = df[LABEL_COLUMN].between(1, len(names))
        if not known.all():
            raise DataValidationError(
                f"{_NAME}: class ids {sorted(set(df.loc[~known, LABEL_COLUMN]))[:5]} have no name among the "
                f"{len(names)} class names; are the annotations and the class names from the same release?"
            )
        df["class_name"] = [names[label - 1] for label in df[LABEL_COLUMN]]
    kept = [LABEL_COLUMN, PATH_COLUMN, SPLIT_COLUMN, "is_query", "is_gallery"]
    kept += list(_BOX.values()) if bboxes else []
    kept += ["class_name"] if names is not None else []
    return oml_columns(df[kept])


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        loadmat = importlib.import_module("scipy.io").loadmat
    except ImportError as error:
        raise MissingDependencyError(
            f"Reading '{path}' (a MATLAB file) needs scipy, which is not installed. Install it with: pip install "
            f"scipy. Or use the CSV layout of the annotations:\n{LAYOUT}"
        ) from error
    try:
        return dict(loadmat(str(path), squeeze_me=True, struct_as_record=True))
    except (ValueError, TypeError, OSError) as error:
        raise DataValidationError(f"{_NAME}: cannot read '{path}' as a MATLAB file: {error}") from error


def _annotations(path: Path, fields: tuple[str, ...], content: dict[str, Any] | None = None) -> pd.DataFrame:
    """The ``annotations`` struct array of a ``.mat`` file as a table of ``fields``."""
    records = (_loadmat(path) if content is None else content).get("annotations")
    names = getattr(getattr(records, "dtype", None), "names", None) or ()
    missing = [name for name in fields if name not in names]
    if records is None or missing:
        raise DataValidationError(
            f"{_NAME}: '{path}' has no 'annotations' struct with the fields {', '.join(fields)} "
            f"(missing: {', '.join(missing) if records is not None else 'annotations'}); is it the right file?"
        )
    records = np.atleast_1d(records)
    return pd.DataFrame({name: [record[name] for record in records] for name in fields})


def _class_names(path: Path) -> list[str]:
    names = _loadmat(path).get("class_names")
    if names is None:
        raise DataValidationError(f"{_NAME}: '{path}' has no 'class_names'; is it the right file?")
    return [str(name) for name in np.atleast_1d(names)]


def _from_cars_annos(folder: Path) -> tuple[pd.DataFrame, list[str] | None]:
    path = folder / "cars_annos.mat"
    find_folder(folder, ("car_ims",), _NAME, LAYOUT)
    content = _loadmat(path)
    df = _annotations(path, ("relative_im_path", *_BOX, "class", "test"), content)
    df[PATH_COLUMN] = df["relative_im_path"].astype(str)
    names = [str(name) for name in np.atleast_1d(content["class_names"])] if "class_names" in content else None
    return df, names


def _from_devkit(folder: Path) -> tuple[pd.DataFrame, list[str] | None]:
    fields = ("fname", *_BOX, "class")
    test_annos = find_file(
        folder, ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat"), _NAME, LAYOUT
    )
    parts = []
    train_annos = folder / "devkit" / "cars_train_annos.mat"
    for annos, images, test in ((train_annos, "cars_train", False), (test_annos, "cars_test", True)):
        images_folder = find_folder(folder, (f"{images}/{images}", images), _NAME, LAYOUT)
        part = _annotations(annos, fields)
        part[PATH_COLUMN] = images_folder.relative_to(folder).as_posix() + "/" + part["fname"].astype(str)
        part["test"] = test
        parts.append(part)
    meta = folder / "devkit" / "cars_meta.mat"
    return pd.concat(parts, ignore_index=True), _class_names(meta) if meta.is_file() else None


def _from_csv(folder: Path) -> tuple[pd.DataFrame, list[str] | None]:
    parts = []
    for split_name, test in (("train", False), ("test", True)):
        annos = find_file(folder, (f"anno_{split_name}.csv",), _NAME, LAYOUT)
        part = pd.read_csv(annos, header=None, dtype=str, names=_CSV_COLUMNS)
        if len(part) and not str(part["class"].iloc[0]).strip().isdigit():
            part = part.iloc[1:]  # a header line
        numbers = part[[*_BOX, "class"]].apply(pd.to_numeric, errors="coerce")
        if numbers.isna().any(axis=None):
            line = int(numbers.isna().any(axis=1).idxmax()) + 1
            raise DataValidationError(
                f"{_NAME}: '{annos}' line {line} is not <fname>,<x1>,<y1>,<x2>,<y2>,<class> with numbers; is it the "
                "annotation CSV of the devkit?"
            )
        part[[*_BOX, "class"]] = numbers
        images = find_folder(
            folder,
            (f"car_data/car_data/{split_name}", f"car_data/{split_name}", f"cars_{split_name}", split_name),
            _NAME,
            LAYOUT,
        )
        found = {path.name: path.relative_to(folder).as_posix() for path in sorted(images.rglob("*")) if path.is_file()}
        absent = [name for name in part["fname"] if name not in found]
        if absent:
            raise DatasetLayoutError(
                f"{_NAME}: {len(absent)} image(s) of '{annos.name}' are not under '{images}' "
                f"(first: {', '.join(absent[:5])}). Fix: extract every image, keeping the layout:\n{LAYOUT}"
            )
        part[PATH_COLUMN] = part["fname"].map(found)
        part["test"] = test
        parts.append(part)
    names_csv = folder / "names.csv"
    names = None
    if names_csv.is_file():
        names = [line.strip() for line in names_csv.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.concat(parts, ignore_index=True), names
