"""Stanford Online Products (Oh Song et al., 2016; 120,053 images of 22,634 products in 12 categories) to OML's CSV."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from omlcore.datasets.converters._common import find_file, oml_columns, read_table, split_flags
from omlcore.errors import DataValidationError
from omlcore.keys import CATEGORY_COLUMN, LABEL_COLUMN, PATH_COLUMN, SPLIT_COLUMN, SPLIT_TRAIN, SPLIT_VALIDATION

__all__ = ["LAYOUT", "build_sop_df"]

LAYOUT = """\
    Stanford_Online_Products/
    ├── Ebay_train.txt      image_id class_id super_class_id path   (a header line, then one line per image)
    ├── Ebay_test.txt
    ├── bicycle_final/111085122871_0.JPG ...
    ├── cabinet_final/...
    └── ..."""
_NAME = "Stanford Online Products"
_COLUMNS = ["image_id", "class_id", "super_class_id", "path"]


def build_sop_df(root: str | os.PathLike[str]) -> pd.DataFrame:
    """OML's table of SOP (paths relative to ``root``): ``Ebay_train.txt`` train, ``Ebay_test.txt`` validation.

    Every validation image is both query and gallery. ``category`` is the product category of the
    ``super_class_id``, named after its folder without ``_final`` (``bicycle``, ``cabinet``, ...).
    """
    folder = Path(root)
    parts = []
    for name, split in (("Ebay_train.txt", SPLIT_TRAIN), ("Ebay_test.txt", SPLIT_VALIDATION)):
        part = read_table(find_file(folder, (name,), _NAME, LAYOUT), _COLUMNS, header=True)
        part[SPLIT_COLUMN] = split
        parts.append(part)
    df = pd.concat(parts, ignore_index=True)
    df[LABEL_COLUMN] = df["class_id"].astype(int)
    folders = df[PATH_COLUMN].str.split("/").str[0].str.removesuffix("_final")
    names = pd.DataFrame({"super_class_id": df["super_class_id"], "name": folders}).drop_duplicates()
    clashes = names[names["super_class_id"].duplicated(keep=False)]
    if not clashes.empty:
        raise DataValidationError(
            f"{_NAME}: super_class_id {clashes['super_class_id'].iloc[0]} has images in several category folders "
            f"({', '.join(sorted(clashes['name'].unique()))}); are Ebay_train.txt and Ebay_test.txt unmodified?"
        )
    df[CATEGORY_COLUMN] = folders
    df = pd.concat([df, split_flags(df[SPLIT_COLUMN])], axis=1)
    return oml_columns(df.drop(columns=["image_id", "class_id", "super_class_id"]))
