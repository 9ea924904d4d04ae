"""OML's CSV data contract, checked in one pass that reports every violation at once.

One row per image. Required columns:

- ``label`` (int): the identity / class of the image;
- ``path``: the image file, relative to ``dataset_root`` or absolute;
- ``split``: ``train`` or ``validation``;
- ``is_query``, ``is_gallery`` (booleans): the role of a validation row (a row may be both); empty or
  False on train rows.

Optional: ``category`` (each label belongs to exactly one category), ``sequence`` (items of one sequence,
e.g. frames of one video, are never retrieved for each other) and a bounding box ``x_1, x_2, y_1, y_2``
in pixels (``x_1 < x_2``, ``y_1 < y_2``; all four empty means the whole image).

>>> df = read_dataset_csv("dataset/df.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from omlcore.errors import DataValidationError
from omlcore.keys import (
    BBOX_COLUMNS,
    CATEGORY_COLUMN,
    IS_GALLERY_COLUMN,
    IS_QUERY_COLUMN,
    LABEL_COLUMN,
    OPTIONAL_COLUMNS,
    PATH_COLUMN,
    REQUIRED_COLUMNS,
    SEQUENCE_COLUMN,
    SPLIT_COLUMN,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
)

__all__ = ["CHECK_IMAGES_MODES", "MAX_REPORTED_ROWS", "CheckImages", "read_dataset_csv", "validate_dataframe"]

CheckImages = Literal["none", "exists", "decode"]
CHECK_IMAGES_MODES: tuple[str, ...] = ("none", "exists", "decode")
#: How many offending rows each problem lists.
MAX_REPORTED_ROWS = 5

_TRUE_TEXT = ("true", "1", "1.0")
_FALSE_TEXT = ("false", "0", "0.0")
_TRUE_VALUES = (True, "True", *_TRUE_TEXT)  # True also matches 1 and 1.0
_FALSE_VALUES = (False, "False", *_FALSE_TEXT)
_ABSOLUTE_PATH_PATTERN = r"(?:[A-Za-z]:)?[\\/]" if os.name == "nt" else r"/"
_BBOX_NAMES = ", ".join(f"'{column}'" for column in BBOX_COLUMNS)


def _show(value: Any) -> str:
    """A cell as a person reads it: ``'val'``, ``1.5``, or ``<empty>``."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "<empty>"
    if isinstance(value, str) and not value.strip():
        return "<empty>" if not value else repr(value)
    return repr(value)


class _Report:
    """Collects violations; names rows by index label (plus the CSV line when the frame came from a file)."""

    def __init__(self, frame: pd.DataFrame, source: Path | None) -> None:
        self.index = frame.index
        self.source = source
        self.problems: list[str] = []

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def rows(self, mask: pd.Series | np.ndarray, describe: Callable[[int], str] | None = None) -> str:
        """``"rows 3 ('val'), 7 ('test')"`` for the first rows where ``mask`` is True, values by ``describe``."""
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        shown = []
        for position in positions[:MAX_REPORTED_ROWS]:
            label = self.index[position]
            details = []
            if self.source is not None and isinstance(label, (int, np.integer)):
                details.append(f"line {int(label) + 2}")
            if describe is not None:
                details.append(describe(int(position)))
            shown.append(f"{label} ({', '.join(details)})" if details else str(label))
        more = f", and {len(positions) - MAX_REPORTED_ROWS} more" if len(positions) > MAX_REPORTED_ROWS else ""
        return f"{'row' if len(positions) == 1 else 'rows'} {', '.join(shown)}{more}"

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        what = f"Dataset CSV '{self.source}'" if self.source is not None else "The dataframe"
        count = len(self.problems)
        header = f"{what} violates the dataset format ({count} problem{'s' if count > 1 else ''}):"
        raise DataValidationError("\n- ".join([header, *self.problems]))


def _values(series: pd.Series) -> Callable[[int], str]:
    return lambda position: _show(series.iloc[position])


def _blank(series: pd.Series) -> pd.Series:
    """Missing values and empty / whitespace-only strings."""
    blank = series.isna()
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return blank
    blank |= series == ""
    rest = ~blank
    with contextlib.suppress(AttributeError):  # AttributeError: an object column without any string
        blank[rest] = (series[rest].str.strip() == "").to_numpy(dtype=bool)
    return blank


def _parse_labels(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(labels as float64, bad)``: bad marks values that are not integers (text, fractions, empty, inf)."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype("float64"), pd.Series(True, index=column.index)
    numeric = pd.to_numeric(column, errors="coerce").astype("float64")
    finite = np.isfinite(numeric)
    bad = ~finite | (numeric != np.round(numeric.where(finite, 0.0)))
    return numeric, bad


def _parse_flags(column: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``(values, missing, bad)`` of a boolean column: True/False, true/false (any case), 1/0, as text or numbers."""
    if pd.api.types.is_bool_dtype(column):
        missing = column.isna()
        return column.fillna(False).astype(bool), missing, pd.Series(False, index=column.index)
    if pd.api.types.is_numeric_dtype(column):
        missing, true, false = column.isna(), column == 1, column == 0
    else:  # exact spellings first (cheap), then the few other values are stripped and lower-cased
        missing, true, false = column.isna() | (column == ""), column.isin(_TRUE_VALUES), column.isin(_FALSE_VALUES)
        other = ~missing & ~true & ~false
        if other.any():
            text = column[other].astype(str).str.strip().str.lower()
            missing[other] = (text == "").to_numpy()
            true[other] = text.isin(_TRUE_TEXT).to_numpy()
            false[other] = text.isin(_FALSE_TEXT).to_numpy()
    return true.astype(bool), missing, ~missing & ~true & ~false


def _resolve_paths(column: pd.Series, root: Path) -> tuple[pd.Series, pd.Series]:
    """``(absolute path strings, empty)``: relative paths are joined to ``root``; empty paths stay empty."""
    empty = _blank(column)
    text = column.where(~empty, "").astype(str)
    is_absolute = text.str.match(_ABSOLUTE_PATH_PATTERN)
    prefix = str(root).rstrip("\\/") + os.sep
    resolved = text.where(is_absolute | empty, prefix + text)
    return resolved.astype(object), empty


def _decode(path: str) -> tuple[int, int] | str:
    """The ``(width, height)`` of a fully decoded image, or Pillow's error message."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            return image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


def _root_description(root: Path, given: bool) -> str:
    where = f"dataset_root '{root}'" if given else f"the current working directory '{root}' (no dataset_root given)"
    return where if root.is_dir() else f"{where}, which is not an existing folder"


def _check_columns(df: pd.DataFrame, report: _Report) -> None:
    duplicated = sorted({str(column) for column in df.columns[df.columns.duplicated()]})
    if duplicated:
        report.add(
            f"Column(s) {', '.join(map(repr, duplicated))} appear more than once. Fix: keep one column of each name."
        )
        report.raise_if_any()
    missing = [column for column in REQUIRED_COLUMNS if column not in df.columns]
    if missing:
        present = ", ".join(repr(str(column)) for column in df.columns) or "(none)"
        near = {
            column: str(other)
            for column in missing
            for other in df.columns
            if str(other).strip().lower() == column and str(other) != column
        }
        hint = "".join(f" Column {other!r} looks like {column!r}: rename it." for column, other in near.items())
        report.add(
            f"Missing required column(s) {', '.join(map(repr, missing))}. Columns present: {present}.{hint} "
            f"Fix: the dataset needs the columns {', '.join(REQUIRED_COLUMNS)} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS)})."
        )
    if df.empty:
        report.add("The dataset has no rows. Fix: add one row per image (or check that the right file was read).")
        report.raise_if_any()


def _check_split(df: pd.DataFrame, report: _Report) -> tuple[pd.Series, pd.Series]:
    """``(is_train, is_validation)`` masks; unknown values are reported."""
    split = df[SPLIT_COLUMN]
    is_train, is_validation = split == SPLIT_TRAIN, split == SPLIT_VALIDATION
    unknown = ~(is_train | is_validation)
    if unknown.any():
        report.add(
            f"Column '{SPLIT_COLUMN}': {int(unknown.sum())} row(s) have an unknown value "
            f"({report.rows(unknown, _values(split))}). Allowed: '{SPLIT_TRAIN}', '{SPLIT_VALIDATION}' "
            "(exact spelling, lower case). Fix: use 'train' for training rows and 'validation' for rows "
            "used as queries / gallery in evaluation (there is no separate 'test' split)."
        )
    return is_train.astype(bool), is_validation.astype(bool)


def _check_flags(
    df: pd.DataFrame, out: pd.DataFrame, report: _Report, is_train: pd.Series, is_validation: pd.Series
) -> dict[str, pd.Series | None]:
    """Check ``is_query`` / ``is_gallery``; returns their parsed values (None where the column is unusable)."""
    parsed: dict[str, pd.Series | None] = {}
    for column in (IS_QUERY_COLUMN, IS_GALLERY_COLUMN):
        if column not in df.columns:
            parsed[column] = None
            continue
        values, missing, bad = _parse_flags(df[column])
        bad = bad | (missing & is_validation)
        if bad.any():
            report.add(
                f"Column '{column}': {int(bad.sum())} row(s) have a value that is not a boolean "
                f"({report.rows(bad, _values(df[column]))}). Accepted: True/False, true/false, 1/0; the value may "
                f"be empty only on train rows. Fix: set {column} to True or False on every validation row."
            )
        on_train = values & is_train
        if on_train.any():
            report.add(
                f"Column '{column}': {int(on_train.sum())} train row(s) have {column}=True "
                f"({report.rows(on_train, _values(df[column]))}). Query / gallery flags only apply to validation "
                f"rows. Fix: set {column} to False (or leave it empty) on train rows, or set split to "
                "'validation' if these rows are meant for evaluation."
            )
        out[column] = (values & ~is_train).astype(bool)
        parsed[column] = None if bad.any() else values
    query, gallery = parsed[IS_QUERY_COLUMN], parsed[IS_GALLERY_COLUMN]
    if query is not None and gallery is not None:
        idle = is_validation & ~query & ~gallery
        if idle.any():
            report.add(
                f"Columns '{IS_QUERY_COLUMN}' and '{IS_GALLERY_COLUMN}': {int(idle.sum())} validation row(s) are "
                f"neither query nor gallery ({report.rows(idle)}), so they would never be used. Fix: set is_query "
                "and/or is_gallery to True, set split to 'train', or remove the row(s)."
            )
    return parsed


def _check_lone_queries(
    labels: pd.Series, query: pd.Series, gallery: pd.Series, is_validation: pd.Series, report: _Report
) -> None:
    """Report queries whose label has no gallery item except the query itself."""
    queries = is_validation & query
    galleries = is_validation & gallery
    gallery_per_label = labels[galleries].value_counts()
    others = labels[queries].map(gallery_per_label).fillna(0) - galleries[queries].astype(int)
    lone = pd.Series(False, index=labels.index)
    lone[queries] = (others <= 0).to_numpy()
    if lone.any():
        report.add(
            f"Column '{IS_QUERY_COLUMN}': {int(lone.sum())} query row(s) have no gallery item with the same label "
            f"other than themselves ({report.rows(lone, lambda p: f'label {int(labels.iloc[p])}')}). A query is "
            "never matched with itself, so these queries have no correct answer. Fix: add gallery rows with these "
            "labels, set is_query=False on these rows, or pass allow_lone_queries=True to keep them."
        )


def _check_categories(category: pd.Series, empty: pd.Series, labels: pd.Series | None, report: _Report) -> None:
    """Report rows without a category (``empty``) and labels that appear in several categories."""
    if empty.any():
        report.add(
            f"Column '{CATEGORY_COLUMN}': {int(empty.sum())} row(s) have no category ({report.rows(empty)}). "
            "Fix: give every row a category, or remove the column."
        )
    if labels is None:
        return
    named = pd.DataFrame({"label": labels[~empty], "category": category[~empty].astype(str)})
    counts = named.groupby("label")["category"].nunique()
    mixed = counts.index[counts > 1]
    if len(mixed):
        affected = labels.isin(mixed) & ~empty
        per_label = named[named["label"].isin(mixed[:MAX_REPORTED_ROWS])].groupby("label")["category"].unique()
        listing = "; ".join(
            f"label {int(label)}: {', '.join(map(repr, sorted(names)))}" for label, names in per_label.items()
        )
        report.add(
            f"Column '{CATEGORY_COLUMN}': {len(mixed)} label(s) appear in more than one category ({listing}), in "
            f"{report.rows(affected, _values(category))}. A label is one identity and belongs to exactly one "
            "category. Fix: correct the category of these rows, or give the items of different categories "
            "different labels."
        )


def _bbox_text(numeric: pd.DataFrame, raw: pd.DataFrame, position: int) -> str:
    """``"x_1=1, x_2=<empty>, ..."``: numbers from ``numeric``, anything else as written in ``raw``."""
    shown = []
    for column in BBOX_COLUMNS:
        value = numeric[column].iloc[position]
        shown.append(f"{column}={value:g}" if np.isfinite(value) else f"{column}={_show(raw[column].iloc[position])}")
    return ", ".join(shown)


def _check_bboxes(df: pd.DataFrame, out: pd.DataFrame, report: _Report) -> pd.Series | None:
    """Check the bbox columns; returns the mask of rows with a complete, valid bbox (None: no bbox columns)."""
    present = [column for column in BBOX_COLUMNS if column in df.columns]
    if not present:
        return None
    if len(present) < len(BBOX_COLUMNS):
        absent = [column for column in BBOX_COLUMNS if column not in df.columns]
        report.add(
            f"Columns {', '.join(map(repr, present))}: a bbox needs all of {_BBOX_NAMES}, but "
            f"{', '.join(map(repr, absent))} {'is' if len(absent) == 1 else 'are'} missing. "
            "Fix: add the missing column(s), or remove the bbox columns to use whole images."
        )
        return None
    numeric = pd.DataFrame({column: pd.to_numeric(df[column], errors="coerce") for column in BBOX_COLUMNS})
    numeric = numeric.astype("float64")
    empty = numeric.isna()
    for column in BBOX_COLUMNS:  # only non-numbers can be blank
        empty.loc[empty[column], column] = _blank(df.loc[empty[column], column]).to_numpy()
    for column in BBOX_COLUMNS:
        bad = ~empty[column] & ~np.isfinite(numeric[column])
        if bad.any():
            report.add(
                f"Column '{column}': {int(bad.sum())} row(s) have a value that is not a number "
                f"({report.rows(bad, _values(df[column]))}). Fix: bbox coordinates are pixel numbers; leave all "
                "four empty to use the whole image."
            )
    for column in BBOX_COLUMNS:
        out[column] = numeric[column]

    def describe(position: int) -> str:
        return _bbox_text(numeric, df, position)

    filled = (~empty).sum(axis=1)
    partial = (filled > 0) & (filled < len(BBOX_COLUMNS))
    if partial.any():
        report.add(
            f"Columns {_BBOX_NAMES}: {int(partial.sum())} row(s) have a partly filled bbox "
            f"({report.rows(partial, describe)}). Fix: fill all four bbox values, or leave all four empty to use "
            "the whole image."
        )
    complete = np.isfinite(numeric).all(axis=1)
    x_1, x_2, y_1, y_2 = (numeric[column] for column in BBOX_COLUMNS)
    inverted = complete & ((x_1 >= x_2) | (y_1 >= y_2))
    if inverted.any():
        report.add(
            f"Columns {_BBOX_NAMES}: {int(inverted.sum())} row(s) have an empty or inverted bbox, x_1 >= x_2 or "
            f"y_1 >= y_2 ({report.rows(inverted, describe)}). Fix: x_1 < x_2 are the left and right edges and "
            "y_1 < y_2 the top and bottom edges, in pixels; swap or correct them."
        )
    negative = complete & (numeric < 0).any(axis=1)
    if negative.any():
        report.add(
            f"Columns {_BBOX_NAMES}: {int(negative.sum())} row(s) have negative bbox coordinates "
            f"({report.rows(negative, describe)}). Fix: coordinates are pixels from the top-left corner, 0 or more."
        )
    return complete & ~inverted & ~negative


def _check_files(
    out: pd.DataFrame,
    empty_path: pd.Series,
    check_images: str,
    root_description: str,
    valid_bbox: pd.Series | None,
    report: _Report,
) -> None:
    """Check that every path is a file and, with ``check_images="decode"``, that Pillow decodes it."""
    paths = out[PATH_COLUMN]
    candidates = paths[~empty_path]
    unique = pd.unique(candidates)
    existing = [path for path in unique if os.path.isfile(path)]
    missing = ~empty_path & ~paths.isin(existing)
    if missing.any():
        report.add(
            f"Column '{PATH_COLUMN}': {int(missing.sum())} row(s) point to a file that does not exist "
            f"({report.rows(missing, _values(paths))}). Relative paths were resolved against {root_description}. "
            "Fix: correct the paths, or pass the dataset_root the paths are relative to."
        )
    if check_images != "decode":
        return
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4)) as pool:
        decoded = dict(zip(existing, pool.map(_decode, existing), strict=True))
    errors = {path: result for path, result in decoded.items() if isinstance(result, str)}
    unreadable = paths.isin(list(errors))
    if unreadable.any():
        report.add(
            f"Column '{PATH_COLUMN}': {int(unreadable.sum())} row(s) point to a file Pillow cannot decode as an image "
            f"({report.rows(unreadable, lambda p: f'{paths.iloc[p]!r}: {errors[paths.iloc[p]]}')}). "
            "Fix: replace or re-export the file(s), or remove the row(s)."
        )
    if valid_bbox is None:
        return
    sizes = {path: result for path, result in decoded.items() if not isinstance(result, str)}
    width = paths.map({path: size[0] for path, size in sizes.items()}).astype("float64")
    height = paths.map({path: size[1] for path, size in sizes.items()}).astype("float64")
    outside = valid_bbox & width.notna() & ((out[BBOX_COLUMNS[1]] > width) | (out[BBOX_COLUMNS[3]] > height))
    if outside.any():

        def describe(position: int) -> str:
            box = _bbox_text(out, out, position)
            return f"{box} in {paths.iloc[position]!r} of size {int(width.iloc[position])}x{int(height.iloc[position])}"

        report.add(
            f"Columns {_BBOX_NAMES}: {int(outside.sum())} row(s) have a bbox that extends beyond the image "
            f"(width x height) ({report.rows(outside, describe)}). Fix: clip the bbox to the image (x_2 <= width, "
            "y_2 <= height) or correct it."
        )


def validate_dataframe(
    df: pd.DataFrame,
    dataset_root: str | os.PathLike[str] | None = None,
    *,
    check_images: CheckImages = "exists",
    allow_lone_queries: bool = False,
    source: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Check ``df`` against the data contract and return a normalised copy (same rows, same index).

    The copy has ``label`` as int64, ``is_query`` / ``is_gallery`` as bool (False on train rows), ``path`` as
    absolute path strings, the bbox columns as float (NaN: no bbox), ``split``, ``category`` and ``sequence``
    as given (empty strings there become missing values). No row is ever dropped.

    Args:
        df: one row per image.
        dataset_root: the folder relative paths start from; None means the current working directory.
        check_images: ``"none"``, ``"exists"`` (every path is a file) or ``"decode"`` (Pillow fully decodes every
            file; bboxes must then also lie inside their image).
        allow_lone_queries: accept queries whose label has no gallery item other than the query itself.
        source: the CSV file ``df`` was read from; rows are then also named by CSV line (index + 2).

    Raises:
        DataValidationError: listing every violation, each with its column, the first offending rows
            (up to :data:`MAX_REPORTED_ROWS`) with their values, and the fix.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_dataframe expects a pandas DataFrame, got {type(df).__name__}")
    if check_images not in CHECK_IMAGES_MODES:
        raise ValueError(
            f"check_images must be one of {', '.join(map(repr, CHECK_IMAGES_MODES))}, got {check_images!r}"
        )
    report = _Report(df, Path(source) if source is not None else None)
    _check_columns(df, report)
    root = Path(dataset_root).expanduser().absolute() if dataset_root is not None else Path.cwd()
    out = df.copy()

    labels: pd.Series | None = None
    if LABEL_COLUMN in df.columns:
        numeric, bad = _parse_labels(df[LABEL_COLUMN])
        if bad.any():
            report.add(
                f"Column '{LABEL_COLUMN}': {int(bad.sum())} row(s) have a value that is not an integer "
                f"({report.rows(bad, _values(df[LABEL_COLUMN]))}). Fix: every row needs an integer label "
                "(rows with the same label show the same identity / class)."
            )
        else:
            labels = numeric.astype("int64")
            out[LABEL_COLUMN] = labels

    empty_path: pd.Series | None = None
    if PATH_COLUMN in df.columns:
        out[PATH_COLUMN], empty_path = _resolve_paths(df[PATH_COLUMN], root)
        if empty_path.any():
            report.add(
                f"Column '{PATH_COLUMN}': {int(empty_path.sum())} row(s) have an empty path "
                f"({report.rows(empty_path)}). Fix: give every row the path of its image file (relative to "
                "dataset_root, or absolute), or remove the row(s)."
            )

    if SPLIT_COLUMN in df.columns:
        is_train, is_validation = _check_split(df, report)
        parsed = _check_flags(df, out, report, is_train, is_validation)
        query, gallery = parsed[IS_QUERY_COLUMN], parsed[IS_GALLERY_COLUMN]
        if labels is not None and query is not None and gallery is not None and not allow_lone_queries:
            _check_lone_queries(labels, query, gallery, is_validation, report)

    if CATEGORY_COLUMN in df.columns:
        no_category = _blank(df[CATEGORY_COLUMN])
        out[CATEGORY_COLUMN] = df[CATEGORY_COLUMN].where(~no_category)
        _check_categories(df[CATEGORY_COLUMN], no_category, labels, report)
    if SEQUENCE_COLUMN in df.columns:
        out[SEQUENCE_COLUMN] = df[SEQUENCE_COLUMN].where(~_blank(df[SEQUENCE_COLUMN]))
    valid_bbox = _check_bboxes(df, out, report)

    if empty_path is not None and check_images != "none":
        _check_files(
            out, empty_path, check_images, _root_description(root, dataset_root is not None), valid_bbox, report
        )
    report.raise_if_any()
    return out


def read_dataset_csv(
    path: str | os.PathLike[str],
    dataset_root: str | os.PathLike[str] | None = None,
    *,
    check_images: CheckImages = "exists",
    allow_lone_queries: bool = False,
) -> pd.DataFrame:
    """Read a dataset CSV and validate it (see :func:`validate_dataframe`, whose normalised copy it returns).

    Every cell is read as text (so a path such as ``0001`` or a category ``007`` stays as written); an empty
    cell is a missing value. ``dataset_root`` defaults to the CSV's folder. Errors name rows by
    dataframe index and CSV line.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Dataset CSV '{csv_path}' does not exist (or is not a file)")
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    root = dataset_root if dataset_root is not None else csv_path.parent
    return validate_dataframe(
        df, root, check_images=check_images, allow_lone_queries=allow_lone_queries, source=csv_path
    )
