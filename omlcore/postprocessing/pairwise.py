"""Re-ranking of each query's top n by a pairwise model: OML 4.0's ``PairwiseReranker`` (STIR).

OML: https://github.com/OML-Team/open-metric-learning (``oml.retrieval.postprocessors.pairwise``); the method:
Shabanov et al., "STIR: Siamese Transformer for Image Retrieval Postprocessing", 2024, arXiv:2304.13393.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from omlcore.keys import IMAGES
from omlcore.postprocessing.base import PostprocessorError, RetrievalContext, with_rows
from omlcore.retrieval.results import RetrievalResults

__all__ = ["PairwiseModel", "PairwiseReranker"]

#: ``model(query_inputs, gallery_inputs) -> scores (B,)``: see :class:`PairwiseReranker`.
PairwiseModel = Callable[[Tensor, Tensor], Tensor]

#: The re-scored block ends this many machine epsilons (of the scores' dtype) below the first untouched distance.
_GAP_EPS = 1000


class _PairInputs(Dataset[tuple[Any, Any]]):
    """``(query_items[q][key], gallery_items[g][key])`` for the given pairs of dataset indices."""

    def __init__(self, query_items: Any, gallery_items: Any, pairs: list[tuple[int, int]], key: str) -> None:
        self.query_items, self.gallery_items, self.pairs, self.key = query_items, gallery_items, pairs, key

    def __len__(self) -> int:
        return len(self.pairs)

    def _input(self, items: Any, index: int) -> Any:
        item = items[index]
        if self.key not in item:
            raise PostprocessorError(
                f"dataset item {index} has no {self.key!r} (it has {sorted(item)}); pass "
                "PairwiseReranker(input_key=...) naming the model's input"
            )
        return item[self.key]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        query, gallery = self.pairs[index]
        return self._input(self.query_items, query), self._input(self.gallery_items, gallery)


def _device(model: PairwiseModel) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for modules without any and plain callables."""
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def _evaluating(model: PairwiseModel) -> Iterator[None]:
    """Every submodule of ``model`` in eval mode, gradients off; each submodule's mode restored afterwards."""
    modes = [(module, module.training) for module in model.modules()] if isinstance(model, nn.Module) else []
    for module, _ in modes:
        module.train(False)
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _int_at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class PairwiseReranker:
    """Re-score the ``top_n`` nearest gallery items of every query with a pairwise model (OML's ``PairwiseReranker``).

    Each query's first ``top_n`` items (fewer where the row is shorter: retrieve ``top_k >= top_n``) are sorted by
    the model's scores, which become their distances; the items after them keep their order and distances. So that
    the re-scored block stays ahead of the rest, a row whose largest score ``m`` exceeds the first untouched
    distance ``d`` gets its scores rescaled, ``s -> s * d / m - 1000 * eps`` (``eps``: machine epsilon of the
    scores' dtype, float32 at least), as OML 4.0 does; ``d = 0`` ties the whole block at ``-1000 * eps``. Results
    are equal to OML's given the same scores, except that tied scores keep the kNN order (a stable sort: OML's
    unstable sort agrees on the CPU for ``top_n <= 16``), a block that rounding would end above a large ``d`` is
    capped at ``d``, and a negative ``d`` (scaling would reverse the block) is an error.

    **The model contract** (any ``nn.Module`` or callable): ``model(query_inputs, gallery_inputs) -> scores``, where
    ``query_inputs`` / ``gallery_inputs`` are the ``input_key`` entries (default ``"images"``) of a batch of B query
    items and the B gallery items paired with them, collated by a DataLoader (e.g. two ``(B, 3, H, W)`` tensors) and
    moved to the model's device (that of its first parameter; the CPU for plain callables). ``scores`` is a
    floating ``(B,)`` tensor, one finite score per pair, read as a *distance*: lower means more similar (OML's
    STIR: the sigmoid of a logit trained by binary cross-entropy with target 1 for pairs of *different* labels).
    It is called in eval mode (every submodule's mode is restored afterwards) under ``torch.no_grad()``. To use an
    OML ``IPairwiseModel``, pass a module whose ``forward`` calls its ``predict``.

    Args:
        top_n: items re-scored per query, at least 2 and at most the gallery size (a larger one is an error).
        model: the pairwise model, as above.
        batch_size: pairs per model call.
        num_workers: DataLoader workers reading the items.
        input_key: the key of the model's input in the items' dicts.

    The items come from ``context.dataset`` (queries, indexed by ``split.query_ids``) and ``context.gallery_items``
    (indexed by ``split.gallery_ids``); without ids (:meth:`QueryGallerySplit.from_sets`) by position.
    """

    def __init__(
        self,
        top_n: int,
        model: PairwiseModel,
        *,
        batch_size: int = 128,
        num_workers: int = 0,
        input_key: str = IMAGES,
    ) -> None:
        self.top_n = _int_at_least("top_n", top_n, minimum=2)
        if not callable(model):
            raise TypeError(
                f"model must be an nn.Module or a callable model(query_inputs, gallery_inputs), got {model!r}"
            )
        self.model = model
        self.batch_size = _int_at_least("batch_size", batch_size, minimum=1)
        self.num_workers = _int_at_least("num_workers", num_workers, minimum=0)
        self.input_key = input_key

    def __repr__(self) -> str:
        return f"PairwiseReranker(top_n={self.top_n}, model={type(self.model).__name__}, batch_size={self.batch_size})"

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        query_ids, gallery_ids = self._item_ids(results, context)
        n = min(self.top_n, results.top_k)
        head_ids = results.retrieved_ids[:, :n]
        valid = head_ids >= 0
        rows, columns = valid.nonzero(as_tuple=True)
        if len(rows) == 0:
            return results
        pair_queries = query_ids[rows.cpu()]
        pair_gallery = gallery_ids[head_ids[rows, columns].cpu()]
        scores = self._scores(context, pair_queries, pair_gallery).to(results.distances.device)
        finite = torch.isfinite(scores)
        if not bool(finite.all()):
            bad_rows = rows[~finite].unique()
            raise PostprocessorError(
                f"the pairwise model returned {int((~finite).sum())} non-finite scores (NaN or inf) among "
                f"{len(scores)} pairs, for {len(bad_rows)} queries (positions {bad_rows[:5].tolist()}, dataset items "
                f"{query_ids[bad_rows[:5].cpu()].tolist()}); fix the model so that it scores every pair finitely "
                "(check its weights and its inputs: a diverged checkpoint, an overflow in half precision)"
            )
        return self._rerank(results, n, rows, columns, scores)

    def _item_ids(self, results: RetrievalResults, context: RetrievalContext) -> tuple[Tensor, Tensor]:
        """The dataset indices of the split's queries and gallery items, after checking that they fit ``results``."""
        split = context.split
        if context.dataset is None:
            raise PostprocessorError(
                "PairwiseReranker needs the items to score pairs of them, but the context has no dataset: give "
                "RetrievalContext(dataset=...) (the dataset that split.query_ids / split.gallery_ids index)"
            )
        if results.n_queries != len(split.queries) or results.n_gallery != len(split.gallery):
            raise PostprocessorError(
                f"the results ({results.n_queries} queries, gallery of {results.n_gallery}) do not belong to the "
                f"context's split ({len(split.queries)} queries, gallery of {len(split.gallery)}); pass the "
                "RetrievalContext of the split the results were retrieved from"
            )
        if results.n_gallery == 0:
            raise PostprocessorError("the results have an empty gallery: there is nothing to re-rank; give a gallery")
        if self.top_n > results.n_gallery:
            raise PostprocessorError(
                f"PairwiseReranker(top_n={self.top_n}) is larger than the gallery ({results.n_gallery} items); "
                f"lower top_n to at most {results.n_gallery}"
            )

        def ids(given: Tensor | None, n: int) -> Tensor:
            return torch.arange(n) if given is None else given.cpu()

        return ids(split.query_ids, results.n_queries), ids(split.gallery_ids, results.n_gallery)

    def _scores(self, context: RetrievalContext, queries: Tensor, gallery: Tensor) -> Tensor:
        """The model's score of every pair ``(queries[i], gallery[i])`` of dataset indices, at least float32."""
        pairs = list(zip(queries.tolist(), gallery.tolist(), strict=True))
        inputs = _PairInputs(context.dataset, context.gallery_items, pairs, self.input_key)
        loader = DataLoader(inputs, batch_size=self.batch_size, num_workers=self.num_workers, shuffle=False)
        device = _device(self.model)
        outputs = []
        with _evaluating(self.model):
            for query_inputs, gallery_inputs in loader:
                out = self.model(query_inputs.to(device), gallery_inputs.to(device))
                size = len(query_inputs)
                if not isinstance(out, Tensor) or out.shape != (size,) or not out.is_floating_point():
                    got = f"shape {tuple(out.shape)}, {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
                    raise PostprocessorError(
                        f"the pairwise model returned {got} for a batch of {size} pairs; it must return one "
                        f"floating score per pair, shape ({size},)"
                    )
                outputs.append(out)
        scores = torch.cat(outputs)
        return scores.to(torch.promote_types(scores.dtype, torch.float32))

    @staticmethod
    def _rerank(results: RetrievalResults, n: int, rows: Tensor, columns: Tensor, scores: Tensor) -> RetrievalResults:
        """The first ``n`` columns sorted by ``scores`` (given at ``rows, columns``) and rescaled (OML's rule)."""
        distances, ids = results.distances, results.retrieved_ids
        block = torch.full((results.n_queries, n), torch.inf, dtype=scores.dtype, device=distances.device)
        block[rows, columns] = scores
        block, order = torch.sort(block, dim=1, stable=True)  # padding (inf) stays last
        head_ids = torch.gather(ids[:, :n], 1, order)
        counts = (head_ids >= 0).sum(dim=1)
        largest = block.gather(1, (counts - 1).clamp_min(0)[:, None]).squeeze(1)
        first_rest = distances[:, n] if distances.shape[1] > n else torch.full_like(distances[:, 0], torch.inf)
        rescale = (counts > 0) & (largest > first_rest)  # a padded rest (inf) needs none
        flipped = rescale & (first_rest < 0) & (largest >= 0)
        if bool(flipped.any()):
            raise PostprocessorError(
                f"queries {flipped.nonzero().flatten()[:5].tolist()} have negative distances after the top_n, so "
                "scaling the re-scored block below them would reverse its order; use a distance that is >= 0 (the "
                "built-in l2 and cosine are)"
            )
        target = first_rest.to(scores.dtype)
        scaled = block * (target / largest)[:, None] - _GAP_EPS * torch.finfo(scores.dtype).eps
        scaled = torch.minimum(scaled, target[:, None])  # absorbs rounding in d / m * m where d is large
        block = torch.where(rescale[:, None] & (head_ids >= 0), scaled, block).to(distances.dtype)
        return with_rows(
            results,
            torch.cat([block, distances[:, n:]], dim=1),
            torch.cat([head_ids, ids[:, n:]], dim=1),
        )
