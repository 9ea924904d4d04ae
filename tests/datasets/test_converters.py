"""Converters on tiny fake trees of each dataset's original layout: the CSV is valid and is what was hand-computed."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from omlcore.datasets import read_dataset_csv
from omlcore.datasets.converters import (
    CONVERTERS,
    DatasetLayoutError,
    build_cars_df,
    build_cub_df,
    build_inshop_df,
    build_sop_df,
    convert,
)
from omlcore.errors import DataValidationError, MissingDependencyError

WIDTH, HEIGHT = 24, 32  # every fake image; bboxes below fit inside
NAN = math.nan


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (WIDTH, HEIGHT), (90, 120, 150)).save(path, format="JPEG")


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def rows(csv: Path, columns: list[str]) -> list[tuple[Any, ...]]:
    """The validated CSV (images decoded, bboxes inside them) as tuples; paths relative to the CSV's folder."""
    df = read_dataset_csv(csv, check_images="decode")
    df["path"] = [Path(path).relative_to(csv.parent).as_posix() for path in df["path"]]
    return [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row) for row in df[columns].values]


# --- CUB-200-2011 --------------------------------------------------------------------------------------------------

CUB_IMAGES = [  # image id, name, class, is_training_image, bbox (x, y, width, height)
    (1, "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg", 1, 1, (1.0, 2.0, 20.0, 25.0)),
    (2, "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg", 1, 0, (0.0, 0.0, 24.0, 32.0)),
    (3, "100.Brown_Pelican/Brown_Pelican_0001_94.jpg", 100, 1, (3.0, 4.0, 5.0, 6.0)),
    (4, "100.Brown_Pelican/Brown_Pelican_0002_100.jpg", 100, 0, (2.5, 2.5, 10.0, 10.0)),
    (5, "101.White_Pelican/White_Pelican_0001_97.jpg", 101, 1, (0.0, 1.0, 2.0, 3.0)),
    (6, "101.White_Pelican/White_Pelican_0002_98.jpg", 101, 0, (4.0, 4.0, 4.0, 4.0)),
    (7, "200.Common_Yellowthroat/Common_Yellowthroat_0001_190.jpg", 200, 1, (1.0, 1.0, 1.0, 1.0)),
    (8, "200.Common_Yellowthroat/Common_Yellowthroat_0002_191.jpg", 200, 0, (6.0, 7.0, 8.0, 9.0)),
]


@pytest.fixture
def cub(tmp_path: Path) -> Path:
    root = tmp_path / "CUB_200_2011"
    for _, name, *_ in CUB_IMAGES:
        image(root / "images" / name)
    write(root / "images.txt", [f"{i} {name}" for i, name, *_ in CUB_IMAGES])
    write(root / "image_class_labels.txt", [f"{i} {label}" for i, _, label, *_ in reversed(CUB_IMAGES)])
    write(root / "train_test_split.txt", [f"{i} {flag}" for i, _, _, flag, _ in CUB_IMAGES])
    write(root / "bounding_boxes.txt", [f"{i} {x} {y} {w} {h}" for i, *_, (x, y, w, h) in CUB_IMAGES])
    write(
        root / "classes.txt",
        [
            "1 001.Black_footed_Albatross",
            "100 100.Brown_Pelican",
            "101 101.White_Pelican",
            "200 200.Common_Yellowthroat",
        ],
    )
    return root


def test_cub_splits_by_class_with_bboxes(cub: Path) -> None:
    csv = convert("cub", cub)
    assert csv == cub / "df.csv"
    expected = []
    for _, name, label, _, (x, y, w, h) in CUB_IMAGES:
        validation = label > 100  # also the query / gallery flags: empty on train rows reads back as False
        split = "validation" if validation else "train"
        expected.append((label, f"images/{name}", split, validation, validation, x, x + w, y, y + h))
    assert rows(csv, ["label", "path", "split", "is_query", "is_gallery", "x_1", "x_2", "y_1", "y_2"]) == expected
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert df.loc[0, "class_name"] == "001.Black_footed_Albatross"
    assert df.loc[0, "is_query"] == "" and df.loc[7, "is_query"] == "True"  # as OML: empty flags on train rows


def test_cub_files_split_and_no_bboxes(cub: Path) -> None:
    df = build_cub_df(cub, split="files", bboxes=False)
    assert df["split"].tolist() == ["train", "validation"] * 4
    assert not {"x_1", "x_2", "y_1", "y_2"} & set(df.columns)
    (cub / "bounding_boxes.txt").unlink()
    (cub / "classes.txt").unlink()
    assert list(build_cub_df(cub, bboxes=False).columns) == ["label", "path", "split", "is_query", "is_gallery"]


def test_cub_in_the_wrong_folder_names_the_file_and_the_layout(cub: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"file 'images.txt' not found in .*images'\. Fix") as error:
        build_cub_df(cub / "images")
    assert "image_class_labels.txt" in str(error.value) and "bounding_boxes.txt" in str(error.value)
    with pytest.raises(DatasetLayoutError, match=r"CUB_200_2011/nope', which is not an existing folder"):
        build_cub_df(cub / "nope")
    (cub / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"'bounding_boxes\.txt' not found"):
        build_cub_df(cub)
    write(cub / "image_class_labels.txt", ["1 1", "2 1"])
    with pytest.raises(DataValidationError, match=r"image_class_labels.txt' has no line for image_id 3, 4, 5, 6, 7"):
        build_cub_df(cub, bboxes=False)
    write(cub / "images.txt", ["1"])
    with pytest.raises(DataValidationError, match=r"images.txt': line\(s\) 1 have fewer than 2 fields"):
        build_cub_df(cub)


# --- Stanford Cars -------------------------------------------------------------------------------------------------

# fname, class, bbox (x1, y1, x2, y2), test image?
CARS_TRAIN = [("00001.jpg", 1, (1, 2, 20, 30)), ("00002.jpg", 98, (0, 0, 23, 31)), ("00003.jpg", 99, (5, 6, 7, 8))]
CARS_TEST = [("00001.jpg", 1, (2, 3, 4, 5)), ("00002.jpg", 98, (1, 1, 2, 2)), ("00003.jpg", 99, (9, 9, 10, 10))]
CAR_NAMES = [f"Car Model {k} 2012" for k in range(1, 197)]


def expected_cars(folders: tuple[str, str]) -> list[tuple[Any, ...]]:
    expected = []
    for records, folder in zip((CARS_TRAIN, CARS_TEST), folders, strict=True):
        for fname, label, (x1, y1, x2, y2) in records:
            validation = label > 98
            split = "validation" if validation else "train"
            path = folder.format(name=CAR_NAMES[label - 1]) + fname
            expected.append((label, path, split, validation, validation, x1, x2, y1, y2, CAR_NAMES[label - 1]))
    return expected


CARS_COLUMNS = ["label", "path", "split", "is_query", "is_gallery", "x_1", "x_2", "y_1", "y_2", "class_name"]


def test_cars_from_the_csv_layout(tmp_path: Path) -> None:
    root = tmp_path / "CARS196"
    for part, records in (("train", CARS_TRAIN), ("test", CARS_TEST)):
        write(
            root / f"anno_{part}.csv",
            [f"{name},{x1},{y1},{x2},{y2},{label}" for name, label, (x1, y1, x2, y2) in records],
        )
        for name, label, _ in records:
            image(root / "car_data" / "car_data" / part / CAR_NAMES[label - 1] / name)
    write(root / "names.csv", CAR_NAMES)
    csv = convert("cars", root)
    folders = ("car_data/car_data/train/{name}/", "car_data/car_data/test/{name}/")
    assert rows(csv, CARS_COLUMNS) == expected_cars(folders)
    assert build_cars_df(root, split="files")["split"].tolist() == ["train"] * 3 + ["validation"] * 3
    train_csv, before = root / "anno_train.csv", build_cars_df(root)
    lines = train_csv.read_text().splitlines()
    write(train_csv, ["Image,x1,y1,x2,y2,Class", *lines])  # some exports have a header line
    pd.testing.assert_frame_equal(build_cars_df(root), before)
    write(train_csv, [*lines, "00004.jpg,1,2,three,4,5"])
    with pytest.raises(DataValidationError, match=r"anno_train\.csv' line 4 is not <fname>,<x1>"):
        build_cars_df(root)
    write(train_csv, lines)
    (root / "car_data" / "car_data" / "test" / CAR_NAMES[97] / "00002.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 image\(s\) of 'anno_test.csv' are not under .*first: 00002.jpg"):
        build_cars_df(root)


def mat_struct(records: list[tuple[Any, ...]], fields: list[str]) -> np.ndarray:
    return np.array(records, dtype=[(field, "O") for field in fields]).reshape(1, -1)


def test_cars_from_the_devkit(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "CARS196"
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    for part, records, file in (
        ("train", CARS_TRAIN, root / "devkit" / "cars_train_annos.mat"),
        ("test", CARS_TEST, root / "cars_test_annos_withlabels.mat"),
    ):
        file.parent.mkdir(parents=True, exist_ok=True)
        entries = [(*box, np.uint8(label), name) for name, label, box in records]
        scipy_io.savemat(file, {"annotations": mat_struct(entries, fields)})
        for name, _, _ in records:
            image(root / f"cars_{part}" / name)
    scipy_io.savemat(
        root / "devkit" / "cars_meta.mat", {"class_names": np.array(CAR_NAMES, dtype=object).reshape(1, -1)}
    )
    csv = convert("cars", root)
    assert rows(csv, CARS_COLUMNS) == expected_cars(("cars_train/", "cars_test/"))


def test_cars_from_cars_annos_mat(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "CARS196"
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    records = []
    for number, (_, label, box) in enumerate(CARS_TRAIN + CARS_TEST, start=1):
        path = f"car_ims/{number:06d}.jpg"
        image(root / path)
        records.append((path, *box, label, np.uint8(number > 3)))
    scipy_io.savemat(
        root / "cars_annos.mat",
        {"annotations": mat_struct(records, fields), "class_names": np.array(CAR_NAMES, dtype=object).reshape(1, -1)},
    )
    df = build_cars_df(root, split="files")
    assert df["path"].tolist() == [f"car_ims/{number:06d}.jpg" for number in range(1, 7)]
    assert df["split"].tolist() == ["train"] * 3 + ["validation"] * 3
    assert df["label"].tolist() == [1, 98, 99, 1, 98, 99] and df["class_name"].iloc[2] == CAR_NAMES[98]


def test_cars_mat_files_without_scipy_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "CARS196"
    write(root / "devkit" / "cars_train_annos.mat", ["not really"])
    write(root / "cars_test_annos_withlabels.mat", ["not really"])
    (root / "cars_train").mkdir()
    (root / "cars_test").mkdir()
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(MissingDependencyError, match=r"(?s)needs scipy.*pip install scipy.*anno_train\.csv") as error:
        build_cars_df(root)
    assert isinstance(error.value, ImportError)


def test_cars_in_an_unknown_layout_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"none of 'cars_annos\.mat', 'devkit/cars_train_annos\.mat'") as error:
        build_cars_df(tmp_path)
    assert "car_ims/" in str(error.value) and "anno_test.csv" in str(error.value)


# --- Stanford Online Products --------------------------------------------------------------------------------------

SOP_TRAIN = [  # image_id, class_id, super_class_id, path
    (1, 1, 1, "bicycle_final/111085122871_0.JPG"),
    (2, 1, 1, "bicycle_final/111085122871_1.JPG"),
    (3, 2, 2, "cabinet_final/110715681235_0.JPG"),
    (4, 2, 2, "cabinet_final/110715681235_1.JPG"),
]
SOP_TEST = [
    (5, 11319, 1, "bicycle_final/251104127049_0.JPG"),
    (6, 11319, 1, "bicycle_final/251104127049_1.JPG"),
    (7, 11320, 12, "toaster_final/400416094473_0.JPG"),
    (8, 11320, 12, "toaster_final/400416094473_1.JPG"),
]


@pytest.fixture
def sop(tmp_path: Path) -> Path:
    root = tmp_path / "Stanford_Online_Products"
    for name, records in (("Ebay_train.txt", SOP_TRAIN), ("Ebay_test.txt", SOP_TEST)):
        write(root / name, ["image_id class_id super_class_id path", *(" ".join(map(str, r)) for r in records)])
        for *_, path in records:
            image(root / path)
    return root


def test_sop_takes_the_given_files_as_splits_and_the_super_class_as_category(sop: Path) -> None:
    csv = convert("sop", sop)
    expected = [(label, path, "train", False, False, path.split("_final")[0]) for _, label, _, path in SOP_TRAIN] + [
        (label, path, "validation", True, True, path.split("_final")[0]) for _, label, _, path in SOP_TEST
    ]
    assert rows(csv, ["label", "path", "split", "is_query", "is_gallery", "category"]) == expected


def test_sop_errors_name_the_file(sop: Path) -> None:
    write(sop / "Ebay_test.txt", ["image_id class path", "5 11319 bicycle_final/a.JPG"])
    with pytest.raises(DataValidationError, match=r"Ebay_test.txt': expected a header naming image_id class_id"):
        build_sop_df(sop)
    (sop / "Ebay_train.txt").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)file 'Ebay_train\.txt' not found.*Ebay_test\.txt"):
        build_sop_df(sop)


# --- DeepFashion In-shop -------------------------------------------------------------------------------------------

INSHOP = [  # image_name, item_id, status, bbox (x_1, y_1, x_2, y_2)
    ("img/MEN/Denim/id_00000001/01_1_front.jpg", "id_00000001", "train", (1, 2, 20, 30)),
    ("img/MEN/Denim/id_00000001/01_2_side.jpg", "id_00000001", "train", (0, 0, 24, 32)),
    ("img/WOMEN/Dresses/id_00000005/01_1_front.jpg", "id_00000005", "train", (1, 1, 2, 2)),
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "query", (3, 4, 5, 6)),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "gallery", (4, 4, 8, 8)),
    ("img/WOMEN/Dresses/id_00000002/02_3_back.jpg", "id_00000002", "gallery", (1, 1, 9, 9)),
    ("img/WOMEN/Denim/id_00000003/01_1_front.jpg", "id_00000003", "query", (2, 2, 3, 3)),
    ("img/WOMEN/Denim/id_00000003/01_2_side.jpg", "id_00000003", "gallery", (5, 5, 6, 6)),
]


@pytest.fixture
def inshop(tmp_path: Path) -> Path:
    root = tmp_path / "DeepFashion_InShop"
    partition = [f"{name}   {item}   {status}" for name, item, status, _ in INSHOP]
    write(root / "list_eval_partition.txt", [str(len(INSHOP)), "image_name item_id evaluation_status", *partition])
    boxes = [f"{name} 1 1 {x1} {y1} {x2} {y2}" for name, _, _, (x1, y1, x2, y2) in INSHOP]
    header = "image_name clothes_type pose_type x_1 y_1 x_2 y_2"
    write(root / "list_bbox_inshop.txt", [str(len(INSHOP)), header, *reversed(boxes)])
    for name, *_ in INSHOP:
        image(root / name)
        image(root / name.replace("img/", "img_highres/"))
    return root


def test_inshop_keeps_its_query_gallery_partition(inshop: Path) -> None:
    csv = convert("inshop", inshop)
    expected = []
    for name, item, status, _ in INSHOP:
        if item == "id_00000005":
            continue  # a train item with a single image
        validation = status != "train"
        path = name.replace("img/", "img_highres/")
        category = name.split("/")[2]
        expected.append(
            (
                int(item[3:]),
                path,
                "validation" if validation else "train",
                status == "query",
                status == "gallery",
                category,
            )
        )
    assert rows(csv, ["label", "path", "split", "is_query", "is_gallery", "category"]) == expected
    assert len(build_inshop_df(inshop, drop_single_train_items=False)) == len(INSHOP)


def test_inshop_bboxes_go_with_the_small_images(inshop: Path) -> None:
    csv = convert("inshop", inshop, images="img", bboxes=True)
    boxes = rows(csv, ["path", "x_1", "x_2", "y_1", "y_2"])
    assert boxes[0] == ("img/MEN/Denim/id_00000001/01_1_front.jpg", 1, 20, 2, 30)
    assert len(boxes) == len(INSHOP) - 1
    with pytest.raises(ValueError, match="pixels of the 256 x 256 images"):
        build_inshop_df(inshop, bboxes=True)
    write(inshop / "list_eval_partition.txt", ["1", "image_name item_id evaluation_status", "img/a.jpg id_1 test"])
    with pytest.raises(DataValidationError, match=r"evaluation_status \['test'\]"):
        build_inshop_df(inshop)


# --- convert() -----------------------------------------------------------------------------------------------------


def test_convert_writes_absolute_paths_elsewhere_and_validates_first(sop: Path, tmp_path: Path) -> None:
    elsewhere = convert("sop", sop, tmp_path / "out" / "sop.csv")
    df = pd.read_csv(elsewhere, dtype=str)
    assert df["path"].map(lambda path: Path(path).is_absolute()).all()
    read_dataset_csv(elsewhere)  # found without a dataset_root
    (sop / SOP_TEST[0][3]).unlink()
    with pytest.raises(DataValidationError, match="point to a file that does not exist"):
        convert("sop", sop, tmp_path / "again.csv")
    assert not (tmp_path / "again.csv").exists()
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["sop.csv"]  # no partial file left


def test_convert_names_the_known_datasets(tmp_path: Path) -> None:
    assert set(CONVERTERS) == {"cub", "cars", "sop", "inshop"}
    with pytest.raises(ValueError, match=r"No converter for 'cubb'. Did you mean 'cub'\? Converters: cub, cars"):
        convert("cubb", tmp_path)
