"""OML's CSV data contract, checked in one pass that reports every violation at once.

One row per image. Required columns:

- ``label`` (int): the identity / class of the image;
- ``path``: the image file, relative to ``dataset_root`` or absolute;
- ``split``: ``train`` or ``validation``;
- ``is_query``, ``is_gallery`` (booleans): the role of a validation row (a row may be both); empty or
  False on train rows.

Optional: ``category`` (normally one per label; a label in several categories is accepted with a warning, as
OML does, and per-category metrics then count each query under its own row's category), ``sequence`` (items of
one sequence, e.g. frames of one video, are never retrieved for each other) and a bounding box ``x_1, x_2, y_1, y_2``
in pixels (``x_1 < x_2``, ``y_1 < y_2``; all four empty means the whole image). The crop rounds the edges to
whole pixels (halves to even), so a bbox must still be at least one pixel wide and high once rounded.

Labels are exact int64 ids:

- integer columns are taken as they are (a uint64 above 2**63 - 1 is out of range);
- text is a decimal integer: an optional sign, ASCII digits (leading zeros allowed: ``007`` is 7) and optionally
  a fraction of zeros (``7.0``, as pandas writes integers in a column with empty cells); spaces around it are
  ignored. Fractions (``7.5``), exponents (``1e3``, often a spreadsheet's rounding of a long id), hex (``0x1F``),
  ``1_000``, booleans and empty cells are rejected, and so are integers outside the int64 range;
- float columns are accepted when every value is a whole number of at most 2**53 in magnitude (beyond that a
  float no longer holds every integer, so distinct ids may already have merged).

An image (its path, after joining it to the root and removing ``./`` and ``//``, and its bbox) is listed once:
the same image under two labels, or twice under one label (in one split or across train and validation), is an
error naming the rows.

>>> df = read_dataset_csv("dataset/df.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import math
import numbers
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from omlcore.datasets.pixels import to_rgb
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
_ABSOLUTE_PATH_PATTERN = r"(?:[A-Za-z]:)?[\\/]"  # on Windows; elsewhere an absolute path starts with "/"
_BBOX_NAMES = ", ".join(f"'{column}'" for column in BBOX_COLUMNS)
_OTHER_SEPARATORS = (";", "\t", "|")
#: How files that are not CSV text start: (first bytes, what they are).
_SIGNATURES = (
    (b"\xff\xfe\x00\x00", "UTF-32 text"),
    (b"\x00\x00\xfe\xff", "UTF-32 text"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"%PDF", "a PDF document"),
)
# Substrings of a path that os.path.normpath may change (elsewhere it leaves the path as it is).
_UNNORMAL_PATH_PARTS = ("/", "\\.", "\\\\") if os.name == "nt" else ("/.", "//")
#: How many labels, how many categories of each, and how many characters of a category name the message about
#: labels in several categories shows (it stays a few hundred characters long for any dataset).
_SHOWN_LABELS, _SHOWN_CATEGORIES, _SHOWN_CHARS = 3, 2, 20

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Beyond this magnitude a float64 no longer holds every integer.
_FLOAT_EXACT = 2**53
#: A label written as text, once the spaces around it are stripped.
_LABEL_TEXT = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
#: Text of at most this many characters (digits and a sign) always fits an int64.
_SHORT_INTEGER = 18
# Why a label cell is rejected (0: accepted).
_NOT_INTEGER, _OUT_OF_RANGE, _INEXACT_FLOAT = 1, 2, 3


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

    @property
    def what(self) -> str:
        return f"Dataset CSV '{self.source}'" if self.source is not None else "The dataframe"

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        count = len(self.problems)
        header = f"{self.what} violates the dataset format ({count} problem{'s' if count > 1 else ''}):"
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
        blank[rest] = series[rest].str.isspace().fillna(False).to_numpy(dtype=bool)
    return blank


def _label_of(value: object) -> tuple[int, int]:
    """``(label, 0)`` for a cell the label rule accepts, ``(0, reason)`` otherwise (see the module docstring)."""
    if isinstance(value, (bool, np.bool_)):
        return 0, _NOT_INTEGER
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if not (math.isfinite(value) and float(value).is_integer()):
            return 0, _NOT_INTEGER
        if abs(value) > _FLOAT_EXACT:
            return 0, _INEXACT_FLOAT
        number = int(value)
    elif isinstance(value, str) and _LABEL_TEXT.fullmatch(value.strip()):
        number = int(value.strip().split(".")[0])
    else:
        return 0, _NOT_INTEGER
    return (number, 0) if _INT64_MIN <= number <= _INT64_MAX else (0, _OUT_OF_RANGE)


def _parse_short_integers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(parsed, values)``: the text cells that are plain short integers (ASCII digits after an optional ``-``, at
    most :data:`_SHORT_INTEGER` characters), parsed with array operations, one per character position."""
    parsed = np.zeros(len(column), dtype=bool)
    values = np.zeros(len(column), dtype=np.int64)
    if pd.api.types.infer_dtype(column, skipna=True) != "string":
        return parsed, values
    all_lengths = column.str.len().to_numpy(dtype=np.float64, na_value=np.nan)
    short = np.flatnonzero((all_lengths >= 1) & (all_lengths <= _SHORT_INTEGER))
    if not len(short):
        return parsed, values
    text = column.to_numpy(dtype=object)[short].astype(str)
    codes = text.view(np.uint32).reshape(len(text), -1)
    lengths = all_lengths[short].astype(np.int64)
    minus = codes[:, 0] == ord("-")
    plain = (lengths > minus) & ((codes != 0).sum(axis=1) == lengths)  # a digit, no NUL character (numpy drops them)
    number = np.zeros(len(text), dtype=np.int64)
    for position in range(codes.shape[1]):
        code = codes[:, position].astype(np.int64)
        inside = position < lengths
        digit = (code >= ord("0")) & (code <= ord("9"))
        plain &= ~inside | digit | ((position == 0) & minus)
        number = np.where(inside & digit, number * 10 + (code - ord("0")), number)
    parsed[short] = plain
    values[short[plain]] = np.where(minus, -number, number)[plain]
    return parsed, values


def _parse_labels(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(int64 labels, reasons)`` by the label rule of the module docstring; ``reasons`` is 0 where accepted."""
    size = len(column)
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.zeros(size, dtype=np.int64), np.full(size, _NOT_INTEGER, dtype=np.int8)
    if pd.api.types.is_integer_dtype(column.dtype) and not column.hasnans:
        integers = column.to_numpy()
        reasons = np.zeros(size, dtype=np.int8)
        if integers.dtype == np.uint64:
            reasons[integers > _INT64_MAX] = _OUT_OF_RANGE
        return np.where(reasons == 0, integers, 0).astype(np.int64), reasons
    if pd.api.types.is_float_dtype(column.dtype):
        floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(floats) & (floats == np.trunc(floats))
        reasons = np.where(whole, np.where(np.abs(floats) > _FLOAT_EXACT, _INEXACT_FLOAT, 0), _NOT_INTEGER)
        return np.where(reasons == 0, floats, 0).astype(np.int64), reasons.astype(np.int8)
    parsed, labels = _parse_short_integers(column)
    reasons = np.zeros(size, dtype=np.int8)
    cells = column.to_numpy(dtype=object)
    for position in np.flatnonzero(~parsed):  # text the fast path leaves (rare), and mixed-type columns
        labels[position], reasons[position] = _label_of(cells[position])
    return labels, reasons


def _check_labels(column: pd.Series, report: _Report) -> pd.Series | None:
    """The labels as int64 (None when some are rejected, each kind of rejection reported)."""
    labels, reasons = _parse_labels(column)
    shown = _values(column)
    not_integer, out_of_range, inexact = (reasons == reason for reason in (_NOT_INTEGER, _OUT_OF_RANGE, _INEXACT_FLOAT))
    if not_integer.any():
        report.add(
            f"Column '{LABEL_COLUMN}': {int(not_integer.sum())} row(s) have a value that is not an integer "
            f"({report.rows(not_integer, shown)}). Accepted: a decimal integer such as 7, -3 or 007, also written "
            "7.0 (spaces around it are ignored); not fractions, exponents (1e3), hex (0x1F), booleans or empty "
            "cells. Fix: every row needs an integer label (rows with the same label show the same identity / class)."
        )
    if out_of_range.any():
        report.add(
            f"Column '{LABEL_COLUMN}': {int(out_of_range.sum())} row(s) have an integer outside the int64 range "
            f"{_INT64_MIN} .. {_INT64_MAX} ({report.rows(out_of_range, shown)}). Fix: map the ids to smaller "
            "integers, one per identity (e.g. with pandas.factorize)."
        )
    if inexact.any():
        report.add(
            f"Column '{LABEL_COLUMN}': {int(inexact.sum())} row(s) have a float label beyond 2**53 = {_FLOAT_EXACT} "
            f"({report.rows(inexact, shown)}), where a float no longer holds every integer, so distinct ids may "
            "already have merged (2**53 + 1 reads as 2**53). Fix: keep the labels as integers (int64) or text "
            "from where they are read, never as floats."
        )
    return None if reasons.any() else pd.Series(labels, index=column.index)


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
    is_absolute = text.str.startswith("/") if os.name != "nt" else text.str.match(_ABSOLUTE_PATH_PATTERN)
    prefix = str(root).rstrip("\\/") + os.sep
    resolved = text.where(is_absolute | empty, prefix + text)
    return resolved.astype(object), empty


def _decode(path: str) -> tuple[int, int] | str:
    """The ``(width, height)`` of an image that decodes and converts to RGB (:func:`to_rgb`), or why it does not."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            to_rgb(image)
            return image.size
    except DataValidationError as error:
        return str(error)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


def _root_description(root: Path, given: bool) -> str:
    where = f"dataset_root '{root}'" if given else f"the current working directory '{root}' (no dataset_root given)"
    return where if root.is_dir() else f"{where}, which is not an existing folder"


def _check_unique_columns(names: pd.Index, report: _Report) -> None:
    """Stop at column names that appear more than once (which of them holds the data is anyone's guess)."""
    duplicated = sorted({str(column) for column in names[names.duplicated()]})
    if duplicated:
        report.add(
            f"Column(s) {', '.join(map(repr, duplicated))} appear more than once. Fix: keep one column of each name."
        )
        report.raise_if_any()


def _check_columns(df: pd.DataFrame, report: _Report) -> None:
    _check_unique_columns(df.columns, report)
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
        hint += "".join(
            f" The header {str(df.columns[0])!r} holds {separator!r}: the values seem to be separated by "
            f"{separator!r}, not ','. Fix: save the file with ',' as the separator."
            for separator in _OTHER_SEPARATORS
            if len(df.columns) == 1 and separator in str(df.columns[0])
        )
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


def _mixed_categories(labels: np.ndarray | pd.Series, categories: np.ndarray | pd.Series) -> str | None:
    """``"2 label(s) appear in more than one category (label 0: 'bags', 'shoes'; label 3: 'caps', 'hats')"``.

    Items are given by their ``labels`` and (non-missing) ``categories``, compared as text; the message shows a
    count and the first few labels, so it stays short for any number of them. None when each label has one category.
    """
    pairs = pd.DataFrame({"label": np.asarray(labels), "category": np.asarray(categories).astype(str)})
    pairs = pairs.drop_duplicates().sort_values(["label", "category"])
    counts = pairs.groupby("label", sort=False).size()
    mixed = counts.index[counts.to_numpy() > 1]
    if not len(mixed):
        return None

    def clip(text: str) -> str:
        return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 3]}..."

    def listing(label: Any) -> str:
        names = pairs.loc[pairs["label"] == label, "category"].tolist()
        more = f" and {len(names) - _SHOWN_CATEGORIES} more" if len(names) > _SHOWN_CATEGORIES else ""
        return f"label {_show(label)}: {', '.join(clip(_show(name)) for name in names[:_SHOWN_CATEGORIES])}{more}"

    more = f"; and {len(mixed) - _SHOWN_LABELS} more" if len(mixed) > _SHOWN_LABELS else ""
    shown = "; ".join(listing(label) for label in mixed[:_SHOWN_LABELS])
    return f"{len(mixed)} label(s) appear in more than one category ({shown}{more})"


def _check_categories(category: pd.Series, empty: pd.Series, labels: pd.Series | None, report: _Report) -> str | None:
    """Report rows without a category (``empty``); return :func:`_mixed_categories` of the other rows."""
    if empty.any():
        report.add(
            f"Column '{CATEGORY_COLUMN}': {int(empty.sum())} row(s) have no category ({report.rows(empty)}). "
            "Fix: give every row a category, or remove the column."
        )
    if labels is None:
        return None
    return _mixed_categories(labels[~empty], category[~empty])


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
    empty = pd.DataFrame({column: _blank(df[column]) for column in BBOX_COLUMNS})
    numeric = pd.DataFrame(np.nan, index=df.index, columns=list(BBOX_COLUMNS))
    for column in BBOX_COLUMNS:  # blank cells stay NaN; pandas parses the others (non-numbers become NaN)
        filled = ~empty[column]
        numeric.loc[filled, column] = pd.to_numeric(df.loc[filled, column], errors="coerce").astype("float64")
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
    edges = np.rint(numeric)
    left, right, top, bottom = (edges[column] for column in BBOX_COLUMNS)
    collapsed = complete & ~inverted & ~negative & ((left >= right) | (top >= bottom))
    if collapsed.any():

        def describe_rounded(position: int) -> str:
            rounded = ", ".join(f"{edge:g}" for edge in edges.iloc[position])
            return f"{describe(position)}, rounded to {rounded}"

        report.add(
            f"Columns {_BBOX_NAMES}: {int(collapsed.sum())} row(s) have a bbox that is empty once its edges are "
            "rounded to whole pixels, as the crop rounds them (halves to even) "
            f"({report.rows(collapsed, describe_rounded)}). Fix: widen the bbox so that round(x_1) < round(x_2) and "
            "round(y_1) < round(y_2), or leave all four values empty to use the whole image."
        )
    return complete & ~inverted & ~negative & ~collapsed


def _comparable_paths(resolved: pd.Series, empty: pd.Series) -> pd.Series:
    """The resolved paths with ``./``, ``..`` and ``//`` normalised away (os.path.normpath); empty paths become NaN.

    Only the paths that hold such a part are normalised, so a large table of plain paths costs two scans.
    """
    text = resolved.where(~empty)
    unnormal = pd.Series(False, index=text.index)
    for part in _UNNORMAL_PATH_PARTS:
        unnormal |= text.str.contains(part, regex=False).fillna(False).astype(bool)
    if unnormal.any():
        text = text.astype(object)
        text[unnormal] = [os.path.normpath(path) for path in text[unnormal]]
    return text


def _check_duplicates(
    df: pd.DataFrame,
    out: pd.DataFrame,
    empty_path: pd.Series,
    labels: pd.Series | None,
    valid_bbox: pd.Series | None,
    report: _Report,
) -> None:
    """Report images (path and rounded bbox) listed on several rows: under different labels, or again under one."""
    paths = _comparable_paths(out[PATH_COLUMN], empty_path)
    candidates = np.flatnonzero(paths.duplicated(keep=False).to_numpy() & ~empty_path.to_numpy())
    if not len(candidates):
        return
    key = pd.DataFrame({PATH_COLUMN: paths.iloc[candidates].to_numpy()})
    if valid_bbox is not None:  # the same path with other bboxes is another item; a bad bbox is reported already
        boxes = out[list(BBOX_COLUMNS)].iloc[candidates].to_numpy(dtype=np.float64)
        usable = valid_bbox.iloc[candidates].to_numpy() | np.isnan(boxes).all(axis=1)
        candidates, key = candidates[usable], key[usable]
        key[list(BBOX_COLUMNS)] = np.rint(boxes[usable])
    group = key.groupby(list(key.columns), dropna=False, sort=False).ngroup().to_numpy()
    repeated = np.bincount(group)[group] > 1
    positions, group = candidates[repeated], group[repeated]
    identity = labels if labels is not None else df[LABEL_COLUMN].astype(str)
    mixed = pd.Series(identity.iloc[positions].to_numpy()).groupby(group).nunique() > 1

    def listing(codes: np.ndarray, describe: Callable[[int], str] | None) -> str:
        shown = []
        for code in codes[:MAX_REPORTED_ROWS]:
            members = positions[group == code]
            rows = np.zeros(len(df), dtype=bool)
            rows[members] = True
            shown.append(f"{_show(df[PATH_COLUMN].iloc[members[0]])} in {report.rows(rows, describe)}")
        more = f"; and {len(codes) - MAX_REPORTED_ROWS} more" if len(codes) > MAX_REPORTED_ROWS else ""
        return "; ".join(shown) + more

    different = mixed.index[mixed.to_numpy()].to_numpy()
    if len(different):
        report.add(
            f"Column '{PATH_COLUMN}': {len(different)} image(s) are listed more than once under different labels "
            f"({listing(different, lambda position: f'label {_show(identity.iloc[position])}')}). An image (the "
            "same file with the same bbox, or both without one) shows one identity. Fix: keep the row with the right "
            "label and remove the other(s); if the image shows several objects, give each row its own bbox."
        )
    same = mixed.index[~mixed.to_numpy()].to_numpy()
    if len(same):
        split = _values(df[SPLIT_COLUMN]) if SPLIT_COLUMN in df.columns else None
        report.add(
            f"Column '{PATH_COLUMN}': {len(same)} image(s) are listed more than once under the same label "
            f"({listing(same, split)}). Each row is a separate item, so a repeated image is sampled twice in "
            "training, finds its own copy as a correct match in validation, or leaks from train into validation. "
            "Fix: keep one row per image (a validation image that is both query and gallery is one row with "
            "is_query=True and is_gallery=True), or give each row its own bbox."
        )


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
    absent = ~empty_path & ~paths.isin(existing)
    folder = absent & paths.isin([path for path in pd.unique(paths[absent]) if os.path.isdir(path)])
    missing = absent & ~folder
    if missing.any():
        report.add(
            f"Column '{PATH_COLUMN}': {int(missing.sum())} row(s) point to a file that does not exist "
            f"({report.rows(missing, _values(paths))}). Relative paths were resolved against {root_description}. "
            "Fix: correct the paths, or pass the dataset_root the paths are relative to."
        )
    if folder.any():
        report.add(
            f"Column '{PATH_COLUMN}': {int(folder.sum())} row(s) point to a folder, not an image file "
            f"({report.rows(folder, _values(paths))}). Fix: give each row the path of one image file."
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
    right, bottom = (np.rint(out[column]) for column in (BBOX_COLUMNS[1], BBOX_COLUMNS[3]))
    outside = valid_bbox & width.notna() & ((right > width) | (bottom > height))
    if outside.any():

        def describe(position: int) -> str:
            box = _bbox_text(out, out, position)
            return f"{box} in {paths.iloc[position]!r} of size {int(width.iloc[position])}x{int(height.iloc[position])}"

        report.add(
            f"Columns {_BBOX_NAMES}: {int(outside.sum())} row(s) have a bbox that extends beyond the image "
            f"(width x height) ({report.rows(outside, describe)}). Fix: clip the bbox to the image (x_2 <= width, "
            "y_2 <= height, after rounding to whole pixels) or correct it."
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

    Warns:
        UserWarning: when labels appear in several categories (accepted, as in OML), with a count and the first few.
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
        labels = _check_labels(df[LABEL_COLUMN], report)
        if labels is not None:
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

    mixed_categories = None
    if CATEGORY_COLUMN in df.columns:
        no_category = _blank(df[CATEGORY_COLUMN])
        out[CATEGORY_COLUMN] = df[CATEGORY_COLUMN].where(~no_category)
        mixed_categories = _check_categories(df[CATEGORY_COLUMN], no_category, labels, report)
    if SEQUENCE_COLUMN in df.columns:
        out[SEQUENCE_COLUMN] = df[SEQUENCE_COLUMN].where(~_blank(df[SEQUENCE_COLUMN]))
    valid_bbox = _check_bboxes(df, out, report)
    if empty_path is not None and LABEL_COLUMN in df.columns:
        _check_duplicates(df, out, empty_path, labels, valid_bbox, report)

    if empty_path is not None and check_images != "none":
        _check_files(
            out, empty_path, check_images, _root_description(root, dataset_root is not None), valid_bbox, report
        )
    report.raise_if_any()
    if mixed_categories is not None:
        warnings.warn(
            f"{report.what}, column '{CATEGORY_COLUMN}': {mixed_categories}. Accepted, as in OML: per-category "
            "metrics count a query under its own row's category; category-balanced samplers refuse such labels.",
            UserWarning,
            stacklevel=2,
        )
    return out


def _undecodable(csv_path: Path, encoding: str, error: UnicodeDecodeError) -> str:
    """Why the file is not text in ``encoding``: what it looks like instead, or the first bad byte and its line."""
    what = f"Dataset CSV '{csv_path}'"
    raw = csv_path.read_bytes()
    kind = next((name for signature, name in _SIGNATURES if raw.startswith(signature)), None)
    if kind is None and b"\x00" in raw[:4096]:
        kind = "binary data"
    if kind is not None and kind.endswith("text"):
        name = kind.split()[0].lower()
        return (
            f"{what} is {kind} (it starts with a {kind.split()[0]} byte-order mark), not {encoding}. Fix: save it "
            f"as UTF-8, or read it with read_dataset_csv(..., encoding='{name}')."
        )
    if kind is not None:
        return (
            f"{what} is not a CSV text file: it starts like {kind}. Fix: pass the dataset's CSV file (export a "
            "spreadsheet as 'CSV UTF-8 (comma delimited)')."
        )
    try:  # pandas reports the position inside its read buffer: find the first bad byte of the file
        raw.decode(encoding)
    except UnicodeDecodeError as exact:
        error = exact
    start = error.start
    line_start = raw.rfind(b"\n", 0, start) + 1
    line_end = len(raw) if raw.find(b"\n", start) < 0 else raw.find(b"\n", start)
    line_text = raw[line_start:line_end].rstrip(b"\r").decode(encoding, errors="backslashreplace")
    line = raw.count(b"\n", 0, start) + 1
    return (
        f"{what} is not valid {encoding} text: byte {raw[start : start + 1]!r} at byte position {start} "
        f"(line {line}: {line_text!r}) {error.reason}. Fix: save the file as UTF-8 (in a "
        "spreadsheet: 'CSV UTF-8'; or iconv -f latin1 -t utf-8), or pass its encoding, e.g. "
        "read_dataset_csv(..., encoding='latin-1')."
    )


def _unparseable(csv_path: Path, error: pd.errors.ParserError) -> str:
    """pandas' parser error with the file, the line (pandas counts rows from 0 and lines from 1) and the fix."""
    message = str(error).strip()
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    quote = re.search(r"EOF inside string starting at row (\d+)", message)
    what = f"Dataset CSV '{csv_path}'"
    if fields:
        expected, line, saw = fields.groups()
        return (
            f"{what}: line {line} has {saw} values but the header names {expected} columns ({message}). Fix: quote "
            'values that contain a comma ("a,b"), remove the extra values, or name every column in the header.'
        )
    if quote:
        return (
            f"{what}: a quoted value that starts on line {int(quote.group(1)) + 1} is never closed ({message}). "
            'Fix: close the quote, or write a quote inside a quoted value as two quotes ("").'
        )
    return f"{what} cannot be parsed as CSV: {message}. Fix: check that it is comma-separated text with a header line."


def _read_cells(csv_path: Path, encoding: str) -> pd.DataFrame:
    """Every cell of the CSV as text; a file pandas cannot parse is a DataValidationError naming file and line."""
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError as error:
        raise DataValidationError(_undecodable(csv_path, encoding, error)) from error
    except pd.errors.EmptyDataError as error:
        raise DataValidationError(
            f"Dataset CSV '{csv_path}' is empty: it has no header line. Fix: write the header "
            f"({','.join(REQUIRED_COLUMNS)}), then one line per image; check that the file was written completely."
        ) from error
    except pd.errors.ParserError as error:
        raise DataValidationError(_unparseable(csv_path, error)) from error
    with csv_path.open(newline="", encoding=encoding, errors="replace") as file:  # pandas renames repeated names
        header = next((row for row in csv.reader(file) if row), [])
    if header:
        header[0] = header[0].removeprefix("\ufeff")
    _check_unique_columns(pd.Index(header), _Report(df, csv_path))
    return df


def read_dataset_csv(
    path: str | os.PathLike[str],
    dataset_root: str | os.PathLike[str] | None = None,
    *,
    check_images: CheckImages = "exists",
    allow_lone_queries: bool = False,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read a dataset CSV and validate it (see :func:`validate_dataframe`, whose normalised copy it returns).

    Every cell is read as text (so a path such as ``0001`` or a category ``007`` stays as written); an empty
    cell is a missing value. ``dataset_root`` defaults to the CSV's folder. Errors name rows by
    dataframe index and CSV line.

    The file is decoded as ``encoding`` (UTF-8 by default, with or without a byte-order mark). A file that is not
    a readable CSV (empty, binary, not in ``encoding``, a line with more values than the header, an unclosed quote,
    a repeated column name) is a :class:`~omlcore.errors.DataValidationError` naming the file, the line where it
    is known, and the fix.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"Dataset CSV '{csv_path}' does not exist (or is not a file). Fix: pass the path of the dataset's CSV."
        )
    df = _read_cells(csv_path, encoding)
    root = dataset_root if dataset_root is not None else csv_path.parent
    return validate_dataframe(
        df, root, check_images=check_images, allow_lone_queries=allow_lone_queries, source=csv_path
    )
