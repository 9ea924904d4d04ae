"""Exact k-nearest-neighbour search in chunks: the default :class:`~omlcore.protocols.KNNBackend`.

The query x gallery distance matrix is never built: blocks of scores come from
:func:`~omlcore.retrieval.scores.iter_score_blocks` (one GEMM each, half of them in a symmetric search) and are
folded into a running top-k per query, so memory is ``O(Q * k + chunk^2)``. Folding is cheap because almost
nothing survives it: a block entry can only enter a query's top-k when it is not farther than the query's current
k-th neighbour. Each block is screened by the minima of groups of 32 entries against that threshold, only passing
groups are expanded, and the few candidates are merged (sorted by ``(query, distance, gallery index)``; see
:mod:`omlcore.retrieval.topk`). Where bfloat16 GEMMs are fast, a certified fast path gives the same results from
bfloat16 candidates (:mod:`omlcore.retrieval.fast`).

Distances: ``"l2"`` is the Euclidean distance ``||q - g||_2``, ``"cosine"`` is ``1 - cos(q, g)`` (see
:mod:`omlcore.retrieval.scores`). Ties (equal computed distances) are broken by the smaller gallery index, so
results are deterministic.
Exclusion: gallery item ``g`` is never a neighbour of query ``q`` when, for any key pair ``(qk, gk)`` of
``exclude``, ``qk[q] == gk[g] >= 0`` (the same item, the same sequence).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from omlcore.retrieval.fast import FastMode, FastSearchStats, fast_pays, fast_topk, fast_usable, resolve_mode
from omlcore.retrieval.scores import (
    CpuGemm,
    DistanceMetric,
    Exclude,
    Exclusions,
    Scorer,
    default_chunk_size,
    is_symmetric,
    iter_score_blocks,
    make_scorer,
    scores_to_distances,
)
from omlcore.retrieval.topk import RunningTopK, absorb, fold
from omlcore.retrieval.validation import (
    RetrievalInputError,
    as_embeddings,
    as_int_keys,
    check_finite,
    check_same_dim,
)

__all__ = ["CpuGemm", "DistanceMetric", "ExactKNN", "Exclude", "FastMode"]

_INF = float("inf")


class ExactKNN:
    """Exact top-k search by chunked GEMM with a running top-k (see the module docstring).

    Args:
        metric: ``"l2"`` (Euclidean) or ``"cosine"`` (``1 - cos``).
        chunk_size: rows / columns per block; default 1024 on CPU, 8192 or 16384 on CUDA. Memory beyond the inputs is
            ``O(Q * k + chunk_size^2)``.
        cpu_gemm: ``"auto"`` (oneDNN where :func:`~omlcore.functional.linear.onednn_usable`, else BLAS),
            ``"onednn"`` or ``"blas"`` (``torch.addmm``).
        fast: the certified fast path of :mod:`omlcore.retrieval.fast` (bfloat16 candidates, float32 rescoring,
            the same results bit for bit): ``"auto"`` uses it for searches of 2^28 pairs or more where a measurement on
            this machine shows the bfloat16 GEMM at least 1.6x faster than the float32 one and a trial search faster
            end to end (:func:`~omlcore.retrieval.fast.fast_pays`; the environment variable
            ``OMLCORE_FAST_KNN=on|off`` overrides ``"auto"``), ``"on"`` always, ``"off"`` never.

    Inputs of any floating dtype are searched in float32; distances record no gradient.
    """

    def __init__(
        self,
        metric: DistanceMetric = "l2",
        chunk_size: int | None = None,
        cpu_gemm: CpuGemm = "auto",
        fast: FastMode = "auto",
    ) -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        if cpu_gemm not in ("auto", "onednn", "blas"):
            raise ValueError(f"cpu_gemm must be 'auto', 'onednn' or 'blas', got {cpu_gemm!r}")
        if fast not in ("auto", "on", "off"):
            raise ValueError(f"fast must be 'auto', 'on' or 'off', got {fast!r}")
        self.metric: DistanceMetric = metric
        self.chunk_size = chunk_size
        self.cpu_gemm: CpuGemm = cpu_gemm
        self.fast: FastMode = fast
        #: What the certified fast path did in the last :meth:`search` (None: the exact path ran).
        self.last_fast_stats: FastSearchStats | None = None

    def __repr__(self) -> str:
        return (
            f"ExactKNN(metric={self.metric!r}, chunk_size={self.chunk_size}, cpu_gemm={self.cpu_gemm!r}, "
            f"fast={self.fast!r})"
        )

    def search(self, queries: Tensor, gallery: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest gallery items of every query (see :class:`~omlcore.protocols.KNNBackend`).

        Returns:
            ``(distances, indices)``, float32 / int64 ``(Q, k)`` on the device of ``queries``, ascending by
            distance then gallery index; rows with fewer than ``k`` candidates end in ``(inf, -1)``.
        """
        scores, indices, scale = self.search_scores(queries, gallery, k, exclude)
        return self.finish(scores, indices, k, scale)

    def search_scores(
        self,
        queries: Tensor,
        gallery: Tensor,
        k: int,
        exclude: Exclude | None = None,
        columns: range | None = None,
    ) -> tuple[Tensor, Tensor, float]:
        """:meth:`search` before scores become distances: ``(scores, indices, scale)``, ``(Q, min(k, G))``, for
        merging partial results exactly (:func:`~omlcore.retrieval.topk.smallest_pairs`; then :meth:`finish`).

        ``columns``: only these chunks of the gallery (indices into its chunks of ``chunk_size``; in a symmetric
        search each block above the diagonal belongs to the chunk of its columns): a shard of the search.
        """
        queries = as_embeddings("queries", queries)
        gallery = as_embeddings("gallery", gallery)
        check_same_dim(("queries", "gallery"), (queries, gallery))
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_finite("queries", queries)
        if gallery is not queries:
            check_finite("gallery", gallery)
        pairs = [
            (
                as_int_keys("exclude query keys", qk, len(queries), queries.device),
                as_int_keys("exclude gallery keys", gk, len(gallery), queries.device),
            )
            for qk, gk in exclude or ()
        ]
        symmetric = is_symmetric(queries, gallery, exclude) and len(queries) > 0
        self.last_fast_stats = None
        width = min(k, len(gallery))
        if width == 0 or len(queries) == 0:
            empty = RunningTopK(len(queries), width, queries.device)
            return empty.values, empty.indices, 1.0
        scorer = make_scorer(queries, gallery, self.metric, self.cpu_gemm)
        chunk = self.chunk_size or default_chunk_size(queries.device)
        exclusions = Exclusions(pairs)
        found = None if columns is not None else self._fast_topk(scorer, width, chunk, symmetric, exclusions)
        if found is None:
            topk = RunningTopK(len(queries), width, queries.device)
            fold(topk, scorer.blocks(chunk, symmetric, columns=columns), exclusions)
            return topk.values, topk.indices, scorer.scale
        values, indices, self.last_fast_stats = found
        return values, indices, scorer.scale

    def _fast_topk(
        self, scorer: Scorer, k: int, chunk: int, symmetric: bool, exclusions: Exclusions
    ) -> tuple[Tensor, Tensor, FastSearchStats] | None:
        """The certified fast path's top-k (see :mod:`omlcore.retrieval.fast`), or None where the exact one runs."""
        mode = resolve_mode(self.fast)
        if mode == "off":
            return None
        reason = fast_usable(scorer.gallery.device)
        if reason is not None:
            if mode == "on":
                raise RetrievalInputError(f"fast='on' cannot certify results here: {reason}; use fast='auto' or 'off'")
            return None
        if mode == "auto" and not fast_pays(scorer, chunk, len(scorer.queries) * len(scorer.gallery)):
            return None
        return fast_topk(scorer, k, chunk, symmetric, exclusions)

    def search_stream(
        self, queries: Tensor, parts: Iterable[Tensor], k: int, exclude: Exclude | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`search` over a gallery given as consecutive parts (e.g. blocks read from disk), never all at once.

        Gallery indices run over the parts in order; ``exclude`` gallery keys cover the whole gallery. Memory:
        ``O(Q * k)`` plus one part. Parts must not need rescaling (see :mod:`~omlcore.retrieval.scores`): entries
        of ``2^40`` or more are an error here.
        """
        scores, indices = self.stream_scores(queries, parts, k, exclude)
        return self.finish(scores, indices, k, 1.0)

    def stream_scores(
        self, queries: Tensor, parts: Iterable[Tensor], k: int, exclude: Exclude | None = None, offset: int = 0
    ) -> tuple[Tensor, Tensor]:
        """:meth:`search_stream` before scores become distances: ``(scores, indices)``, ``(Q, min(k, G))``; the
        parts' gallery indices start at ``offset`` (a shard of a larger gallery: ``exclude`` keys cover it all)."""
        queries = as_embeddings("queries", queries)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        check_finite("queries", queries)
        pairs = [(as_int_keys("exclude query keys", qk, len(queries), queries.device), gk) for qk, gk in exclude or ()]
        topk = RunningTopK(len(queries), k, queries.device)
        exclusions = Exclusions(pairs)
        chunks: dict[int, slice] = {}
        start = offset
        for part in parts:
            part = as_embeddings("gallery part", part)
            check_same_dim(("queries", "gallery"), (queries, part))
            check_finite("gallery", part)
            for block in iter_score_blocks(
                queries, part, self.metric, chunk_size=self.chunk_size, cpu_gemm=self.cpu_gemm
            ):
                if block.scale != 1.0:
                    raise RetrievalInputError(
                        "a streamed search needs embeddings of ordinary size (entries below 2^40): normalise them"
                    )
                cols = slice(block.cols.start + offset, block.cols.stop + offset)
                absorb(topk, block.scores, block.rows, cols, False, exclusions.between(block.rows, cols))
                chunks[block.rows.start] = block.rows
            offset += len(part)
        topk.flush(list(chunks.values()))
        width = min(k, offset - start)
        return topk.values[:, :width], topk.indices[:, :width]

    def finish(self, scores: Tensor, indices: Tensor, k: int, scale: float) -> tuple[Tensor, Tensor]:
        """Scores ``(Q, w)`` to the distances of :meth:`search`, both padded to ``k`` columns with ``(inf, -1)``."""
        distances = scores_to_distances(scores, self.metric, scale)
        width = scores.shape[1]
        if width < k:
            distances = torch.nn.functional.pad(distances, (0, k - width), value=_INF)
            indices = torch.nn.functional.pad(indices, (0, k - width), value=-1)
        return distances, indices
