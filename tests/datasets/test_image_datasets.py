"""Image datasets on real PNG / JPEG files: items, crops, transforms, DataLoader batches and load-time errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from omlcore import keys
from omlcore.config import ConfigError
from omlcore.datasets import ImageBaseDataset, ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.errors import DataValidationError
from omlcore.registry import Registry
from omlcore.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tensor


def pixels_of(image: torch.Tensor) -> np.ndarray:
    """A ``to_tensor`` output back to uint8 ``H x W x 3`` pixels."""
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_labeled_dataset_items(image_set) -> None:
    dataset = ImageLabeledDataset(image_set.csv, transform=to_tensor())
    train = image_set.df[image_set.df["split"] == "train"]
    assert len(dataset) == len(train) == 12
    assert dataset.labels.dtype == np.int64
    assert dataset.get_labels().tolist() == train["label"].tolist()
    assert dataset.categories is not None and dataset.categories.tolist() == train["category"].tolist()
    assert dataset.paths == [str(image_set.root / path) for path in train["path"]]
    # sequences seq_0, seq_1, seq_2 -> codes 0, 1, 2 (sorted); rows without a sequence -> -1
    assert dataset.sequences is not None
    assert dataset.sequences.tolist() == [0, 0, -1, -1, 1, 1, -1, -1, 2, 2, -1, -1]

    item = dataset[4]
    assert set(item) == {keys.IMAGES, keys.LABELS, keys.INDEX, keys.PATHS, keys.CATEGORIES, keys.SEQUENCES}
    assert item[keys.LABELS] == 1 and item[keys.INDEX] == 4 and item[keys.SEQUENCES] == 1
    assert item[keys.PATHS] == str(image_set.root / "label_1/0.png") and item[keys.CATEGORIES] == "bags"
    assert item[keys.IMAGES].dtype == torch.float32
    np.testing.assert_array_equal(pixels_of(item[keys.IMAGES]), image_set.pixels["label_1/0.png"])
    assert dataset[-1][keys.INDEX] == 11
    with pytest.raises(IndexError, match="index 12 is out of range for a dataset of 12 items"):
        dataset[12]


def test_jpeg_items_match_the_decoded_file(image_set) -> None:
    dataset = ImageLabeledDataset(image_set.csv, transform=to_tensor())
    np.testing.assert_array_equal(pixels_of(dataset[3][keys.IMAGES]), image_set.pixels["label_0/3.jpg"])


def test_bbox_crop_equals_the_numpy_slice(image_set) -> None:
    dataset = ImageQueryGalleryDataset(image_set.csv, transform=to_tensor())
    cropped = [i for i, path in enumerate(dataset.paths) if path.endswith("/1.png")]
    assert len(cropped) == 3
    for i in cropped:
        row = image_set.df.iloc[12 + i]
        x_1, x_2, y_1, y_2 = (int(row[column]) for column in ("x_1", "x_2", "y_1", "y_2"))
        expected = image_set.pixels[row["path"]][y_1:y_2, x_1:x_2]
        np.testing.assert_array_equal(pixels_of(dataset[i][keys.IMAGES]), expected)


def test_query_gallery_dataset(image_set) -> None:
    dataset = ImageQueryGalleryDataset(image_set.csv, transform=to_tensor())
    assert len(dataset) == 12 and dataset.labels.tolist() == [3] * 4 + [4] * 4 + [5] * 4
    assert dataset.is_query.tolist() == [True, True, False, False] * 3
    assert dataset.is_gallery.tolist() == [False, True, True, True] * 3
    assert dataset.get_query_ids().tolist() == [0, 1, 4, 5, 8, 9]
    assert dataset.get_gallery_ids().tolist() == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    item = dataset[5]
    assert item[keys.IS_QUERY] is True and item[keys.IS_GALLERY] is True and item[keys.LABELS] == 4
    assert dataset[2][keys.IS_QUERY] is False


def test_split_none_uses_every_row_and_bad_split_is_rejected(image_set) -> None:
    assert len(ImageBaseDataset(image_set.csv, transform=to_tensor())) == 24
    assert len(ImageLabeledDataset(image_set.csv, transform=to_tensor(), split=None)) == 24
    with pytest.raises(ValueError, match="split must be 'train', 'validation' or None"):
        ImageLabeledDataset(image_set.csv, split="val")


def test_missing_split_rows_are_an_error(image_set) -> None:
    train_only = image_set.df[image_set.df["split"] == "train"]
    with pytest.raises(DataValidationError, match=r"The dataframe has no rows with split == 'validation'\. Fix:"):
        ImageQueryGalleryDataset(train_only, image_set.root)


def test_csv_and_dataframe_constructors_agree(image_set) -> None:
    from_csv = ImageQueryGalleryDataset(image_set.csv, transform=to_tensor())
    from_df = ImageQueryGalleryDataset(image_set.df, image_set.root, transform=to_tensor())
    assert from_csv.paths == from_df.paths
    np.testing.assert_array_equal(from_csv.labels, from_df.labels)
    np.testing.assert_array_equal(from_csv.is_query, from_df.is_query)
    np.testing.assert_array_equal(from_csv.sequences, from_df.sequences)
    for i in range(len(from_csv)):
        a, b = from_csv[i], from_df[i]
        assert a.keys() == b.keys()
        assert torch.equal(a.pop(keys.IMAGES), b.pop(keys.IMAGES))
        assert a == b


def test_default_transform_normalizes_at_native_size_as_oml(image_set) -> None:
    image = ImageLabeledDataset(image_set.csv)[0][keys.IMAGES]
    raw = image_set.pixels["label_0/0.png"]
    assert image.shape == (3, *raw.shape[:2]) and image.dtype == torch.float32  # 30 x 40: no resize to 224 x 224
    expected = (raw.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert torch.equal(image, ImageLabeledDataset(image_set.csv, transform="normalize")[0][keys.IMAGES])


def test_transform_receives_an_rgb_pil_image(image_set, tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((6, 5), 77, dtype=np.uint8), mode="L").save(gray)
    df = pd.DataFrame({"label": [0], "path": [str(gray)], "split": ["train"], "is_query": [None], "is_gallery": [None]})
    seen: list[Image.Image] = []
    item = ImageLabeledDataset(df, transform=lambda image: seen.append(image) or image.size)[0]
    assert seen[0].mode == "RGB" and item[keys.IMAGES] == (5, 6)


@pytest.fixture
def transform_registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry with the presets registered, the one the resolver uses."""
    registry = Registry()
    registrar = registry.registrar("transform", "test")
    for name in ("resize_normalize", "to_tensor"):
        registrar.register(name, f"omlcore.transforms.presets:{name}")
    monkeypatch.setattr("omlcore.config.components.get_registry", lambda: registry)
    return registry


def test_transform_by_registered_name_or_config(image_set, transform_registry: Registry) -> None:
    by_name = ImageLabeledDataset(image_set.csv, transform="to_tensor")
    np.testing.assert_array_equal(pixels_of(by_name[0][keys.IMAGES]), image_set.pixels["label_0/0.png"])
    by_config = ImageLabeledDataset(image_set.csv, transform={"name": "resize_normalize", "args": {"size": 32}})
    assert by_config[0][keys.IMAGES].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match=r"Unknown transform 'to_tensr'\. Did you mean: to_tensor"):
        ImageLabeledDataset(image_set.csv, transform="to_tensr")


def test_arguments_of_a_wrong_type_are_rejected(image_set) -> None:
    with pytest.raises(TypeError, match="transform must be a callable, the name of a registered transform"):
        ImageLabeledDataset(image_set.csv, transform=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a pandas DataFrame or the path of a CSV file, got dict"):
        ImageLabeledDataset(image_set.df.to_dict())  # type: ignore[arg-type]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_through_a_dataloader(image_set, num_workers: int) -> None:
    dataset = ImageQueryGalleryDataset(image_set.csv, transform="resize_normalize")  # the images differ in size
    loader = DataLoader(dataset, batch_size=5, num_workers=num_workers)
    batches = list(loader)
    assert [len(batch[keys.PATHS]) for batch in batches] == [5, 5, 2]
    first = batches[0]
    assert first[keys.IMAGES].shape == (5, 3, 224, 224)
    assert first[keys.LABELS].dtype == torch.int64 and first[keys.IS_QUERY].dtype == torch.bool
    assert torch.cat([batch[keys.INDEX] for batch in batches]).tolist() == list(range(12))
    assert torch.cat([batch[keys.LABELS] for batch in batches]).tolist() == dataset.labels.tolist()
    assert torch.cat([batch[keys.IS_GALLERY] for batch in batches]).tolist() == dataset.is_gallery.tolist()
    assert torch.cat([batch[keys.SEQUENCES] for batch in batches]).tolist() == dataset.sequences.tolist()
    assert [category for batch in batches for category in batch[keys.CATEGORIES]] == dataset.categories.tolist()
    assert torch.equal(first[keys.IMAGES][3], dataset[3][keys.IMAGES])


def test_corrupt_image_error_names_file_and_row(fresh_image_set) -> None:
    broken = fresh_image_set.root / "label_0" / "2.png"
    broken.write_bytes(b"\x89PNG garbage, not an image")
    dataset = ImageLabeledDataset(fresh_image_set.csv)  # check_images="exists": the file is there
    dataset[1]
    with pytest.raises(DataValidationError) as info:
        dataset[2]
    message = str(info.value)
    assert f"Cannot read the image '{broken}' (row 2, CSV line 4 of '{fresh_image_set.csv}')" in message
    assert "UnidentifiedImageError" in message and "Fix: replace or re-export the file" in message
    assert isinstance(info.value.__cause__, UnidentifiedImageError)

    from_df = ImageLabeledDataset(fresh_image_set.df, fresh_image_set.root)
    with pytest.raises(DataValidationError, match=r"Cannot read the image '.*2\.png' \(row 2\): "):
        from_df[2]


def test_decode_check_finds_corrupt_files_up_front(fresh_image_set) -> None:
    (fresh_image_set.root / "label_4" / "3.jpg").write_bytes(b"garbage")
    ImageLabeledDataset(fresh_image_set.csv, check_images="decode")  # the broken file is a validation row
    with pytest.raises(DataValidationError, match=r"row 19 \(line 21, '.*label_4/3\.jpg': UnidentifiedImageError"):
        ImageQueryGalleryDataset(fresh_image_set.csv, check_images="decode")


def test_missing_file_is_found_at_construction(fresh_image_set) -> None:
    (fresh_image_set.root / "label_1" / "0.png").unlink()
    with pytest.raises(DataValidationError) as info:
        ImageLabeledDataset(fresh_image_set.csv)
    message = str(info.value)
    assert "1 row(s) point to a file that does not exist (row 4 (line 6, " in message
    assert f"Relative paths were resolved against dataset_root '{fresh_image_set.root}'. Fix:" in message
    ImageLabeledDataset(fresh_image_set.csv, check_images="none")


def test_bbox_outside_the_image_is_an_error_at_load_time(image_set) -> None:
    df = image_set.df.copy()
    df.loc[1, "x_2"] = 500.0
    dataset = ImageLabeledDataset(df, image_set.root, transform=to_tensor())
    with pytest.raises(DataValidationError) as info:
        dataset[1]
    message = str(info.value)
    assert "The bbox of row 1 (x_1=3, x_2=500, y_1=2, y_2=17) does not lie inside its image" in message
    assert f"'{image_set.root / 'label_0/1.png'}' of size 44x30 (width x height)" in message
    assert "Fix: correct or clip the bbox" in message


def test_invalid_table_is_rejected_before_any_split_is_selected(image_set) -> None:
    df = image_set.df.copy()
    df.loc[20, "split"] = "test"  # a validation row: the training dataset rejects the table too
    for dataset_class in (ImageLabeledDataset, ImageQueryGalleryDataset):
        with pytest.raises(DataValidationError, match=r"Column 'split': 1 row\(s\) have an unknown value \(row 20"):
            dataset_class(df, image_set.root)


def test_lone_queries_only_matter_for_the_validation_split(image_set) -> None:
    df = image_set.df.copy()
    df.loc[df["label"] == 5, "is_gallery"] = False
    df.loc[df["label"] == 5, "is_query"] = True
    assert len(ImageLabeledDataset(df, image_set.root)) == 12
    with pytest.raises(DataValidationError, match=r"query row\(s\) have no gallery item with the same label"):
        ImageQueryGalleryDataset(df, image_set.root)
    assert len(ImageQueryGalleryDataset(df, image_set.root, allow_lone_queries=True)) == 12


def test_repr_names_the_origin(image_set) -> None:
    dataset = ImageLabeledDataset(image_set.csv, transform=to_tensor())
    assert repr(dataset) == f"ImageLabeledDataset(12 items, split='train', from '{image_set.csv}')"
