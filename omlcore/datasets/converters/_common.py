"""What the converters share: finding the original files, reading their text tables, shaping OML's columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from omlcore.errors import DataValidationError, OmlcoreError
from omlcore.keys import (
    BBOX_COLUMNS,
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
    "DatasetLayoutError",
    "check_complete",
    "class_split",
    "find_file",
    "find_folder",
    "oml_columns",
    "read_table",
    "split_flags",
]


class DatasetLayoutError(OmlcoreError, FileNotFoundError):
    """The folder given to a converter does not hold the dataset's original files; the message shows the layout."""


def _missing(root: Path, what: str, dataset: str, layout: str) -> DatasetLayoutError:
    where = f"'{root}'" if root.is_dir() else f"'{root}', which is not an existing folder"
    return DatasetLayoutError(
        f"{dataset}: {what} not found in {where}. Fix: point the converter at the folder that holds the "
        f"dataset as it was downloaded and extracted:\n{layout}"
    )


def find_file(root: Path, names: tuple[str, ...], dataset: str, layout: str) -> Path:
    """The first of ``names`` (paths relative to ``root``) that is a file, or an error showing ``layout``."""
    for name in names:
        if (root / name).is_file():
            return root / name
    shown = " or ".join(f"'{name}'" for name in names)
    raise _missing(root, f"file {shown}", dataset, layout)


def find_folder(root: Path, names: tuple[str, ...], dataset: str, layout: str) -> Path:
    """The first of ``names`` that is a folder under ``root``, or an error showing ``layout``."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    shown = " or ".join(f"'{name}/'" for name in names)
    raise _missing(root, f"image folder {shown}", dataset, layout)


def read_table(path: Path, columns: list[str], *, skip_lines: int = 0, header: bool = False) -> pd.DataFrame:
    """A whitespace-separated text table as strings; ``header`` means the first (kept) line names the columns.

    Raises:
        DataValidationError: a line with fewer fields than ``columns``, or a header without them.
    """
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()[skip_lines:]
    rows = [(number, line.split()) for number, line in enumerate(lines, start=skip_lines + 1) if line.strip()]
    names = columns
    if header:
        if not rows or not set(columns) <= set(rows[0][1]):
            found = " ".join(rows[0][1]) if rows else "nothing"
            raise DataValidationError(f"'{path}': expected a header naming {' '.join(columns)}, found {found!r}")
        names = rows[0][1]
        rows = rows[1:]
    short = [number for number, fields in rows if len(fields) < len(names)]
    if short:
        raise DataValidationError(
            f"'{path}': line(s) {', '.join(map(str, short[:5]))} have fewer than {len(names)} fields "
            f"({' '.join(names)}); is it the right file, complete and unmodified?"
        )
    table = pd.DataFrame([fields[: len(names)] for _, fields in rows], columns=names, dtype=str)
    return table[columns]


def split_flags(split: pd.Series, query: pd.Series | None = None, gallery: pd.Series | None = None) -> pd.DataFrame:
    """``is_query`` / ``is_gallery``: empty on train rows, the given flags (default both True) on validation rows."""
    validation = (split == SPLIT_VALIDATION).tolist()
    flags = {}
    for column, values in ((IS_QUERY_COLUMN, query), (IS_GALLERY_COLUMN, gallery)):
        chosen = [True] * len(split) if values is None else values.astype(bool).tolist()
        flags[column] = [flag if row else None for row, flag in zip(validation, chosen, strict=True)]
    return pd.DataFrame(flags, index=split.index)


def oml_columns(df: pd.DataFrame) -> pd.DataFrame:
    """OML's columns first (those present), then the others; a fresh 0..N-1 index."""
    order = [
        LABEL_COLUMN,
        PATH_COLUMN,
        SPLIT_COLUMN,
        IS_QUERY_COLUMN,
        IS_GALLERY_COLUMN,
        CATEGORY_COLUMN,
        *BBOX_COLUMNS,
    ]
    first = [column for column in order if column in df.columns]
    return df[first + [column for column in df.columns if column not in first]].reset_index(drop=True)


def class_split(labels: pd.Series, n_train_classes: int) -> pd.Series:
    """``train`` for class ids ``1 .. n_train_classes``, ``validation`` for the rest (the zero-shot protocol)."""
    return pd.Series(np.where(labels <= n_train_classes, SPLIT_TRAIN, SPLIT_VALIDATION), index=labels.index)


def check_complete(df: pd.DataFrame, column: str, key: str, file: Path, dataset: str) -> None:
    """Every row got a ``column`` value from ``file`` when it was merged on ``key``."""
    missing = df.loc[df[column].isna(), key].astype(str).tolist()
    if missing:
        raise DataValidationError(
            f"{dataset}: '{file}' has no line for {key} {', '.join(missing[:5])} ({len(missing)} in all). "
            "Fix: restore the file from the original archive."
        )
