"""EmbeddingMetrics: retrieval metrics over a whole validation set, as a mergeable :class:`MetricAccumulator`.

Batches of embeddings are collected by :meth:`EmbeddingMetrics.update`; :meth:`EmbeddingMetrics.compute`
retrieves every query's neighbours (exact chunked kNN by default) and returns OML's nested dictionary::

    {"OVERALL": {"cmc": {1: 0.93, 5: 0.98}, "precision": {5: ...}, "map": {5: ...}, "pcf": {0.5: ...}},
     "<category>": {...},
     "OVERALL/cmc/1": 0.93, ...}                      # the same values under flat keys, for loggers

The batches are kept by an :class:`~omlcore.metrics.state.EmbeddingState`. Under DDP each rank collects its
shard; the ranks exchange :meth:`~EmbeddingMetrics.get_state` (e.g. with ``torch.distributed.all_gather_object``)
and :meth:`~EmbeddingMetrics.merge_state` the others' states. Items are put back in dataset order by their
``idx`` and duplicates (a ``DistributedSampler`` pads shards by repeating items) are dropped, so every rank
computes exactly the one-process numbers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from omlcore.config import accepts, resolve
from omlcore.errors import OmlcoreError
from omlcore.metrics.fnmr import fnmr_at_fmr
from omlcore.metrics.functional import (
    cmc_at_k,
    flatten_metrics,
    map_at_k,
    map_at_r,
    mean_reciprocal_rank,
    pcf,
    precision_at_1,
    precision_at_k,
    r_precision,
    reciprocal_rank,
    reduce_mean,
    worst_queries,
)
from omlcore.metrics.state import OVERALL, POSTPROCESSED, EmbeddingState
from omlcore.postprocessing.base import RetrievalContext, build_postprocessor, check_postprocessed
from omlcore.protocols import KNNBackend, Postprocessor, Reduction
from omlcore.retrieval.knn import ExactKNN
from omlcore.retrieval.ranks import first_relevant_ranks
from omlcore.retrieval.results import QueryGallerySplit, RetrievalResults
from omlcore.retrieval.scores import DistanceMetric
from omlcore.retrieval.validation import RetrievalInputError

__all__ = ["OVERALL", "PML_METRICS", "POSTPROCESSED", "EmbeddingMetrics", "NoRelevantPolicy"]

#: The pytorch-metric-learning metrics :class:`EmbeddingMetrics` can add (PML's own names).
PML_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank")
#: Queries without any relevant gallery item: ``"oml"`` scores them as OML 4.0 does (CMC 0, mAP 0, precision
#: NaN, which makes the mean precision NaN), ``"exclude"`` leaves them out of the OML metrics' means.
NoRelevantPolicy = Literal["oml", "exclude"]

_OML_METRICS = ("cmc", "precision", "map")


class EmbeddingMetrics:
    """CMC@k, precision@k, mAP@k, FNMR@FMR, PCF (OML) and PML's R-metrics over a query / gallery split.

    Args:
        cmc_top_k, precision_top_k, map_top_k: the cutoffs k of OML's metrics (see :mod:`omlcore.metrics.functional`).
        fmr_vals: FMR values for FNMR@FMR over all pairs (off by default: it costs up to two more passes over
            all query x gallery distances).
        pcf_variance: explained-variance levels for PCF (OML's principal components fraction).
        pml_metrics: any of :data:`PML_METRICS`; R-based ones retrieve ``max(n_relevant)`` neighbours.
        mrr_top_k: cutoff of the mean reciprocal rank, reported as ``mean_reciprocal_rank/<k>``; default None:
            over the full ranking (PML's default), as ``mean_reciprocal_rank``. The other cutoffs never change it:
            for queries with no relevant item among the retrieved ones, the rank of the first relevant item is
            found from exact scores in two more passes over their scores (memory still ``O(Q * k)``, see
            :func:`~omlcore.retrieval.ranks.first_relevant_ranks`).
        no_relevant: :data:`NoRelevantPolicy`; how many queries it concerned is in :attr:`summary`.
        metric: ``"l2"`` or ``"cosine"``.
        knn_backend: a :class:`~omlcore.protocols.KNNBackend`, a registered name (``"exact"``, ``"faiss.flat"``)
            or a ``{"name": ..., "args": {...}}`` config; default :class:`~omlcore.retrieval.ExactKNN`.
        return_only_overall_category: leave the per-category entries out of :meth:`compute`'s result.
        postprocessor: a :class:`~omlcore.protocols.Postprocessor`, a registered name, a ``{"name", "args"}``
            config or a list of them (a chain). The retrieval metrics are then reported twice: as they are, and
            after post-processing under the prefix ``"postprocessed/"`` (``"postprocessed/OVERALL/cmc/1"``; PCF
            and FNMR@FMR, which do not depend on rankings, only once).
        dataset: the items' dataset, for learned postprocessors (a pairwise re-ranker reads the items); indexed by
            the batches' ``idx``. The adapters' evaluation loops set it to the dataset they embed.

    Batches (:meth:`update`) carry ``embeddings`` ``(B, D)``, ``labels``, ``is_query``, ``is_gallery`` and
    optionally ``idx`` (dataset indices: merged states are put back in dataset order and repeated items dropped;
    without them items keep their arrival / rank order and nothing is deduplicated), ``categories`` (strings) and
    ``sequences`` (int ids, ``-1`` for none). After :meth:`compute`: :attr:`metrics`, :attr:`metrics_unreduced`
    (per-query tensors), :attr:`retrieval_results`, :attr:`postprocessed_results` (None without a
    postprocessor), :attr:`summary`. The batches are in :attr:`state`.
    """

    state_reductions: ClassVar[Mapping[str, Reduction]] = EmbeddingState.state_reductions

    def __init__(
        self,
        cmc_top_k: Sequence[int] = (5,),
        precision_top_k: Sequence[int] = (5,),
        map_top_k: Sequence[int] = (5,),
        fmr_vals: Sequence[float] = (),
        pcf_variance: Sequence[float] = (0.5,),
        pml_metrics: Sequence[str] = (),
        mrr_top_k: int | None = None,
        no_relevant: NoRelevantPolicy = "oml",
        metric: DistanceMetric = "l2",
        knn_backend: KNNBackend | str | Mapping[str, Any] | None = None,
        return_only_overall_category: bool = False,
        postprocessor: Postprocessor | str | Mapping[str, Any] | Sequence[Any] | None = None,
        dataset: Any = None,
    ) -> None:
        for name, values in (("cmc_top_k", cmc_top_k), ("precision_top_k", precision_top_k), ("map_top_k", map_top_k)):
            if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in values):
                raise ValueError(f"{name} must hold positive integers, got {list(values)}")
        unknown = sorted(set(pml_metrics) - set(PML_METRICS))
        if unknown:
            raise ValueError(f"unknown pml_metrics {unknown}; choose from {list(PML_METRICS)}")
        if no_relevant not in ("oml", "exclude"):
            raise ValueError(f"no_relevant must be 'oml' or 'exclude', got {no_relevant!r}")
        if mrr_top_k is not None and (isinstance(mrr_top_k, bool) or mrr_top_k < 1):
            raise ValueError(f"mrr_top_k must be a positive integer or None, got {mrr_top_k!r}")
        self.cmc_top_k = tuple(cmc_top_k)
        self.precision_top_k = tuple(precision_top_k)
        self.map_top_k = tuple(map_top_k)
        self.fmr_vals = tuple(fmr_vals)
        self.pcf_variance = tuple(pcf_variance)
        self.pml_metrics = tuple(m for m in PML_METRICS if m in pml_metrics)
        self.mrr_top_k = mrr_top_k
        self.no_relevant: NoRelevantPolicy = no_relevant
        self.metric: DistanceMetric = metric
        self.knn_backend = _build_backend(knn_backend, metric)
        self.return_only_overall_category = return_only_overall_category
        self.postprocessor = build_postprocessor(postprocessor)
        self.dataset = dataset
        self.postprocessed_results: RetrievalResults | None = None
        self.metrics: dict[str, Any] | None = None
        self.metrics_unreduced: dict[str, Any] | None = None
        self.retrieval_results: RetrievalResults | None = None
        self.summary: dict[str, int] = {}
        self._category_positions: dict[str, Tensor] = {}
        self.state = EmbeddingState()

    def __repr__(self) -> str:
        return (
            f"EmbeddingMetrics(cmc_top_k={self.cmc_top_k}, precision_top_k={self.precision_top_k}, "
            f"map_top_k={self.map_top_k}, fmr_vals={self.fmr_vals}, pcf_variance={self.pcf_variance}, "
            f"pml_metrics={self.pml_metrics}, knn_backend={self.knn_backend!r}, postprocessor={self.postprocessor!r})"
        )

    # --- accumulation -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every batch and merged state (results of the last :meth:`compute` are kept)."""
        self.state.reset()

    def update(self, batch: Mapping[str, Any]) -> None:
        """Add one batch (see the class docstring for its keys). Embeddings are detached and kept as they are."""
        self.state.update(batch)

    def get_state(self) -> dict[str, Tensor]:
        """Everything collected so far, one tensor per entry of :attr:`state_reductions` (all ``"cat"``)."""
        return self.state.get_state()

    def merge_state(self, states: Sequence[Mapping[str, Tensor]]) -> None:
        """Add the states of other processes / shards (from their :meth:`get_state`); empty ones are skipped."""
        self.state.merge_state(states)

    # --- computation --------------------------------------------------------------------------------------------

    def compute(self) -> dict[str, Any]:
        """Retrieve and compute every metric; the nested dictionary plus its flat ``"a/b/c"`` keys."""
        if not len(self.state):
            raise RetrievalInputError("EmbeddingMetrics has no data: call update() with batches before compute()")
        data = self.state.collect()
        self.summary = {"n_duplicates_dropped": data.n_duplicates_dropped}
        split = QueryGallerySplit.from_items(
            data.embeddings,
            data.labels,
            data.is_query,
            data.is_gallery,
            data.sequences if bool((data.sequences >= 0).any()) else None,
            data.index,
        )
        top_k = max([*self.cmc_top_k, *self.precision_top_k, *self.map_top_k, self.mrr_top_k or 1])
        cover_relevant = bool({"r_precision", "mean_average_precision_at_r"} & set(self.pml_metrics))
        results = RetrievalResults.from_split(
            split, top_k=top_k, cover_relevant=cover_relevant, metric=self.metric, backend=self.knn_backend
        )
        unreduced = self._per_query(results, split)
        lone = results.n_relevant == 0
        empty = lone & (results.n_retrieved == 0)
        self.summary.update(
            n_items=len(data.index),
            n_queries=results.n_queries,
            n_gallery=results.n_gallery,
            n_queries_without_relevant=int(lone.sum()),
            n_queries_with_empty_gallery=int(empty.sum()),
        )
        if bool(lone.any()):
            warnings.warn(self._lone_message(int(lone.sum()), int(empty.sum()), results.n_queries), RuntimeWarning, 2)
        overall_pcf = self._pcf(data.embeddings)
        nested: dict[str, Any] = {OVERALL: self._reduce(unreduced, overall_pcf)}
        unreduced_nested: dict[str, Any] = {OVERALL: unreduced}
        if self.fmr_vals and split.query_labels is not None and split.gallery_labels is not None:
            fnmr = fnmr_at_fmr(
                split.queries,
                split.gallery,
                split.query_labels,
                split.gallery_labels,
                self.fmr_vals,
                exclude=split.exclude,
                metric=self.metric,
            )
            nested[OVERALL]["fnmr@fmr"] = dict(zip(self.fmr_vals, fnmr.tolist(), strict=True))
        self._category_positions = {}
        categories = data.categories
        if bool((categories != 0).any()):
            query_categories = categories[data.is_query]
            for code, name in sorted(data.category_names.items(), key=lambda item: item[1]):
                query_mask = query_categories == code
                if not bool(query_mask.any()):
                    continue
                subset = _select(unreduced, query_mask)
                self._category_positions[name] = query_mask.nonzero().flatten()
                unreduced_nested[name] = subset
                nested[name] = self._reduce(subset, self._pcf(data.embeddings[categories == code]))
        self.retrieval_results = results
        self.postprocessed_results = None
        if self.postprocessor is not None:
            processed = self._postprocess(results, split)
            per_query = self._per_query(processed, split)
            unreduced_nested[POSTPROCESSED] = {OVERALL: per_query}
            nested[POSTPROCESSED] = {OVERALL: self._reduce(per_query, None)}
            for name, positions in self._category_positions.items():
                mask = torch.zeros(processed.n_queries, dtype=torch.bool, device=positions.device)
                mask[positions] = True
                unreduced_nested[POSTPROCESSED][name] = _select(per_query, mask)
                nested[POSTPROCESSED][name] = self._reduce(unreduced_nested[POSTPROCESSED][name], None)
            self.postprocessed_results = processed
        self.metrics_unreduced = unreduced_nested
        self.metrics = nested
        returned = nested
        if self.return_only_overall_category:
            returned = {OVERALL: nested[OVERALL]}
            if POSTPROCESSED in nested:
                returned[POSTPROCESSED] = {OVERALL: nested[POSTPROCESSED][OVERALL]}
        return {**returned, **flatten_metrics(returned)}

    def _postprocess(self, results: RetrievalResults, split: QueryGallerySplit) -> RetrievalResults:
        """The postprocessor's results, checked against the contract (a faulty one is named)."""
        assert self.postprocessor is not None
        context = RetrievalContext(split, self.metric, self.knn_backend, dataset=self.dataset)
        processed = self.postprocessor.process(results, context)
        return check_postprocessed(results, processed, type(self.postprocessor).__name__)

    def metric_names(self, categories: Sequence[str] = ()) -> list[str]:
        """The flat keys :meth:`compute` reports for data with these ``categories``, known before any batch.

        Lets a training run check a name such as ``metric_for_checkpointing`` before it trains.
        """
        cutoffs: dict[str, Any] = {
            name: dict.fromkeys(ks, 0.0)
            for name, ks in (("cmc", self.cmc_top_k), ("precision", self.precision_top_k), ("map", self.map_top_k))
            if ks
        }
        cutoffs.update(dict.fromkeys(self.pml_metrics, 0.0))
        if "mean_reciprocal_rank" in cutoffs and self.mrr_top_k is not None:
            cutoffs["mean_reciprocal_rank"] = {self.mrr_top_k: 0.0}
        if self.pcf_variance:
            cutoffs["pcf"] = dict.fromkeys(self.pcf_variance, 0.0)
        overall = {**cutoffs, "fnmr@fmr": dict.fromkeys(self.fmr_vals, 0.0)} if self.fmr_vals else cutoffs
        shown = [] if self.return_only_overall_category else sorted(set(categories))
        names: dict[str, Any] = {OVERALL: overall, **dict.fromkeys(shown, cutoffs)}
        if self.postprocessor is not None:
            ranked = {key: value for key, value in cutoffs.items() if key != "pcf"}
            names[POSTPROCESSED] = {OVERALL: ranked, **dict.fromkeys(shown, ranked)}
        return list(flatten_metrics(names))

    def _lone_message(self, n_lone: int, n_empty: int, n_queries: int) -> str:
        """The warning about queries without relevant items, saying what their values are."""
        oml = "CMC 0, mAP 0 and precision NaN (so the mean precision is NaN)"
        empty = (
            "CMC, precision and mAP 1, as OML scores an empty row (the gallery holds only the query itself or its "
            "sequence)"
        )
        if self.no_relevant == "exclude":
            effect = "they are left out of the means"
        elif n_empty == 0:
            effect = f"they are scored as in OML 4.0: {oml}"
        elif n_empty == n_lone:
            effect = f"they have nothing to retrieve and are scored as in OML 4.0: {empty}"
        else:
            effect = f"they are scored as in OML 4.0: {oml}; except {n_empty} with nothing to retrieve: {empty}"
        return (
            f"{n_lone} of {n_queries} queries have no relevant gallery item; {effect}. "
            "Choose with EmbeddingMetrics(no_relevant='oml' | 'exclude')."
        )

    def _per_query(self, results: RetrievalResults, split: QueryGallerySplit) -> dict[str, Any]:
        relevant, n_retrieved, n_relevant = results.is_relevant, results.n_retrieved, results.n_relevant
        needed = int(n_relevant.max()) if len(n_relevant) else 0
        if needed > relevant.shape[1] and {"r_precision", "mean_average_precision_at_r"} & set(self.pml_metrics):
            # rows a postprocessor shortened (a threshold): the items cut off count as not retrieved
            relevant = torch.nn.functional.pad(relevant, (0, needed - relevant.shape[1]), value=False)
        values: dict[str, Any] = {}
        for name, ks, function in (
            ("cmc", self.cmc_top_k, cmc_at_k),
            ("precision", self.precision_top_k, precision_at_k),
            ("map", self.map_top_k, map_at_k),
        ):
            if ks:
                per_k = {k: function(relevant, n_retrieved, n_relevant, k) for k in ks}
                if self.no_relevant == "exclude":
                    per_k = {k: torch.where(n_relevant > 0, v, float("nan")) for k, v in per_k.items()}
                values[name] = per_k
        pml = {
            "precision_at_1": lambda: precision_at_1(relevant, n_relevant),
            "r_precision": lambda: r_precision(relevant, n_relevant),
            "mean_average_precision_at_r": lambda: map_at_r(relevant, n_relevant),
            "mean_reciprocal_rank": lambda: self._reciprocal_ranks(results, split),
        }
        for name in self.pml_metrics:
            values[name] = pml[name]()
        return values

    def _reciprocal_ranks(self, results: RetrievalResults, split: QueryGallerySplit) -> Tensor | dict[int, Tensor]:
        """Per query ``1 / rank`` of the first relevant item: within ``mrr_top_k``, or over the full ranking."""
        relevant, n_relevant = results.is_relevant, results.n_relevant
        if self.mrr_top_k is not None:
            return {self.mrr_top_k: mean_reciprocal_rank(relevant, n_relevant, self.mrr_top_k)}
        ranks = torch.where(relevant.any(dim=1), relevant.to(torch.uint8).argmax(dim=1) + 1, 0)
        beyond = ((ranks == 0) & (n_relevant > 0)).nonzero().flatten()
        if len(beyond):  # the first relevant item lies below the retrieved ones
            found = first_relevant_ranks(split, beyond, self.metric)
            ranks[beyond] = torch.where(found > 0, found.clamp_min(results.n_retrieved[beyond] + 1), 0)
        return reciprocal_rank(ranks, n_relevant)

    def _reduce(self, unreduced: Mapping[str, Any], pcf_values: Tensor | None) -> dict[str, Any]:
        reduced: dict[str, Any] = {}
        for name, value in unreduced.items():
            skip_nan = name not in _OML_METRICS or self.no_relevant == "exclude"
            if isinstance(value, Mapping):
                reduced[name] = {k: reduce_mean(v, skip_nan) for k, v in value.items()}
            else:
                reduced[name] = reduce_mean(value, skip_nan)
        if pcf_values is not None:
            reduced["pcf"] = dict(zip(self.pcf_variance, pcf_values.tolist(), strict=True))
        return reduced

    def _pcf(self, embeddings: Tensor) -> Tensor | None:
        return pcf(embeddings, self.pcf_variance) if self.pcf_variance else None

    def get_worst_queries_ids(self, metric_name: str, n_queries: int) -> list[int]:
        """The ``n_queries`` worst queries by a flat metric name (``"OVERALL/cmc/5"``, ``"<category>/map/5"``).

        Returns query positions (``0 .. Q-1``, dataset order; ``retrieval_results.query_ids`` maps them to dataset
        indices), lowest value first, ties by position; queries with a NaN value are skipped.
        """
        if self.metrics_unreduced is None:
            raise RetrievalInputError("call compute() before asking for the worst queries")
        flat = flatten_metrics(self.metrics_unreduced)
        if metric_name not in flat:
            raise KeyError(f"unknown metric {metric_name!r}; per-query metrics are: {', '.join(sorted(flat))}")
        worst = worst_queries(flat[metric_name], n_queries)
        category = metric_name.removeprefix(f"{POSTPROCESSED}/").split("/", 1)[0]
        if category == OVERALL:
            return worst
        return self._category_positions[category][worst].tolist()


def _select(values: Mapping[str, Any], mask: Tensor) -> dict[str, Any]:
    return {name: _select(v, mask) if isinstance(v, Mapping) else v[mask] for name, v in values.items()}


def _build_backend(spec: KNNBackend | str | Mapping[str, Any] | None, metric: DistanceMetric) -> KNNBackend:
    """A backend from an instance, a registered name or a ``{"name", "args"}`` config (``metric`` passed along)."""
    if spec is None:
        return ExactKNN(metric)
    if isinstance(spec, str | Mapping):
        config: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec)
        name, args = config.get("name"), config.get("args")
        if isinstance(name, str) and isinstance(args, Mapping | None):
            with contextlib.suppress(OmlcoreError):  # an unknown name: resolve() says so
                if accepts("knn_backend", name, "metric"):
                    config["args"] = {"metric": metric, **(args or {})}
        backend = resolve("knn_backend", config, path="knn_backend")
    else:
        backend = spec
    if not isinstance(backend, KNNBackend):
        raise TypeError(f"knn_backend {spec!r} is not a KNNBackend (it has no search(queries, gallery, k, exclude))")
    return backend
