"""The map of what omlcore checks in the dataset CSV format: every class of input, and what happens to it.

Sections follow the format: the file (missing, empty, unparseable, wrong encoding), each column (missing, empty
cell, wrong type, out of range, duplicates), bboxes, and the image files (missing, corrupt, unusual modes). Each
case asserts the named error (its column, its rows by CSV line, its fix) or the exact value omlcore reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omlcore import keys
from omlcore.datasets import ImageBaseDataset, read_dataset_csv, validate_dataframe
from omlcore.errors import DataValidationError

HEADER = "label,path,split,is_query,is_gallery"
#: Two train rows and two validation rows (one query, one gallery of label 2), lines 2-5 of a CSV.
ROWS = [
    "0,img/0.png,train,,",
    "1,img/1.png,train,,",
    "2,img/2.png,validation,True,False",
    "2,img/3.png,validation,False,True",
]


def csv_file(tmp_path: Path, lines: list[str] | None = None, *, header: str = HEADER, name: str = "df.csv") -> Path:
    """A CSV of ``header`` and ``lines`` (default :data:`ROWS`) in ``tmp_path``."""
    path = tmp_path / name
    path.write_text("\n".join([header, *(ROWS if lines is None else lines)]) + "\n", encoding="utf-8")
    return path


def csv_error(path: Path, **kwargs: Any) -> str:
    """The message of the DataValidationError that reading ``path`` raises (file checks off unless asked)."""
    kwargs.setdefault("check_images", "none")
    with pytest.raises(DataValidationError) as info:
        read_dataset_csv(path, **kwargs)
    return str(info.value)


def frame(**columns: list[Any]) -> pd.DataFrame:
    """The four rows of :data:`ROWS` as a dataframe, with ``columns`` replaced or added."""
    df = pd.DataFrame(
        {
            "label": [0, 1, 2, 2],
            "path": [f"img/{i}.png" for i in range(4)],
            "split": ["train", "train", "validation", "validation"],
            "is_query": [None, None, True, False],
            "is_gallery": [None, None, False, True],
        }
    )
    for name, values in columns.items():
        df[name] = pd.Series(values, dtype=object)
    return df


def frame_error(df: pd.DataFrame, **kwargs: Any) -> str:
    kwargs.setdefault("check_images", "none")
    with pytest.raises(DataValidationError) as info:
        validate_dataframe(df, **kwargs)
    return str(info.value)


# --- the file ---------------------------------------------------------------------------------------------------


def test_file_missing_or_a_folder(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.csv", tmp_path):
        with pytest.raises(
            FileNotFoundError, match=rf"Dataset CSV '{path}' does not exist \(or is not a file\)\. Fix:"
        ):
            read_dataset_csv(path)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n"], ids=["no bytes", "blank lines", "spaces"])
def test_file_empty(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "df.csv"
    path.write_bytes(content)
    message = csv_error(path)
    assert f"Dataset CSV '{path}' is empty: it has no header line. Fix: write the header" in message


def test_file_with_a_header_only(tmp_path: Path) -> None:
    assert "The dataset has no rows. Fix:" in csv_error(csv_file(tmp_path, []))


def test_line_with_more_values_than_the_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [ROWS[0], "1,img/a,b.png,train,,", *ROWS[2:]])
    message = csv_error(path)
    assert f"Dataset CSV '{path}': line 3 has 6 values but the header names 5 columns" in message
    assert 'Fix: quote values that contain a comma ("a,b")' in message


def test_line_with_fewer_values_than_the_header_leaves_cells_empty(tmp_path: Path) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], "1,img/1.png", *ROWS[2:]]))
    assert "Column 'split': 1 row(s) have an unknown value (row 1 (line 3, <empty>))" in message


def test_unclosed_quote(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [ROWS[0], '1,"img/1.png,train,,', *ROWS[2:]])
    message = csv_error(path)
    assert f"Dataset CSV '{path}': a quoted value that starts on line 3 is never closed" in message
    assert "Fix: close the quote" in message


@pytest.mark.parametrize(
    ("start", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xa1", "a ZIP archive (an .xlsx workbook is one)"),
        (b"\x1f\x8b\x08\x00\xb4\x9f", "gzip-compressed data"),
        (b"\x00\x01\x02\x03\xfe\xff\xfa", "binary data"),
    ],
)
def test_binary_file(tmp_path: Path, start: bytes, kind: str) -> None:
    path = tmp_path / "df.csv"
    path.write_bytes(start + bytes(range(256)))
    message = csv_error(path)
    assert f"Dataset CSV '{path}' is not a CSV text file: it starts like {kind}. Fix: pass the dataset's CSV" in message


def test_latin1_file_names_the_byte_and_line(tmp_path: Path) -> None:
    path = tmp_path / "df.csv"
    text = "\n".join([HEADER, *ROWS[:1], "1,img/café.png,train,,", *ROWS[2:]]) + "\n"
    path.write_bytes(text.encode("latin-1"))
    message = csv_error(path)
    position = text.index("é")
    assert f"Dataset CSV '{path}' is not valid utf-8 text: byte b'\\xe9' at byte position {position} " in message
    assert "(line 3: '1,img/caf\\\\xe9.png,train,,')" in message
    assert "Fix: save the file as UTF-8" in message and "encoding='latin-1'" in message
    assert read_dataset_csv(path, check_images="none", encoding="latin-1")["path"][1].endswith("img/café.png")


def test_latin1_byte_far_into_a_large_file_is_found_on_its_line(tmp_path: Path) -> None:
    rows = [f"{i},img/{i}.png,train,," for i in range(30_000)]  # about 600 kB: past pandas' first read buffer
    rows[25_000] = "25000,img/caf\xe9.png,train,,"
    path = tmp_path / "df.csv"
    path.write_bytes(("\n".join([HEADER, *rows]) + "\n").encode("latin-1"))
    assert "(line 25002: '25000,img/caf\\\\xe9.png,train,,')" in csv_error(path)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"], ids=["utf-8", "utf-8 with BOM"])
def test_utf8_with_and_without_bom(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "df.csv"
    path.write_text("\n".join([HEADER, *ROWS[:1], "1,img/café.png,train,,", *ROWS[2:]]) + "\n", encoding=encoding)
    df = read_dataset_csv(path, check_images="none")
    assert df.columns[0] == "label" and df["label"].tolist() == [0, 1, 2, 2]
    assert df["path"][1] == str(tmp_path / "img" / "café.png")


def test_utf16_file_is_named_and_readable_with_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "df.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-16")
    message = csv_error(path)
    assert f"Dataset CSV '{path}' is UTF-16 text (it starts with a UTF-16 byte-order mark), not utf-8." in message
    assert "Fix: save it as UTF-8, or read it with read_dataset_csv(..., encoding='utf-16')" in message
    assert read_dataset_csv(path, check_images="none", encoding="utf-16")["label"].tolist() == [0, 1, 2, 2]


def test_semicolon_separated_file(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [row.replace(",", ";") for row in ROWS], header=HEADER.replace(",", ";"))
    message = csv_error(path)
    assert "Missing required column(s) 'label', 'path', 'split', 'is_query', 'is_gallery'" in message
    assert "the values seem to be separated by ';', not ','. Fix: save the file with ',' as the separator." in message


def test_repeated_column_name_in_the_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [f"{row},7" for row in ROWS], header=f"{HEADER},label")
    message = csv_error(path)
    assert f"Dataset CSV '{path}' violates the dataset format (1 problem):" in message
    assert "Column(s) 'label' appear more than once. Fix: keep one column of each name." in message


def test_extra_columns_are_kept(tmp_path: Path) -> None:
    path = csv_file(tmp_path, [f"{row},note {i}" for i, row in enumerate(ROWS)], header=f"{HEADER},comment")
    assert read_dataset_csv(path, check_images="none")["comment"].tolist() == [f"note {i}" for i in range(4)]


# --- required columns: missing --------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["label", "path", "split", "is_query", "is_gallery"])
def test_required_column_missing(column: str) -> None:
    message = frame_error(frame().drop(columns=[column]))
    assert f"Missing required column(s) '{column}'." in message
    assert "Fix: the dataset needs the columns label, path, split, is_query, is_gallery" in message


# --- label ----------------------------------------------------------------------------------------------------

ACCEPTED_LABELS = [
    ("7", 7),
    (" 7 ", 7),
    ("+7", 7),
    ("-3", -3),
    ("007", 7),
    ("-0", 0),
    ("7.0", 7),
    ("7.", 7),
    ("-12.000", -12),
    ("9007199254740992", 2**53),
    ("9007199254740993", 2**53 + 1),
    ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)),
]


@pytest.mark.parametrize(("text", "value"), ACCEPTED_LABELS, ids=[text for text, _ in ACCEPTED_LABELS])
def test_label_text_accepted_exactly(tmp_path: Path, text: str, value: int) -> None:
    path = csv_file(tmp_path, [ROWS[0], f"{text},img/1.png,train,,", *ROWS[2:]])
    labels = read_dataset_csv(path, check_images="none")["label"]
    assert labels.dtype == np.int64 and int(labels[1]) == value


REJECTED_LABELS = ["7.5", "1e3", "1E+20", "0x1F", "1_000", "seven", "True", "nan", "inf", "--7", "7-", "\u0667"]


@pytest.mark.parametrize("text", REJECTED_LABELS)
def test_label_text_rejected(tmp_path: Path, text: str) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], f"{text},img/1.png,train,,", *ROWS[2:]]))
    assert f"Column 'label': 1 row(s) have a value that is not an integer (row 1 (line 3, {text!r}))" in message
    assert "Accepted: a decimal integer such as 7, -3 or 007, also written 7.0" in message
    assert "Fix: every row needs an integer label" in message


def test_label_empty_cell(tmp_path: Path) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], ",img/1.png,train,,", *ROWS[2:]]))
    assert "Column 'label': 1 row(s) have a value that is not an integer (row 1 (line 3, <empty>))" in message


def test_labels_beyond_2_53_stay_distinct(tmp_path: Path) -> None:
    rows = [f"{2**53},img/0.png,train,,", f"{2**53 + 1},img/1.png,train,,", *ROWS[2:]]
    df = read_dataset_csv(csv_file(tmp_path, rows), check_images="none")
    assert df["label"].tolist()[:2] == [2**53, 2**53 + 1]


@pytest.mark.parametrize("text", [str(2**63), str(-(2**63) - 1), "100000000000000000000", "200000000000000000000"])
def test_label_outside_int64(tmp_path: Path, text: str) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], f"{text},img/1.png,train,,", *ROWS[2:]]))
    assert (
        "Column 'label': 1 row(s) have an integer outside the int64 range -9223372036854775808 .. "
        f"9223372036854775807 (row 1 (line 3, {text!r})). Fix: map the ids to smaller integers" in message
    )


def test_float_labels_of_a_dataframe() -> None:
    out = validate_dataframe(frame(label=[0.0, 1.0, 2.0, 2.0]), check_images="none")
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [0, 1, 2, 2]
    df = frame()
    df["label"] = [0.0, 2.0**53 + 2, 1e20, 2.0]
    message = frame_error(df)
    assert (
        "Column 'label': 2 row(s) have a float label beyond 2**53 = 9007199254740992 (rows 1 (9007199254740994.0)"
        in message
    )
    assert "2 (1e+20))" in message and "Fix: keep the labels as integers (int64) or text" in message
    df["label"] = [0.0, np.nan, 1.5, 2.0]
    assert "2 row(s) have a value that is not an integer (rows 1 (<empty>), 2 (1.5))" in frame_error(df)


def test_integer_dtypes_of_a_dataframe() -> None:
    df = frame()
    df["label"] = np.array([0, 1, 2, 2], dtype=np.uint8)
    assert validate_dataframe(df, check_images="none")["label"].dtype == np.int64
    df["label"] = np.array([0, 2**63, 2, 2], dtype=np.uint64)
    assert "1 row(s) have an integer outside the int64 range" in frame_error(df)
    df["label"] = pd.array([0, None, 2, 2], dtype="Int64")
    assert "1 row(s) have a value that is not an integer (row 1 (<empty>))" in frame_error(df)
    df["label"] = [True, False, True, True]
    assert "4 row(s) have a value that is not an integer" in frame_error(df)


def test_mixed_label_cells_of_a_dataframe() -> None:
    out = validate_dataframe(frame(label=["0", 1, 2.0, np.int64(2)]), check_images="none")
    assert out["label"].tolist() == [0, 1, 2, 2]
    message = frame_error(frame(label=["0", True, 2**64, None]))
    assert "2 row(s) have a value that is not an integer (rows 1 (True), 3 (<empty>))" in message
    assert "1 row(s) have an integer outside the int64 range" in message


# --- path -----------------------------------------------------------------------------------------------------


def test_path_empty_cell(tmp_path: Path) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], "1,,train,,", "1,  ,train,,", *ROWS[2:]]))
    assert "Column 'path': 2 row(s) have an empty path (rows 1 (line 3), 2 (line 4)). Fix:" in message


def images_for(root: Path, names: list[str], size: tuple[int, int] = (10, 6)) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10, 20, 30)).save(root / name)


def test_path_to_a_missing_file_or_a_folder(tmp_path: Path) -> None:
    images_for(tmp_path, ["img/0.png", "img/2.png"])
    (tmp_path / "img" / "3.png").mkdir()
    message = csv_error(csv_file(tmp_path), check_images="exists")
    missing = str(tmp_path / "img" / "1.png")
    assert f"Column 'path': 1 row(s) point to a file that does not exist (row 1 (line 3, {missing!r}))" in message
    assert f"Relative paths were resolved against dataset_root '{tmp_path}'. Fix: correct the paths" in message
    folder = str(tmp_path / "img" / "3.png")
    assert f"Column 'path': 1 row(s) point to a folder, not an image file (row 3 (line 5, {folder!r}))" in message


def test_absolute_and_relative_paths(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "a.png"
    (tmp_path / "data").mkdir()
    path = csv_file(tmp_path / "data", [f"0,{elsewhere},train,,", *ROWS[1:]])
    df = read_dataset_csv(path, check_images="none")
    assert df["path"].tolist() == [str(elsewhere), *(str(tmp_path / "data" / "img" / f"{i}.png") for i in (1, 2, 3))]


def test_same_image_under_two_labels(tmp_path: Path) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], "1,img/0.png,train,,", *ROWS[2:]]))
    assert (
        "Column 'path': 1 image(s) are listed more than once under different labels ('img/0.png' in rows "
        "0 (line 2, label 0), 1 (line 3, label 1))" in message
    )
    assert "Fix: keep the row with the right label and remove the other(s)" in message


@pytest.mark.parametrize(
    ("rows", "listed"),
    [
        (["0,img/0.png,train,,", "0,img/0.png,train,,"], "rows 0 (line 2, 'train'), 1 (line 3, 'train')"),
        (
            ["0,img/0.png,train,,", "1,img/1.png,train,,", "2,img/3.png,validation,True,False"],
            "rows 3 (line 5, 'validation'), 4 (line 6, 'validation')",
        ),
    ],
    ids=["twice in train", "query and gallery as two rows"],
)
def test_same_image_twice_in_one_split(tmp_path: Path, rows: list[str], listed: str) -> None:
    all_rows = rows[:2] + ROWS[2:] + rows[2:]
    message = csv_error(csv_file(tmp_path, all_rows))
    assert "Column 'path': 1 image(s) are listed more than once under the same label (" in message
    assert listed in message
    assert "is one row with is_query=True and is_gallery=True" in message


def test_same_image_in_train_and_validation(tmp_path: Path) -> None:
    message = csv_error(csv_file(tmp_path, [*ROWS, "2,img/0.png,train,,"]))
    assert "1 image(s) are listed more than once under different labels" in message
    message = csv_error(csv_file(tmp_path, [*ROWS[:3], "2,img/2.png,train,,", "2,img/3.png,validation,False,True"]))
    assert "('img/2.png' in rows 2 (line 4, 'validation'), 3 (line 5, 'train'))" in message
    assert "leaks from train into validation" in message


def test_same_image_written_differently(tmp_path: Path) -> None:
    rows = [
        "0,img/0.png,train,,",
        "0,./img/0.png,train,,",
        "0,img//0.png,train,,",
        f"0,{tmp_path}/img/x/../0.png,train,,",
    ]
    message = csv_error(csv_file(tmp_path, rows + ROWS[2:]))
    assert (
        "1 image(s) are listed more than once under the same label ('img/0.png' in rows 0 (line 2, 'train'), "
        in message
    )
    assert "1 (line 3, 'train'), 2 (line 4, 'train'), 3 (line 5, 'train'))" in message


def test_same_image_with_other_bboxes_is_another_item(tmp_path: Path) -> None:
    header = f"{HEADER},x_1,x_2,y_1,y_2"
    rows = ["0,img/0.png,train,,,0,5,0,5", "0,img/0.png,train,,,5,9,0,5", "1,img/0.png,train,,,,,,"]
    rows += [f"{row},,,," for row in ROWS[2:]]
    df = read_dataset_csv(csv_file(tmp_path, rows, header=header), check_images="none")
    assert len(df) == 5
    rows[1] = "0,img/0.png,train,,,0.4,5,0,5.3"  # the same pixels as row 0 once rounded
    message = csv_error(csv_file(tmp_path, rows, header=header))
    assert (
        "1 image(s) are listed more than once under the same label ('img/0.png' in rows 0 (line 2, 'train'), 1"
        in message
    )


# --- split, is_query, is_gallery -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "Train", "test", "val", " train"])
def test_split_values(tmp_path: Path, value: str) -> None:
    message = csv_error(csv_file(tmp_path, [ROWS[0], f"1,img/1.png,{value},,", *ROWS[2:]]))
    shown = "<empty>" if not value else repr(value)
    assert f"Column 'split': 1 row(s) have an unknown value (row 1 (line 3, {shown}))" in message
    assert "Allowed: 'train', 'validation'" in message and "Fix: use 'train'" in message


@pytest.mark.parametrize("column", ["is_query", "is_gallery"])
@pytest.mark.parametrize(("value", "shown"), [("", "<empty>"), ("yes", "'yes'"), ("2", "'2'")])
def test_flag_values_on_validation_rows(tmp_path: Path, column: str, value: str, shown: str) -> None:
    df = frame(is_query=[None, None, True, True], is_gallery=[None, None, True, True])
    df.loc[3, column] = value
    df["label"] = [0, 1, 2, 2]
    message = frame_error(df, allow_lone_queries=True)
    assert f"Column '{column}': 1 row(s) have a value that is not a boolean (row 3 ({shown}))" in message
    assert f"Fix: set {column} to True or False on every validation row" in message


@pytest.mark.parametrize(("true", "false"), [("True", "False"), ("true", "false"), ("1", "0"), ("TRUE", "0.0")])
def test_flag_spellings(tmp_path: Path, true: str, false: str) -> None:
    rows = [ROWS[0], ROWS[1], f"2,img/2.png,validation,{true},{false}", f"2,img/3.png,validation,{false},{true}"]
    df = read_dataset_csv(csv_file(tmp_path, rows), check_images="none")
    assert df["is_query"].tolist() == [False, False, True, False]
    assert df["is_gallery"].tolist() == [False, False, False, True]


def test_flags_on_train_rows_neither_flag_and_lone_queries(tmp_path: Path) -> None:
    message = csv_error(csv_file(tmp_path, ["0,img/0.png,train,True,", *ROWS[1:]]))
    assert "Column 'is_query': 1 train row(s) have is_query=True (row 0 (line 2, 'True'))" in message
    message = csv_error(csv_file(tmp_path, [*ROWS, "3,img/4.png,validation,False,False"]))
    assert "1 validation row(s) are neither query nor gallery (row 4 (line 6))" in message
    message = csv_error(csv_file(tmp_path, [*ROWS, "3,img/4.png,validation,True,True"]))
    assert (
        "1 query row(s) have no gallery item with the same label other than themselves (row 4 (line 6, label 3))"
        in message
    )
    read_dataset_csv(
        csv_file(tmp_path, [*ROWS, "3,img/4.png,validation,True,True"]), check_images="none", allow_lone_queries=True
    )


# --- category, sequence ---------------------------------------------------------------------------------------


def test_category_empty_and_label_in_two_categories(tmp_path: Path) -> None:
    header = f"{HEADER},category"
    message = csv_error(
        csv_file(tmp_path, [f"{ROWS[0]},shoes", f"{ROWS[1]},", f"{ROWS[2]},bags", f"{ROWS[3]},hats"], header=header)
    )
    assert "Column 'category': 1 row(s) have no category (row 1 (line 3)). Fix:" in message
    assert "more than one category" not in message  # accepted (a warning), as in OML


def test_sequence_empty_means_no_sequence(tmp_path: Path) -> None:
    header = f"{HEADER},sequence"
    path = csv_file(tmp_path, [f"{ROWS[0]},v1", f"{ROWS[1]},", f"{ROWS[2]},v1", f"{ROWS[3]},v2"], header=header)
    df = read_dataset_csv(path, check_images="none")
    assert df["sequence"].isna().tolist() == [False, True, False, False]
    dataset = ImageBaseDataset(path, check_images="none")
    assert dataset.sequences is not None and dataset.sequences.tolist() == [0, -1, 0, 1]


# --- bboxes ---------------------------------------------------------------------------------------------------

BBOX_HEADER = f"{HEADER},x_1,x_2,y_1,y_2"


def bbox_rows(box: str) -> list[str]:
    """:data:`ROWS` with ``box`` ("x_1,x_2,y_1,y_2") on row 1 and no bbox elsewhere."""
    return [f"{row},{box if i == 1 else ',,,'}" for i, row in enumerate(ROWS)]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ("1,5,,", "1 row(s) have a partly filled bbox (row 1 (line 3, x_1=1, x_2=5, y_1=<empty>, y_2=<empty>))"),
        ("left,5,0,4", "Column 'x_1': 1 row(s) have a value that is not a number (row 1 (line 3, 'left'))"),
        ("5,1,0,4", "1 row(s) have an empty or inverted bbox, x_1 >= x_2 or y_1 >= y_2 (row 1 (line 3, x_1=5, x_2=1"),
        ("3,3,0,4", "1 row(s) have an empty or inverted bbox"),
        ("-1,5,0,4", "1 row(s) have negative bbox coordinates (row 1 (line 3, x_1=-1, x_2=5, y_1=0, y_2=4))"),
        ("inf,5,0,4", "Column 'x_1': 1 row(s) have a value that is not a number (row 1 (line 3, 'inf'))"),
    ],
    ids=["partly filled", "not a number", "inverted", "empty", "negative", "infinite"],
)
def test_bbox_values(tmp_path: Path, box: str, expected: str) -> None:
    message = csv_error(csv_file(tmp_path, bbox_rows(box), header=BBOX_HEADER))
    assert expected in message and "Fix:" in message


@pytest.mark.parametrize(
    ("box", "rounded"),
    [("0.6,1.4,0,5", "1, 1, 0, 5"), ("1.5,2.5,0,5", "2, 2, 0, 5"), ("0,5,3.5,4.49", "0, 5, 4, 4")],
    ids=["both to 1", "halves to even", "y"],
)
def test_bbox_that_rounds_to_an_empty_crop(tmp_path: Path, box: str, rounded: str) -> None:
    message = csv_error(csv_file(tmp_path, bbox_rows(box), header=BBOX_HEADER))
    x_1, x_2, y_1, y_2 = box.split(",")
    shown = f"x_1={float(x_1):g}, x_2={float(x_2):g}, y_1={float(y_1):g}, y_2={float(y_2):g}"
    assert (
        "1 row(s) have a bbox that is empty once its edges are rounded to whole pixels, as the crop rounds them "
        f"(halves to even) (row 1 (line 3, {shown}, rounded to {rounded}))" in message
    )
    assert "Fix: widen the bbox so that round(x_1) < round(x_2) and round(y_1) < round(y_2)" in message


def test_fractional_bbox_is_cropped_at_its_rounded_edges(tmp_path: Path) -> None:
    pixels = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    (tmp_path / "img").mkdir()
    for i in range(4):
        Image.fromarray(pixels).save(tmp_path / "img" / f"{i}.png")
    path = csv_file(tmp_path, bbox_rows("0.5,2.5,1.4,10.4"), header=BBOX_HEADER)
    with pytest.raises(DataValidationError, match=r"row 1 \(line 3, x_1=0.5, x_2=2.5, y_1=1.4, y_2=10.4 in .* 10x6\)"):
        read_dataset_csv(path, check_images="decode")
    path.write_text(path.read_text().replace("0.5,2.5,1.4,10.4", "0.5,10.4,1.4,5.5"))  # within 10 x 6 once rounded
    dataset = ImageBaseDataset(path, transform=np.asarray, check_images="decode")
    np.testing.assert_array_equal(dataset[1][keys.IMAGES], pixels[1:6, 0:10])  # rint: 0, 10, 1, 6 -> 5.5 to 6


# --- image files ----------------------------------------------------------------------------------------------


def one_image_frame(path: Path) -> pd.DataFrame:
    return pd.DataFrame(
        {"label": [0], "path": [str(path)], "split": ["train"], "is_query": [None], "is_gallery": [None]}
    )


def rgb_of(path: Path) -> np.ndarray:
    """The RGB pixels an image dataset hands to its transform for the image file ``path``."""
    seen: list[Image.Image] = []
    ImageBaseDataset(one_image_frame(path), transform=seen.append, check_images="decode")[0]
    assert seen[0].mode == "RGB"
    return np.asarray(seen[0])


def test_missing_image_at_construction(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=r"1 row\(s\) point to a file that does not exist \(row 0 \("):
        ImageBaseDataset(one_image_frame(tmp_path / "absent.png"))


@pytest.mark.parametrize(
    ("content", "error"),
    [(b"", "UnidentifiedImageError"), (b"not an image", "UnidentifiedImageError"), ("truncated", "OSError")],
)
def test_corrupt_image_up_front_and_at_load_time(tmp_path: Path, content: bytes | str, error: str) -> None:
    path = tmp_path / "a.png"
    if content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        content = path.read_bytes()[:300]
    path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(
        DataValidationError, match=rf"point to a file Pillow cannot decode as an image .*a\.png': {error}"
    ):
        ImageBaseDataset(one_image_frame(path), check_images="decode")
    dataset = ImageBaseDataset(one_image_frame(path), check_images="exists")
    with pytest.raises(
        DataValidationError, match=rf"Cannot read the image '{path}' \(row 0\): {error}: .* Fix: replace"
    ):
        dataset[0]


GRAY_16 = np.array([[0, 257, 1000, 51000, 65535]], dtype=np.uint16)
GRAY_16_AS_8 = [0, 1, 4, 198, 255]  # round(v / 257): 0, 1, 3.89, 198.44, 255


def save_16_bit(path: Path, mode: str) -> None:
    if mode == "I;16":
        Image.fromarray(GRAY_16).save(path)
    elif mode == "I;16B":
        Image.fromarray(GRAY_16.astype(">u2")).save(path)
    else:
        Image.fromarray(GRAY_16.astype(np.int32)).save(path)


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", "png"), ("I;16", "tif"), ("I;16B", "tif"), ("I", "tif")])
def test_16_bit_gray_is_scaled_to_8_bits(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"gray.{suffix}"
    save_16_bit(path, mode)
    with Image.open(path) as image:
        assert image.mode == mode
    rgb = rgb_of(path)
    assert rgb.shape == (1, 5, 3) and rgb[0, :, 0].tolist() == GRAY_16_AS_8
    assert (rgb == rgb[..., :1]).all()


@pytest.mark.parametrize(
    ("values", "found"), [([0, 70_000], "values from 0 to 70000"), ([-5, 10], "values from -5 to 10")]
)
def test_32_bit_integer_image_outside_16_bits(tmp_path: Path, values: list[int], found: str) -> None:
    path = tmp_path / "deep.tif"
    Image.fromarray(np.array([values], dtype=np.int32)).save(path)
    with pytest.raises(DataValidationError, match=rf"deep\.tif': a 'I' image \(2x1\) with {found}: omlcore reads 'I'"):
        ImageBaseDataset(one_image_frame(path), check_images="decode")
    with pytest.raises(
        DataValidationError, match=r"Cannot read the image '.*deep\.tif' \(row 0\): a 'I' image .* Fix: re-export"
    ):
        ImageBaseDataset(one_image_frame(path), check_images="exists")[0]


def test_float_image_in_0_1_is_scaled_by_255(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.25, 0.5, 0.875, 1.0]], dtype=np.float32)).save(path)  # exact in float32
    assert rgb_of(path)[0, :, 1].tolist() == [0, 64, 128, 223, 255]  # 63.75, 127.5 (half to even), 223.125


@pytest.mark.parametrize(
    ("value", "found"), [(2.0, "values from 0 to 2"), (-0.5, "values from -0.5 to 0"), (np.nan, "NaN values")]
)
def test_float_image_outside_0_1(tmp_path: Path, value: float, found: str) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, value]], dtype=np.float32)).save(path)
    with pytest.raises(DataValidationError) as info:
        ImageBaseDataset(one_image_frame(path), check_images="decode")
    message = str(info.value)
    assert f"float.tif': a 'F' image (2x1) with {found}: omlcore reads 'F' images as intensities in [0, 1]" in message
    assert "Fix: re-export the image as 8-bit or 16-bit (e.g. PNG), or scale its values to [0, 1]" in message


def composited(rgb: tuple[int, int, int], alpha: int) -> list[int]:
    """Hand rule: ``round((c * a + 255 * (255 - a)) / 255)`` per channel (white background)."""
    return [round((c * alpha + 255 * (255 - alpha)) / 255) for c in rgb]


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    pixels = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128], [10, 20, 30, 1]]], dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(path)
    rgb = rgb_of(path)
    assert rgb[0].tolist() == [[200, 100, 0], [255, 255, 255], [227, 177, 127], [254, 254, 254]]
    assert rgb[0, 2].tolist() == composited((200, 100, 0), 128)


def test_gray_with_alpha_is_composited_over_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[100, 128], [100, 255], [0, 0]]], dtype=np.uint8), mode="LA").save(path)
    assert rgb_of(path)[0].tolist() == [[177] * 3, [100] * 3, [255] * 3]


def test_palette_and_gray_with_a_transparent_colour(tmp_path: Path) -> None:
    palette = tmp_path / "p.png"
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(palette, transparency=0)  # red is transparent
    assert rgb_of(palette)[0].tolist() == [[255, 255, 255], [0, 255, 0]]
    gray = tmp_path / "l.png"
    Image.fromarray(np.array([[50, 60]], dtype=np.uint8)).save(gray, transparency=50)
    assert rgb_of(gray)[0].tolist() == [[255] * 3, [60] * 3]


def test_16_bit_gray_with_a_transparent_value(tmp_path: Path) -> None:
    path = tmp_path / "gray16.png"
    Image.fromarray(GRAY_16).save(path, transparency=1000)
    assert rgb_of(path)[0, :, 2].tolist() == [0, 1, 255, 198, 255]


def test_cmyk_bilevel_gray_and_palette_without_transparency(tmp_path: Path) -> None:
    Image.new("CMYK", (1, 1), (10, 20, 30, 40)).save(tmp_path / "cmyk.tif")
    # round((255 - C) * (255 - K) / 255): 206.57, 198.14, 189.71
    assert rgb_of(tmp_path / "cmyk.tif")[0, 0].tolist() == [207, 198, 190]
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1").save(tmp_path / "bits.png")
    assert rgb_of(tmp_path / "bits.png")[0].tolist() == [[0] * 3, [255] * 3]
    Image.fromarray(np.array([[7, 200]], dtype=np.uint8)).save(tmp_path / "gray.png")
    assert rgb_of(tmp_path / "gray.png")[0].tolist() == [[7] * 3, [200] * 3]
    palette = Image.new("P", (1, 1))
    palette.putpalette([1, 2, 3] + [0] * 765)
    palette.save(tmp_path / "p.png")
    assert rgb_of(tmp_path / "p.png")[0].tolist() == [[1, 2, 3]]
