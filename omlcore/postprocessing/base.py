"""What every postprocessor gets and what it must return: the retrieval context, chains, and the output check.

A :class:`~omlcore.protocols.Postprocessor` maps :class:`~omlcore.retrieval.RetrievalResults` to results of the
same queries (``process(results, context)``). The :class:`RetrievalContext` holds what it may need beyond the
top-k: the embeddings, labels and exclusions of the split, the distance and a kNN backend to search again, and the
items' dataset(s) for learned postprocessors. :class:`PostprocessorChain` runs several in order and checks every
step's output (:func:`check_postprocessed`), so a faulty plugin is named instead of silently corrupting metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from omlcore.config import resolve
from omlcore.protocols import KNNBackend, Postprocessor
from omlcore.retrieval.knn import ExactKNN
from omlcore.retrieval.results import QueryGallerySplit, RetrievalResults
from omlcore.retrieval.scores import DistanceMetric
from omlcore.retrieval.validation import RetrievalInputError

__all__ = [
    "PostprocessorChain",
    "PostprocessorError",
    "RetrievalContext",
    "build_postprocessor",
    "check_postprocessed",
    "with_rows",
]


class PostprocessorError(RetrievalInputError):
    """A postprocessor got inputs it cannot use, or returned results that break the contract."""


@dataclass(frozen=True, eq=False)
class RetrievalContext:
    """Everything a postprocessor may use besides the results.

    Attributes:
        split: queries and gallery (embeddings, labels, sequences, item ids, exclusions) the results come from.
        metric: the distance of the results, ``"l2"`` or ``"cosine"``.
        backend: a kNN backend over the same distance (default: the exact engine), for searching again.
        dataset: the items' dataset, indexed by ``split.query_ids`` (and ``split.gallery_ids`` unless
            ``gallery_dataset`` is given); None when only embeddings are known.
        gallery_dataset: a separate gallery dataset, indexed by ``split.gallery_ids``.
    """

    split: QueryGallerySplit
    metric: DistanceMetric = "l2"
    backend: KNNBackend | None = None
    dataset: Any = None
    gallery_dataset: Any = None

    @property
    def knn(self) -> KNNBackend:
        """The backend to search with: the given one, else the exact engine over :attr:`metric`."""
        return self.backend if self.backend is not None else ExactKNN(self.metric)

    def search(self, queries: Tensor, k: int, gallery: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The top ``k`` of ``queries`` (one row per query of the split, e.g. expanded ones) in ``gallery``
        (default: the split's), excluding what the split excludes for each query: itself, its sequence."""
        if len(queries) != len(self.split.queries):
            raise PostprocessorError(
                f"search() takes one row per query of the split ({len(self.split.queries)}), got {len(queries)}"
            )
        gallery = self.split.gallery if gallery is None else gallery
        k = min(k, len(gallery))
        return self.knn.search(queries, gallery, k, self.split.exclude)

    @property
    def gallery_items(self) -> Any:
        """The dataset holding the gallery items (``gallery_dataset`` or ``dataset``)."""
        return self.gallery_dataset if self.gallery_dataset is not None else self.dataset


def with_rows(results: RetrievalResults, distances: Tensor, retrieved_ids: Tensor) -> RetrievalResults:
    """``results`` with new rows: padding columns dropped, everything else (labels, ids, counts) kept."""
    valid = retrieved_ids >= 0
    width = int(valid.sum(dim=1).max()) if len(retrieved_ids) else 0
    return dataclasses.replace(
        results,
        distances=distances[:, :width].contiguous(),
        retrieved_ids=retrieved_ids[:, :width].contiguous(),
    )


def check_postprocessed(before: RetrievalResults, after: Any, name: str) -> RetrievalResults:
    """``after`` if it keeps the contract of :class:`~omlcore.protocols.Postprocessor`, else a named error."""
    fix = f"fix the postprocessor {name} (it must return RetrievalResults of every query, rows sorted ascending)"
    if not isinstance(after, RetrievalResults):
        raise PostprocessorError(f"{name} returned {type(after).__name__}, not RetrievalResults; {fix}")
    if after.n_queries != before.n_queries:
        raise PostprocessorError(f"{name} returned {after.n_queries} rows for {before.n_queries} queries; {fix}")
    if after.n_gallery != before.n_gallery or not torch.equal(after.n_relevant, before.n_relevant):
        raise PostprocessorError(f"{name} changed the gallery or the relevant counts; {fix}")
    distances, ids = after.distances, after.retrieved_ids
    if bool(torch.isnan(distances).any()):
        rows = torch.isnan(distances).any(dim=1).nonzero().flatten()
        raise PostprocessorError(f"{name} returned NaN distances for queries {rows[:5].tolist()}; {fix}")
    valid = ids >= 0
    if bool((ids >= after.n_gallery).any()) or bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        raise PostprocessorError(f"{name} returned gallery ids out of range or padding before items; {fix}")
    unsorted = (distances[:, 1:] < distances[:, :-1]) & valid[:, 1:]
    if bool(unsorted.any()):
        rows = unsorted.any(dim=1).nonzero().flatten()
        raise PostprocessorError(f"{name} returned unsorted rows (queries {rows[:5].tolist()}); {fix}")
    return after


class PostprocessorChain:
    """Postprocessors applied in order; each step's output is checked (:func:`check_postprocessed`)."""

    def __init__(self, postprocessors: Sequence[Postprocessor]) -> None:
        for step in postprocessors:
            if not isinstance(step, Postprocessor):
                raise TypeError(f"{step!r} is not a Postprocessor (it has no process(results, context))")
        self.postprocessors = list(postprocessors)

    def __repr__(self) -> str:
        return f"PostprocessorChain({self.postprocessors!r})"

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        for step in self.postprocessors:
            results = check_postprocessed(results, step.process(results, context), type(step).__name__)
        return results


def build_postprocessor(spec: Postprocessor | str | Mapping[str, Any] | Sequence[Any] | None) -> Postprocessor | None:
    """A postprocessor from an instance, a registered name, a ``{"name", "args"}`` config or a list of them (a
    :class:`PostprocessorChain`); None for None or an empty list."""
    if spec is None:
        return None
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        steps = [build_postprocessor(item) for item in spec]
        present = [step for step in steps if step is not None]
        return PostprocessorChain(present) if present else None
    built = resolve("postprocessor", spec, path="postprocessor") if isinstance(spec, str | Mapping) else spec
    if not isinstance(built, Postprocessor):
        raise TypeError(f"postprocessor {spec!r} is not a Postprocessor (it has no process(results, context))")
    return built
