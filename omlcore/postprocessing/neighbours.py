"""What the training-free postprocessors share: argument and input checks, pair exclusions, row sorting.

Every postprocessor that searches again keeps the split's exclusions (an item never retrieves itself, nor an item
of its sequence) and returns rows sorted by ``(distance, gallery index)``, padded with ``(inf, -1)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from omlcore.postprocessing.base import PostprocessorError, RetrievalContext
from omlcore.retrieval.results import QueryGallerySplit, RetrievalResults
from omlcore.retrieval.scores import Exclude

__all__ = [
    "check_inputs",
    "count_argument",
    "excluded_pairs",
    "finite_mean",
    "number_argument",
    "optional_count_argument",
    "output_width",
    "sort_rows",
    "swapped",
]


def count_argument(name: str, value: int) -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def optional_count_argument(name: str, value: int | None) -> int | None:
    """``value`` if it is None or a positive integer, else a ValueError naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def number_argument(name: str, value: float, low: float, high: float = math.inf) -> float:
    """``value`` if it is a real number in ``[low, high]``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def check_inputs(name: str, results: RetrievalResults, context: RetrievalContext) -> None:
    """Raise a :class:`PostprocessorError` when ``results`` were not retrieved for ``context.split``."""
    split = context.split
    fix = "build the RetrievalContext from the split the results were retrieved for"
    if results.n_queries != len(split.queries):
        raise PostprocessorError(
            f"{name}: the results have {results.n_queries} queries but context.split has {len(split.queries)}; {fix}"
        )
    if results.n_gallery != len(split.gallery):
        raise PostprocessorError(
            f"{name}: the results index a gallery of {results.n_gallery} items but context.split has "
            f"{len(split.gallery)}; {fix}"
        )


def output_width(k: int | None, results: RetrievalResults) -> int:
    """Results per row: ``k`` (default: the width of ``results``), at most the gallery size."""
    return min(results.top_k if k is None else k, results.n_gallery)


def excluded_pairs(split: QueryGallerySplit, queries: Tensor, gallery: Tensor) -> Tensor:
    """bool, shaped like ``queries``: whether the split excludes each pair ``(queries[...], gallery[...])``
    (query and gallery positions): the same item, the same sequence."""
    bad = torch.zeros(queries.shape, dtype=torch.bool, device=queries.device)
    for query_keys, gallery_keys in split.exclude:
        keys = query_keys[queries]
        bad |= (keys == gallery_keys[gallery]) & (keys >= 0)
    return bad


def swapped(exclude: Exclude) -> list[tuple[Tensor, Tensor]]:
    """The exclusion pairs of the reverse search (gallery items as queries)."""
    return [(gallery_keys, query_keys) for query_keys, gallery_keys in exclude]


def finite_mean(distances: Tensor) -> Tensor:
    """Per row, the mean of the finite entries (padding is ``inf``); 0 for a row without any."""
    finite = torch.isfinite(distances)
    total = torch.where(finite, distances, 0.0).sum(dim=1)
    return total / finite.sum(dim=1).clamp_min(1)


def sort_rows(values: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first ``k`` entries of each row by ``(value, id)``; ``id < 0`` marks an empty slot, which ends up
    as padding ``(inf, -1)``. Ids are unique within a row."""
    empty = ids < 0
    values = values.masked_fill(empty, math.inf)
    by_id = torch.sort(ids.masked_fill(empty, torch.iinfo(torch.int64).max), dim=1).indices
    values, ids = values.gather(1, by_id), ids.gather(1, by_id)
    order = torch.sort(values, dim=1, stable=True).indices[:, :k]
    return values.gather(1, order), ids.gather(1, order)
