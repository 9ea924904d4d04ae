"""CUB-200-2011 (Wah et al., 2011; 11,788 images of 200 bird species) from its original layout to OML's CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pandas as pd

from omlcore.datasets.converters._common import (
    check_complete,
    class_split,
    find_file,
    find_folder,
    oml_columns,
    read_table,
    split_flags,
)
from omlcore.keys import LABEL_COLUMN, PATH_COLUMN, SPLIT_COLUMN, SPLIT_TRAIN, SPLIT_VALIDATION

__all__ = ["LAYOUT", "N_TRAIN_CLASSES", "build_cub_df"]

#: The first 100 classes train, the other 100 are the validation classes (the metric-learning protocol).
N_TRAIN_CLASSES = 100
LAYOUT = """\
    CUB_200_2011/
    ├── images.txt              <image_id> <image_name>
    ├── image_class_labels.txt  <image_id> <class_id>
    ├── bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (for bboxes=True)
    ├── train_test_split.txt    <image_id> <is_training_image>        (for split="files")
    ├── classes.txt             <class_id> <class_name>               (optional: class_name column)
    └── images/
        ├── 001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg
        └── ..."""
_NAME = "CUB-200-2011"


def build_cub_df(
    root: str | os.PathLike[str], *, bboxes: bool = True, split: Literal["classes", "files"] = "classes"
) -> pd.DataFrame:
    """OML's table of CUB-200-2011 (paths relative to ``root``).

    Args:
        root: the ``CUB_200_2011`` folder (see :data:`LAYOUT`).
        bboxes: add the bird's bounding box (``x_1 = x``, ``x_2 = x + width``, ``y_1 = y``, ``y_2 = y + height``).
        split: ``"classes"``: classes 1-100 train, 101-200 validation (every validation image both query and
            gallery), the protocol metric-learning papers and OML's zoo report; ``"files"``: the dataset's own
            image-level ``train_test_split.txt``, as OML's converter script does (the same classes on both sides).

    Columns: ``label`` (class id 1-200), ``path`` (``images/...``), ``split``, ``is_query``, ``is_gallery``,
    the bbox, and ``class_name`` when ``classes.txt`` is there.
    """
    folder = Path(root)
    images = read_table(find_file(folder, ("images.txt",), _NAME, LAYOUT), ["image_id", "image_name"])
    labels = read_table(find_file(folder, ("image_class_labels.txt",), _NAME, LAYOUT), ["image_id", "class_id"])
    find_folder(folder, ("images",), _NAME, LAYOUT)
    df = images.merge(labels, on="image_id", how="left", validate="one_to_one")
    check_complete(df, "class_id", "image_id", folder / "image_class_labels.txt", _NAME)
    df[LABEL_COLUMN] = df["class_id"].astype(int)
    df[PATH_COLUMN] = "images/" + df["image_name"]
    if split == "classes":
        df[SPLIT_COLUMN] = class_split(df[LABEL_COLUMN], N_TRAIN_CLASSES)
    elif split == "files":
        flags = read_table(
            find_file(folder, ("train_test_split.txt",), _NAME, LAYOUT), ["image_id", "is_training_image"]
        )
        df = df.merge(flags, on="image_id", how="left", validate="one_to_one")
        check_complete(df, "is_training_image", "image_id", folder / "train_test_split.txt", _NAME)
        df[SPLIT_COLUMN] = df["is_training_image"].map({"1": SPLIT_TRAIN, "0": SPLIT_VALIDATION})
    else:
        raise ValueError(f"split must be 'classes' or 'files', got {split!r}")
    df = pd.concat([df, split_flags(df[SPLIT_COLUMN])], axis=1)
    if bboxes:
        boxes = read_table(
            find_file(folder, ("bounding_boxes.txt",), _NAME, LAYOUT), ["image_id", "x", "y", "width", "height"]
        )
        df = df.merge(boxes, on="image_id", how="left", validate="one_to_one")
        check_complete(df, "x", "image_id", folder / "bounding_boxes.txt", _NAME)
        x, y, width, height = (df[column].astype(float) for column in ("x", "y", "width", "height"))
        df["x_1"], df["x_2"], df["y_1"], df["y_2"] = x, x + width, y, y + height
    classes_txt = folder / "classes.txt"
    if classes_txt.is_file():
        classes = read_table(classes_txt, ["class_id", "class_name"])
        df = df.merge(classes, on="class_id", how="left", validate="many_to_one")
    dropped = ["image_id", "image_name", "class_id", "is_training_image", "x", "y", "width", "height"]
    return oml_columns(df.drop(columns=[column for column in dropped if column in df.columns]))
