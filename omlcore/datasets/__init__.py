"""Datasets in OML's CSV format: the format validator and image datasets for training and evaluation."""

from __future__ import annotations

from omlcore.datasets.csv_format import (
    CHECK_IMAGES_MODES,
    MAX_REPORTED_ROWS,
    CheckImages,
    read_dataset_csv,
    validate_dataframe,
)
from omlcore.datasets.images import (
    ImageBaseDataset,
    ImageLabeledDataset,
    ImageQueryGalleryDataset,
    TransformSpec,
    resolve_transform,
)

__all__ = [
    "CHECK_IMAGES_MODES",
    "MAX_REPORTED_ROWS",
    "CheckImages",
    "ImageBaseDataset",
    "ImageLabeledDataset",
    "ImageQueryGalleryDataset",
    "TransformSpec",
    "read_dataset_csv",
    "resolve_transform",
    "validate_dataframe",
]
