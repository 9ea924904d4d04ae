"""Datasets in OML's CSV format: the format validator, image datasets, and the shipped glyphs dataset."""

from __future__ import annotations

from omlcore.datasets.csv_format import (
    CHECK_IMAGES_MODES,
    MAX_REPORTED_ROWS,
    CheckImages,
    read_dataset_csv,
    validate_dataframe,
)
from omlcore.datasets.glyphs import glyphs_dataframe, load_glyphs, materialize_glyphs
from omlcore.datasets.images import (
    ImageBaseDataset,
    ImageLabeledDataset,
    ImageQueryGalleryDataset,
    TransformSpec,
    resolve_transform,
)
from omlcore.datasets.pairs import NeighbourPairs, PairBatchSampler, PairDataset, mine_neighbour_pairs
from omlcore.datasets.pixels import ALPHA_BACKGROUND, to_rgb

__all__ = [
    "ALPHA_BACKGROUND",
    "CHECK_IMAGES_MODES",
    "MAX_REPORTED_ROWS",
    "CheckImages",
    "ImageBaseDataset",
    "ImageLabeledDataset",
    "ImageQueryGalleryDataset",
    "NeighbourPairs",
    "PairBatchSampler",
    "PairDataset",
    "TransformSpec",
    "glyphs_dataframe",
    "load_glyphs",
    "materialize_glyphs",
    "mine_neighbour_pairs",
    "read_dataset_csv",
    "resolve_transform",
    "to_rgb",
    "validate_dataframe",
]
