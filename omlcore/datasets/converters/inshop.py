"""DeepFashion In-shop Clothes Retrieval (Liu et al., 2016; 52,712 images of 7,982 items) to OML's CSV."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import pandas as pd

from omlcore.datasets.converters._common import (
    check_complete,
    find_file,
    find_folder,
    oml_columns,
    read_table,
    split_flags,
)
from omlcore.errors import DataValidationError
from omlcore.keys import CATEGORY_COLUMN, LABEL_COLUMN, PATH_COLUMN, SPLIT_COLUMN, SPLIT_TRAIN, SPLIT_VALIDATION

__all__ = ["LAYOUT", "build_inshop_df"]

LAYOUT = """\
    DeepFashion_InShop/
    ├── list_eval_partition.txt   a count line, a header line, then: <image_name> <item_id> <train|query|gallery>
    ├── list_bbox_inshop.txt      a count line, a header line, then: <image_name> <clothes_type> <pose_type>
    │                             <x_1> <y_1> <x_2> <y_2>   (for bboxes=True; the 256 x 256 images of img/)
    ├── img/WOMEN/Dresses/id_00000002/02_1_front.jpg ...          (img.zip)
    └── img_highres/WOMEN/Dresses/id_00000002/02_1_front.jpg ...  (img_highres.zip; either folder will do)"""
_NAME = "DeepFashion In-shop"
_STATUSES = ("train", "query", "gallery")
_log = logging.getLogger(__name__)


def build_inshop_df(
    root: str | os.PathLike[str],
    *,
    images: Literal["auto", "img", "img_highres"] = "auto",
    bboxes: bool = False,
    drop_single_train_items: bool = True,
) -> pd.DataFrame:
    """OML's table of In-shop (paths relative to ``root``) with the dataset's own train / query / gallery partition.

    Args:
        root: the dataset folder (see :data:`LAYOUT`).
        images: the image folder: ``img_highres`` (what OML trains on) or the 256 x 256 ``img``; ``auto`` takes
            ``img_highres`` when it is there.
        bboxes: add the clothes' bounding boxes. They are given in the pixels of the 256 x 256 images, so they
            need ``images="img"`` (or ``auto`` without ``img_highres``).
        drop_single_train_items: leave out train items with a single image (as OML's converter does): they give
            a metric-learning loss no positive, and :class:`~omlcore.samplers.BalanceSampler` refuses them.

    ``label`` is the number of the ``item_id`` (``id_00000002`` -> 2), ``category`` the clothes type folder
    (``Dresses``, ``Denim``, ...); query and gallery images are ``validation`` rows with ``is_query`` /
    ``is_gallery`` as their partition says.
    """
    folder = Path(root)
    partition_file = find_file(folder, ("list_eval_partition.txt",), _NAME, LAYOUT)
    df = read_table(partition_file, ["image_name", "item_id", "evaluation_status"], skip_lines=1, header=True)
    unknown = sorted(set(df["evaluation_status"]) - set(_STATUSES))
    if unknown:
        raise DataValidationError(
            f"{_NAME}: '{partition_file}' has evaluation_status {unknown[:5]}; expected {', '.join(_STATUSES)}"
        )
    if images == "auto":
        images = "img_highres" if (folder / "img_highres").is_dir() else "img"
    if images not in ("img", "img_highres"):
        raise ValueError(f"images must be 'auto', 'img' or 'img_highres', got {images!r}")
    find_folder(folder, (images,), _NAME, LAYOUT)
    if bboxes and images != "img":
        raise ValueError(
            "In-shop bounding boxes are given in the pixels of the 256 x 256 images in img/, not of img_highres/: "
            "pass images='img' with bboxes=True, or bboxes=False"
        )
    numbers = df["item_id"].str.removeprefix("id_")
    if not numbers.str.fullmatch(r"\d+").all():
        bad = df.loc[~numbers.str.fullmatch(r"\d+"), "item_id"].tolist()
        raise DataValidationError(f"{_NAME}: item ids {bad[:5]} in '{partition_file}' are not of the form id_<number>")
    df[LABEL_COLUMN] = numbers.astype(int)
    df[PATH_COLUMN] = images + "/" + df["image_name"].str.removeprefix("img/")
    df[SPLIT_COLUMN] = df["evaluation_status"].map(
        {"train": SPLIT_TRAIN, "query": SPLIT_VALIDATION, "gallery": SPLIT_VALIDATION}
    )
    status = df["evaluation_status"]
    df = pd.concat([df, split_flags(df[SPLIT_COLUMN], status == "query", status == "gallery")], axis=1)
    df[CATEGORY_COLUMN] = df["image_name"].str.split("/").str[-3]
    if bboxes:
        columns = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
        boxes_file = find_file(folder, ("list_bbox_inshop.txt",), _NAME, LAYOUT)
        boxes = read_table(boxes_file, columns, skip_lines=1, header=True)
        df = df.merge(boxes[["image_name", "x_1", "y_1", "x_2", "y_2"]], on="image_name", how="left", validate="1:1")
        check_complete(df, "x_1", "image_name", boxes_file, _NAME)
        for column in ("x_1", "x_2", "y_1", "y_2"):
            df[column] = df[column].astype(float)
    if drop_single_train_items:
        train = df[SPLIT_COLUMN] == SPLIT_TRAIN
        per_label = df.loc[train, LABEL_COLUMN].value_counts()
        single = train & (df[LABEL_COLUMN].map(per_label) == 1)
        if single.any():
            _log.info("%s: left out %d train item(s) with a single image", _NAME, int(single.sum()))
            df = df[~single]
    return oml_columns(df.drop(columns=["image_name", "item_id", "evaluation_status"]))
