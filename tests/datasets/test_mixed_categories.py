"""Labels in several categories: OML's datasets have them; the format accepts them with a short warning, per-category
metrics count each query under its own row's category, and only category-balanced samplers refuse them."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from omlcore import keys
from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset, validate_dataframe
from omlcore.errors import DataValidationError
from omlcore.metrics import EmbeddingMetrics
from omlcore.samplers import CategoryBalanceSampler

#: A CSV as OML writes it (train rows with empty query / gallery flags). Label 1 is in categories 'a' and 'b', in
#: both splits; the validation rows' 1-d embeddings are in EMBEDDINGS.
OML_CSV = """label,path,split,is_query,is_gallery,category
1,train/0.png,train,,,a
1,train/1.png,train,,,b
3,train/2.png,train,,,b
3,train/3.png,train,,,b
0,val/0.png,validation,True,True,a
0,val/1.png,validation,True,True,a
1,val/2.png,validation,True,True,a
1,val/3.png,validation,True,True,b
2,val/4.png,validation,True,True,b
2,val/5.png,validation,True,True,b
"""
#: Nearest other item: 0 -> 1 (hit), 1 -> 0 (hit), 2 -> 1 (miss), 3 -> 4 (miss), 4 -> 3 (miss), 5 -> 4 (hit).
EMBEDDINGS = torch.tensor([[0.0], [0.1], [1.0], [5.0], [5.1], [9.0]])


@pytest.fixture
def oml_csv(tmp_path: Path) -> Path:
    for name in ("train", "val"):
        (tmp_path / name).mkdir()
    for path in pd.read_csv(io.StringIO(OML_CSV))["path"]:
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / path)
    csv = tmp_path / "df.csv"
    csv.write_text(OML_CSV, encoding="utf-8")
    return csv


def test_oml_csv_with_a_label_in_two_categories_loads_with_one_warning(oml_csv: Path) -> None:
    with pytest.warns(UserWarning) as record:
        dataset = ImageQueryGalleryDataset(oml_csv, transform="to_tensor", check_images="decode")
    assert len(record) == 1  # the check of the selected rows' files does not warn again
    assert str(record[0].message) == (
        f"Dataset CSV '{oml_csv}', column 'category': 1 label(s) appear in more than one category (label 1: 'a', "
        "'b'). Accepted, as in OML: per-category metrics count a query under its own row's category; "
        "category-balanced samplers refuse such labels."
    )
    assert dataset.categories is not None and dataset.categories.tolist() == ["a", "a", "a", "b", "b", "b"]


def test_per_category_metrics_count_a_query_under_its_own_rows_category(oml_csv: Path) -> None:
    with pytest.warns(UserWarning, match="appear in more than one category"):
        dataset = ImageQueryGalleryDataset(oml_csv, transform="to_tensor")
    metrics = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), pcf_variance=())
    for batch in DataLoader(dataset, batch_size=4):
        metrics.update({**batch, keys.EMBEDDINGS: EMBEDDINGS[batch[keys.INDEX]]})
    result = metrics.compute()
    # by label -> category ('b' for label 1, its last row), 'a' would be 2/2 and 'b' 1/4
    assert result["OVERALL/cmc/1"] == pytest.approx(3 / 6)
    assert result["a/cmc/1"] == pytest.approx(2 / 3)
    assert result["b/cmc/1"] == pytest.approx(1 / 3)


def test_category_balanced_samplers_refuse_a_label_in_two_categories(oml_csv: Path) -> None:
    with pytest.warns(UserWarning, match="appear in more than one category"):
        train = ImageLabeledDataset(oml_csv, transform="to_tensor")
    with pytest.raises(DataValidationError) as info:
        train.get_label2category("CategoryBalanceSampler")
    assert str(info.value) == (
        "CategoryBalanceSampler needs one category per label, but 1 label(s) appear in more than one category "
        "(label 1: 'a', 'b'). Fix: correct their categories, give each category's items their own labels, or use a "
        "sampler without categories ('balance')."
    )
    train.categories = np.array(["b", "b", "b", "b"])
    label2category = train.get_label2category("CategoryBalanceSampler")
    assert label2category == {1: "b", 3: "b"}
    CategoryBalanceSampler(train.get_labels(), label2category, n_categories=1, n_labels=2, n_instances=2)


def test_label2category_without_the_category_column(oml_csv: Path) -> None:
    df = pd.read_csv(oml_csv).drop(columns="category")
    train = ImageLabeledDataset(df, oml_csv.parent, transform="to_tensor")
    with pytest.raises(DataValidationError, match=r"The dataframe has no 'category' column, which SomeSampler needs"):
        train.get_label2category("SomeSampler")


def thousands_of_mixed_labels(n_labels: int, n_categories: int, category_name: str) -> pd.DataFrame:
    labels = np.repeat(np.arange(n_labels), n_categories)
    return pd.DataFrame(
        {
            "label": labels,
            "path": [f"img/{i}.png" for i in range(len(labels))],
            "split": "validation",
            "is_query": True,
            "is_gallery": True,
            "category": [category_name.format(i % n_categories) for i in range(len(labels))],
        }
    )


@pytest.mark.parametrize(
    ("n_categories", "category_name", "limit"),
    [(2, "category_{}", 400), (40, "women/blouses_shirts_and_tops_{}", 450)],
)
def test_messages_stay_short_for_thousands_of_labels(n_categories: int, category_name: str, limit: int) -> None:
    df = thousands_of_mixed_labels(2000, n_categories, category_name)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        validate_dataframe(df, check_images="none")
    (warning,) = record
    assert "2000 label(s) appear in more than one category (label 0: " in str(warning.message)
    assert "; and 1997 more)" in str(warning.message) and len(str(warning.message)) < limit
    with pytest.warns(UserWarning, match="appear in more than one category"):
        dataset = ImageLabeledDataset(df, transform="to_tensor", split=None, check_images="none")
    with pytest.raises(DataValidationError) as info:
        dataset.get_label2category("DistinctCategoryBalanceSampler")
    assert str(info.value).startswith("DistinctCategoryBalanceSampler needs one category per label, but 2000 label")
    assert len(str(info.value)) < limit
