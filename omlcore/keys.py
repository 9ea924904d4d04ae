"""Names shared by datasets, loops and metrics: CSV columns of the data contract and batch dictionary keys."""

from __future__ import annotations

__all__ = [
    "BBOX_COLUMNS",
    "CATEGORIES",
    "CATEGORY_COLUMN",
    "EMBEDDINGS",
    "IMAGES",
    "INDEX",
    "IS_GALLERY",
    "IS_GALLERY_COLUMN",
    "IS_QUERY",
    "IS_QUERY_COLUMN",
    "LABELS",
    "LABEL_COLUMN",
    "OPTIONAL_COLUMNS",
    "PATHS",
    "PATH_COLUMN",
    "REQUIRED_COLUMNS",
    "SEQUENCES",
    "SEQUENCE_COLUMN",
    "SPLIT_COLUMN",
    "SPLIT_TRAIN",
    "SPLIT_VALIDATION",
]

# CSV columns (OML's format).
LABEL_COLUMN = "label"
PATH_COLUMN = "path"
SPLIT_COLUMN = "split"
IS_QUERY_COLUMN = "is_query"
IS_GALLERY_COLUMN = "is_gallery"
CATEGORY_COLUMN = "category"
SEQUENCE_COLUMN = "sequence"
BBOX_COLUMNS = ("x_1", "x_2", "y_1", "y_2")
REQUIRED_COLUMNS = (LABEL_COLUMN, PATH_COLUMN, SPLIT_COLUMN, IS_QUERY_COLUMN, IS_GALLERY_COLUMN)
OPTIONAL_COLUMNS = (CATEGORY_COLUMN, SEQUENCE_COLUMN, *BBOX_COLUMNS)
SPLIT_TRAIN = "train"
SPLIT_VALIDATION = "validation"

# Keys of the dictionaries that datasets return and that loops / metric accumulators consume.
IMAGES = "images"
LABELS = "labels"
INDEX = "idx"
PATHS = "paths"
CATEGORIES = "categories"
SEQUENCES = "sequences"
IS_QUERY = "is_query"
IS_GALLERY = "is_gallery"
EMBEDDINGS = "embeddings"
