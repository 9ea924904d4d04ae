"""The CSV data contract: every violation gets a message naming the column, the rows and the fix."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omlcore.datasets import MAX_REPORTED_ROWS, read_dataset_csv, validate_dataframe
from omlcore.errors import DataValidationError


def error_of(df: pd.DataFrame, **kwargs: object) -> str:
    """The message of the DataValidationError that validating ``df`` raises."""
    kwargs.setdefault("check_images", "none")
    with pytest.raises(DataValidationError) as info:
        validate_dataframe(df, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def problems(message: str) -> list[str]:
    """The bullet points of a validation message (one per violation)."""
    return message.split("\n- ")[1:]


def test_valid_frame_is_normalised_into_a_copy(valid_df: pd.DataFrame, tmp_path: Path) -> None:
    valid_df["category"] = ["a", "a", "b", "b", "a", "a", "b", "b"]
    valid_df["sequence"] = [1, 1, None, 2, 3, 3, None, None]
    valid_df["x_1"] = [1.0, None, None, None, 0, None, None, None]
    valid_df["x_2"] = [5, None, None, None, 3, None, None, None]
    valid_df["y_1"] = ["2", None, None, None, 0, None, None, None]
    valid_df["y_2"] = [9, None, None, None, 4, None, None, None]
    valid_df.index = pd.Index([10, 11, 12, 13, 14, 15, 16, 17])
    before = valid_df.copy()

    out = validate_dataframe(valid_df, tmp_path, check_images="none")

    pd.testing.assert_frame_equal(valid_df, before)  # input untouched
    assert out.index.tolist() == valid_df.index.tolist()
    assert out["label"].dtype == np.int64
    assert out["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out["is_query"].dtype == bool and out["is_gallery"].dtype == bool
    assert out["is_query"].tolist() == [False] * 4 + [True, False, True, False]
    assert out["is_gallery"].tolist() == [False] * 4 + [False, True, False, True]
    assert out["path"].tolist() == [str(tmp_path / f"img/{i}.png") for i in range(8)]
    assert all(os.path.isabs(path) for path in out["path"])
    assert out[["x_1", "x_2", "y_1", "y_2"]].dtypes.tolist() == [np.float64] * 4
    assert out.loc[10, ["x_1", "x_2", "y_1", "y_2"]].tolist() == [1.0, 5.0, 2.0, 9.0]
    assert out.loc[11, ["x_1", "x_2", "y_1", "y_2"]].isna().all()
    assert out["category"].tolist() == valid_df["category"].tolist()
    pd.testing.assert_series_equal(out["sequence"], valid_df["sequence"])


def test_absolute_paths_are_kept_and_relative_ones_use_the_working_directory(
    valid_df: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    valid_df.loc[0, "path"] = str(tmp_path / "elsewhere.png")
    monkeypatch.chdir(tmp_path)
    out = validate_dataframe(valid_df, check_images="none")
    assert out.loc[0, "path"] == str(tmp_path / "elsewhere.png")
    assert out.loc[1, "path"] == str(tmp_path / "img" / "1.png")


@pytest.mark.parametrize(
    ("true", "false"),
    [(True, False), ("True", "False"), ("true", "false"), ("1", "0"), (1, 0), (1.0, 0.0), ("TRUE", "false")],
)
def test_boolean_spellings_are_accepted(valid_df: pd.DataFrame, true: object, false: object) -> None:
    valid_df["is_query"] = [None] * 4 + [true, false, true, false]
    valid_df["is_gallery"] = [false] * 4 + [false, true, false, true]
    out = validate_dataframe(valid_df, check_images="none")
    assert out["is_query"].tolist() == [False] * 4 + [True, False, True, False]
    assert out["is_gallery"].tolist() == [False] * 4 + [False, True, False, True]


def test_missing_required_column_is_named_with_the_columns_present(valid_df: pd.DataFrame) -> None:
    message = error_of(valid_df.drop(columns=["split", "is_gallery"]))
    assert "Missing required column(s) 'split', 'is_gallery'" in message
    assert "Columns present: 'label', 'path', 'is_query'" in message
    assert "Fix: the dataset needs the columns label, path, split, is_query, is_gallery" in message


def test_misspelt_required_column_gets_a_rename_hint(valid_df: pd.DataFrame) -> None:
    message = error_of(valid_df.rename(columns={"split": " Split"}))
    assert "Missing required column(s) 'split'" in message
    assert "Column ' Split' looks like 'split': rename it." in message


def test_duplicated_column_is_reported(valid_df: pd.DataFrame) -> None:
    duplicated = pd.concat([valid_df, valid_df[["label"]]], axis=1)
    message = error_of(duplicated)
    assert "Column(s) 'label' appear more than once" in message and "Fix:" in message


def test_empty_dataframe(valid_df: pd.DataFrame) -> None:
    message = error_of(valid_df.iloc[:0])
    assert "The dataset has no rows" in message and "Fix:" in message


def test_non_integer_labels(valid_df: pd.DataFrame) -> None:
    valid_df["label"] = valid_df["label"].astype(object)
    valid_df.loc[[1, 2, 3], "label"] = ["cat", 1.5, np.nan]
    message = error_of(valid_df)
    assert (
        "Column 'label': 3 row(s) have a value that is not an integer (rows 1 ('cat'), 2 (1.5), 3 (<empty>))" in message
    )
    assert "Fix: every row needs an integer label" in message


def test_integral_float_and_text_labels_are_accepted(valid_df: pd.DataFrame) -> None:
    valid_df["label"] = ["0", "0", "1", "1", 2.0, 2.0, 3, 3]
    assert validate_dataframe(valid_df, check_images="none")["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_unknown_split_values(valid_df: pd.DataFrame) -> None:
    valid_df.loc[[3, 7], "split"] = ["val", "test"]
    message = error_of(valid_df, allow_lone_queries=True)
    assert "Column 'split': 2 row(s) have an unknown value (rows 3 ('val'), 7 ('test'))" in message
    assert "Allowed: 'train', 'validation'" in message
    assert "Fix: use 'train' for training rows and 'validation'" in message


def test_query_gallery_flags_on_train_rows(valid_df: pd.DataFrame) -> None:
    valid_df["is_query"] = [True, None, False, None, True, False, True, False]
    valid_df["is_gallery"] = [None, "true", "1", None, False, True, False, True]
    found = problems(error_of(valid_df))
    assert len(found) == 2
    assert found[0].startswith("Column 'is_query': 1 train row(s) have is_query=True (row 0 (True))")
    assert found[1].startswith("Column 'is_gallery': 2 train row(s) have is_gallery=True (rows 1 ('true'), 2 ('1'))")
    assert all("Fix: set" in problem and "or leave it empty) on train rows" in problem for problem in found)


def test_non_boolean_flags_and_empty_flags_on_validation_rows(valid_df: pd.DataFrame) -> None:
    valid_df["is_query"] = [None, "yes", None, None, True, 2, True, False]
    valid_df["is_gallery"] = [None, None, None, None, False, True, None, True]
    found = problems(error_of(valid_df))
    query = next(problem for problem in found if problem.startswith("Column 'is_query'"))
    gallery = next(problem for problem in found if problem.startswith("Column 'is_gallery'"))
    assert "2 row(s) have a value that is not a boolean (rows 1 ('yes'), 5 (2))" in query
    assert "1 row(s) have a value that is not a boolean (row 6 (<empty>))" in gallery
    assert "Accepted: True/False, true/false, 1/0" in query
    assert "Fix: set is_gallery to True or False on every validation row" in gallery


def test_validation_row_that_is_neither_query_nor_gallery(valid_df: pd.DataFrame) -> None:
    valid_df["is_query"] = [None] * 4 + [True, False, True, False]
    valid_df["is_gallery"] = [None] * 4 + [True, False, True, False]
    message = error_of(valid_df, allow_lone_queries=True)
    assert (
        "Columns 'is_query' and 'is_gallery': 2 validation row(s) are neither query nor gallery (rows 5, 7)" in message
    )
    assert "Fix: set is_query and/or is_gallery to True" in message


def test_query_without_gallery_match_other_than_itself(valid_df: pd.DataFrame) -> None:
    valid_df["label"] = [0, 0, 1, 1, 2, 2, 3, 8]
    valid_df["is_query"] = [None] * 4 + [True, True, True, False]
    valid_df["is_gallery"] = [None] * 4 + [True, False, False, True]
    # row 4: its only gallery item of label 2 is itself; row 5 is fine (row 4); row 6: label 3 has no gallery
    message = error_of(valid_df)
    assert (
        "Column 'is_query': 2 query row(s) have no gallery item with the same label other than themselves "
        "(rows 4 (label 2), 6 (label 3))" in message
    )
    assert "Fix: add gallery rows with these labels" in message and "pass allow_lone_queries=True" in message
    validate_dataframe(valid_df, check_images="none", allow_lone_queries=True)


def test_query_that_is_also_gallery_needs_a_second_gallery_item(valid_df: pd.DataFrame) -> None:
    valid_df["is_query"] = [None] * 4 + [True, True, True, True]
    valid_df["is_gallery"] = [None] * 4 + [True, True, True, True]
    validate_dataframe(valid_df, check_images="none")  # each query has the other row of its label
    valid_df.loc[5, "label"] = 7
    message = error_of(valid_df)
    assert "2 query row(s) have no gallery item" in message and "rows 4 (label 2), 5 (label 7))" in message


def test_label_in_several_categories_is_accepted_with_a_warning(valid_df: pd.DataFrame) -> None:
    valid_df["category"] = ["shoes", "bags", "bags", "bags", "hats", "hats", "hats", "caps"]
    with pytest.warns(UserWarning) as record:
        out = validate_dataframe(valid_df, check_images="none")
    assert [str(warning.message) for warning in record] == [
        "The dataframe, column 'category': 2 label(s) appear in more than one category (label 0: 'bags', 'shoes'; "
        "label 3: 'caps', 'hats'). Accepted, as in OML: per-category metrics count a query under its own row's "
        "category; category-balanced samplers refuse such labels."
    ]
    assert out["category"].tolist() == valid_df["category"].tolist()


def test_label_in_several_categories_with_an_error_raises_without_a_warning(valid_df: pd.DataFrame) -> None:
    valid_df["category"] = ["shoes", "bags", "bags", "bags", "hats", "hats", "hats", "caps"]
    valid_df.loc[5, "split"] = "test"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "more than one category" not in error_of(valid_df)


def test_missing_category_value(valid_df: pd.DataFrame) -> None:
    valid_df["category"] = ["a", "a", None, "", "b", "b", "b", "b"]
    message = error_of(valid_df)
    assert "Column 'category': 2 row(s) have no category (rows 2, 3)" in message
    assert "Fix: give every row a category" in message


def test_empty_path(valid_df: pd.DataFrame) -> None:
    valid_df.loc[[2, 6], "path"] = ["", None]
    message = error_of(valid_df)
    assert "Column 'path': 2 row(s) have an empty path (rows 2, 6)" in message
    assert "Fix: give every row the path of its image file" in message


def test_missing_image_file_names_resolved_path_and_root(valid_df: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in (0, 1, 2, 4, 5, 6, 7):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{i}.png")
    message = error_of(valid_df, dataset_root=tmp_path, check_images="exists")
    resolved = str(tmp_path / "img" / "3.png")
    assert f"Column 'path': 1 row(s) point to a file that does not exist (row 3 ({resolved!r}))" in message
    assert f"Relative paths were resolved against dataset_root '{tmp_path}'" in message
    assert "Fix: correct the paths, or pass the dataset_root" in message


def test_missing_dataset_root_is_called_out(valid_df: pd.DataFrame, tmp_path: Path) -> None:
    message = error_of(valid_df, dataset_root=tmp_path / "nowhere", check_images="exists")
    assert "8 row(s) point to a file that does not exist" in message
    assert f"dataset_root '{tmp_path / 'nowhere'}', which is not an existing folder" in message


def test_unreadable_image_with_decode(valid_df: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(8):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "img" / "5.png").write_bytes(b"this is not a png")
    validate_dataframe(valid_df, tmp_path, check_images="exists")  # exists: the file is there
    message = error_of(valid_df, dataset_root=tmp_path, check_images="decode")
    assert f"Column 'path': 1 row(s) point to a file Pillow cannot decode as an image (row 5 ('{tmp_path}" in message
    assert "5.png': UnidentifiedImageError" in message
    assert "Fix: replace or re-export the file(s)" in message


def with_bboxes(df: pd.DataFrame, boxes: dict[int, tuple[object, object, object, object]]) -> pd.DataFrame:
    """``df`` with bbox columns: ``boxes[row] = (x_1, x_2, y_1, y_2)``, other rows empty."""
    for j, column in enumerate(("x_1", "x_2", "y_1", "y_2")):
        df[column] = [boxes[i][j] if i in boxes else None for i in range(len(df))]
    return df


def test_half_filled_bbox(valid_df: pd.DataFrame) -> None:
    message = error_of(with_bboxes(valid_df, {0: (1, 4, 1, 4), 2: (1, None, 0, 5), 5: (None, None, 3, None)}))
    assert "Columns 'x_1', 'x_2', 'y_1', 'y_2': 2 row(s) have a partly filled bbox" in message
    assert "rows 2 (x_1=1, x_2=<empty>, y_1=0, y_2=5), 5 (x_1=<empty>, x_2=<empty>, y_1=3, y_2=<empty>)" in message
    assert "Fix: fill all four bbox values, or leave all four empty" in message


def test_inverted_and_empty_bbox(valid_df: pd.DataFrame) -> None:
    message = error_of(with_bboxes(valid_df, {1: (10, 5, 0, 4), 3: (2, 2, 0, 4), 4: (0, 4, 7, 3), 6: (0, 1, 0, 1)}))
    assert (
        "Columns 'x_1', 'x_2', 'y_1', 'y_2': 3 row(s) have an empty or inverted bbox,"
        " x_1 >= x_2 or y_1 >= y_2" in message
    )
    assert (
        "rows 1 (x_1=10, x_2=5, y_1=0, y_2=4), 3 (x_1=2, x_2=2, y_1=0, y_2=4), 4 (x_1=0, x_2=4, y_1=7,"
        " y_2=3)" in message
    )
    assert "Fix: x_1 < x_2 are the left and right edges" in message


def test_negative_bbox_coordinates(valid_df: pd.DataFrame) -> None:
    message = error_of(with_bboxes(valid_df, {2: (-1, 5, 0, 4), 7: (0, 5, -3.5, 4)}))
    assert (
        "2 row(s) have negative bbox coordinates (rows 2 (x_1=-1, x_2=5, y_1=0, y_2=4), 7 (x_1=0,"
        " x_2=5, y_1=-3.5" in message
    )
    assert "Fix: coordinates are pixels from the top-left corner" in message


def test_bbox_value_that_is_not_a_number(valid_df: pd.DataFrame) -> None:
    message = error_of(with_bboxes(valid_df, {1: ("left", 5, 0, 4)}))
    assert "Column 'x_1': 1 row(s) have a value that is not a number (row 1 ('left'))" in message
    assert "Fix: bbox coordinates are pixel numbers" in message


def test_incomplete_set_of_bbox_columns(valid_df: pd.DataFrame) -> None:
    valid_df["x_1"], valid_df["x_2"] = 0, 3
    message = error_of(valid_df)
    assert (
        "Columns 'x_1', 'x_2': a bbox needs all of 'x_1', 'x_2', 'y_1', 'y_2', but 'y_1', 'y_2' are missing" in message
    )
    assert "Fix: add the missing column(s)" in message


def test_bbox_beyond_the_image_with_decode(valid_df: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for i in range(8):
        Image.new("RGB", (10, 6)).save(tmp_path / "img" / f"{i}.png")
    with_bboxes(valid_df, {0: (0, 10, 0, 6), 4: (2, 11, 0, 5)})
    validate_dataframe(valid_df, tmp_path, check_images="exists")  # sizes are only known when decoding
    message = error_of(valid_df, dataset_root=tmp_path, check_images="decode")
    assert "1 row(s) have a bbox that extends beyond the image (width x height)" in message
    assert f"row 4 (x_1=2, x_2=11, y_1=0, y_2=5 in '{tmp_path / 'img' / '4.png'}' of size 10x6)" in message
    assert "Fix: clip the bbox to the image" in message


def test_every_violation_is_reported_together(valid_df: pd.DataFrame) -> None:
    valid_df["label"] = valid_df["label"].astype(object)
    valid_df.loc[1, "label"] = "cat"
    valid_df.loc[2, "split"] = "val"
    valid_df.loc[3, "path"] = ""
    valid_df.loc[4, "is_query"] = "maybe"
    valid_df["category"] = ["a"] * 7 + [None]
    message = error_of(valid_df)
    assert message.startswith("The dataframe violates the dataset format (5 problems):")
    found = problems(message)
    assert [problem.split(":")[0] for problem in found] == [
        "Column 'label'",
        "Column 'path'",
        "Column 'split'",
        "Column 'is_query'",
        "Column 'category'",
    ]


def test_only_the_first_rows_are_listed(valid_df: pd.DataFrame) -> None:
    valid_df["split"] = "nope"
    message = error_of(valid_df)
    listed = ", ".join(f"{i} ('nope')" for i in range(MAX_REPORTED_ROWS))
    assert f"8 row(s) have an unknown value (rows {listed}, and {8 - MAX_REPORTED_ROWS} more)" in message


def test_read_csv_reports_csv_lines_and_resolves_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    for name in ("0001", "b", "c", "d"):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{name}.png")
    csv = tmp_path / "df.csv"
    csv.write_text(
        "label,path,split,is_query,is_gallery\n"
        "1,img/0001.png,train,,\n"
        "2,img/b.png,validation,true,0\n"
        "2,img/c.png,validation,False,1\n"
        "3,img/d.png,valid,,\n"
    )
    with pytest.raises(DataValidationError) as info:
        read_dataset_csv(csv)
    message = str(info.value)
    assert message.startswith(f"Dataset CSV '{csv}' violates the dataset format (1 problem):")
    assert "Column 'split': 1 row(s) have an unknown value (row 3 (line 5, 'valid'))" in message

    csv.write_text(csv.read_text().replace("valid,", "train,"))
    df = read_dataset_csv(csv)
    assert df["path"].tolist() == [str(tmp_path / "img" / f"{name}.png") for name in ("0001", "b", "c", "d")]
    assert df["label"].tolist() == [1, 2, 2, 3]
    assert df["is_query"].tolist() == [False, True, False, False]
    assert df["is_gallery"].tolist() == [False, False, True, False]


def test_read_csv_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.csv"))):
        read_dataset_csv(tmp_path / "absent.csv")


def test_bad_arguments_are_rejected(valid_df: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match="expects a pandas DataFrame"):
        validate_dataframe(valid_df.to_dict(), check_images="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="check_images must be one of 'none', 'exists', 'decode'"):
        validate_dataframe(valid_df, check_images="all")  # type: ignore[arg-type]


def test_large_table_is_checked_without_per_row_python(valid_df: pd.DataFrame) -> None:
    big = pd.concat([valid_df] * 25_000, ignore_index=True)
    big["label"] = np.repeat(np.arange(len(big) // 2), 2)
    big["path"] = [f"img/{i}.png" for i in range(len(big))]  # one row per image
    out = validate_dataframe(big, check_images="none")
    assert len(out) == 200_000 and out["label"].dtype == np.int64
