"""Converters from the original layout of OML's four benchmark datasets to omlcore's (OML's) dataset CSV.

>>> from omlcore.datasets.converters import convert
>>> convert("cub", "data/CUB_200_2011")  # writes data/CUB_200_2011/df.csv  # doctest: +SKIP

Each dataset also has a function returning the table: :func:`build_cub_df`, :func:`build_cars_df`,
:func:`build_sop_df`, :func:`build_inshop_df` (see each for its options and its expected layout).
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from omlcore.datasets.converters._common import DatasetLayoutError
from omlcore.datasets.converters.cars import build_cars_df
from omlcore.datasets.converters.cub import build_cub_df
from omlcore.datasets.converters.inshop import build_inshop_df
from omlcore.datasets.converters.sop import build_sop_df
from omlcore.datasets.csv_format import CheckImages, validate_dataframe
from omlcore.keys import PATH_COLUMN

__all__ = [
    "CONVERTERS",
    "DatasetLayoutError",
    "build_cars_df",
    "build_cub_df",
    "build_inshop_df",
    "build_sop_df",
    "convert",
]

#: Dataset name -> the function that builds its table from the original layout (paths relative to the root).
CONVERTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "cub": build_cub_df,
    "cars": build_cars_df,
    "sop": build_sop_df,
    "inshop": build_inshop_df,
}


def convert(
    dataset_name: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str] | None = None,
    *,
    check_images: CheckImages = "exists",
    **options: Any,
) -> Path:
    """Convert the dataset in ``src`` (its original layout) and write its CSV; returns the CSV's path.

    Args:
        dataset_name: ``"cub"``, ``"cars"``, ``"sop"`` or ``"inshop"`` (see :data:`CONVERTERS`).
        src: the dataset folder as downloaded and extracted.
        dst: the CSV to write; default ``<src>/df.csv``. Paths in it are relative to ``src`` when the CSV lies
            in ``src`` (so that the folder can move), absolute otherwise.
        check_images: how much of the image files to check before writing (see
            :func:`~omlcore.datasets.validate_dataframe`); ``"decode"`` also checks that bboxes fit their image.
        options: the converter's options, e.g. ``bboxes=False`` or ``split="files"``.

    The table is validated before anything is written; the file is replaced atomically.
    """
    converter = CONVERTERS.get(dataset_name)
    if converter is None:
        close = difflib.get_close_matches(str(dataset_name), CONVERTERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"No converter for {dataset_name!r}.{hint} Converters: {', '.join(CONVERTERS)}.")
    root = Path(src).expanduser().absolute()
    target = Path(dst).expanduser().absolute() if dst is not None else root / "df.csv"
    df = converter(root, **options)
    validate_dataframe(df, root, check_images=check_images)
    if target.parent != root:
        df[PATH_COLUMN] = [str(root / path) for path in df[PATH_COLUMN]]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, suffix=".partial", delete=False, encoding="utf-8") as out:
        partial = Path(out.name)
        try:
            df.to_csv(out, index=False)
        except BaseException:
            out.close()
            partial.unlink()
            raise
    partial.replace(target)
    return target
