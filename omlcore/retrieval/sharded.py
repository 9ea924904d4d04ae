"""Exact kNN with the gallery sharded over the ranks of a ``torch.distributed`` process group.

Each rank scores the queries against its share of the gallery: whole chunks of the exact engine
(:class:`~omlcore.retrieval.knn.ExactKNN`), so that every score is computed by the very call that computes it in
one process. In a symmetric search (the queries are the gallery) a rank takes the blocks on and above the
diagonal whose columns it owns, in both directions, so the work is the triangle's share. The per-rank top-k lists
(scores and global gallery indices) are gathered and merged by ``(score, gallery index)``, the engine's order:
every rank gets the result of the one-process search, bit for bit.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from omlcore.retrieval.knn import ExactKNN
from omlcore.retrieval.scores import (
    CpuGemm,
    DistanceMetric,
    Exclude,
    chunk_slices,
    default_chunk_size,
    is_symmetric,
)
from omlcore.retrieval.topk import smallest_pairs
from omlcore.retrieval.validation import as_embeddings

__all__ = ["ShardedKNN", "merge_across_ranks", "rank_and_world", "shard_bounds"]

_INF = float("inf")


def rank_and_world(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group`` (default: the default group); ``(0, 1)`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard_bounds(work: list[int], world: int) -> list[int]:
    """Cut ``len(work)`` consecutive pieces into ``world`` runs of about equal total work: ``world + 1`` bounds."""
    total, bounds, done = sum(work), [0], 0
    for index, amount in enumerate(work):
        while len(bounds) < world and done + amount / 2 > total * len(bounds) / world:
            bounds.append(index)
        done += amount
    bounds += [len(work)] * (world + 1 - len(bounds))
    return bounds


def merge_across_ranks(
    scores: Tensor, indices: Tensor, k: int, group: dist.ProcessGroup | None = None
) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest ``(score, global gallery index)`` pairs per query over every rank's ``(Q, <=k)`` lists
    (all ranks hold the same queries); every rank gets them. Without a process group: this rank's lists."""
    pad = k - scores.shape[1]
    if pad > 0:
        scores = torch.nn.functional.pad(scores, (0, pad), value=_INF)
        indices = torch.nn.functional.pad(indices, (0, pad), value=-1)
    _, world = rank_and_world(group)
    if world > 1:
        gathered_scores = [torch.empty_like(scores) for _ in range(world)]
        gathered_indices = [torch.empty_like(indices) for _ in range(world)]
        dist.all_gather(gathered_scores, scores.contiguous(), group=group)
        dist.all_gather(gathered_indices, indices.contiguous(), group=group)
        scores, indices = torch.cat(gathered_scores, dim=1), torch.cat(gathered_indices, dim=1)
    return smallest_pairs(scores, indices, k)


class ShardedKNN:
    """:class:`~omlcore.retrieval.knn.ExactKNN` with the gallery's chunks shared out over the ranks of ``group``
    (default: the default group; without an initialised process group it is ExactKNN).

    Every rank calls :meth:`search` with the same queries, gallery, ``k`` and exclusions (as after gathering an
    evaluation's embeddings); each reads and scores only its share of the gallery, and all get the one-process
    results bit for bit. Args as :class:`~omlcore.retrieval.knn.ExactKNN` (no fast path).
    """

    def __init__(
        self,
        metric: DistanceMetric = "l2",
        chunk_size: int | None = None,
        cpu_gemm: CpuGemm = "auto",
        group: dist.ProcessGroup | None = None,
    ) -> None:
        self.exact = ExactKNN(metric, chunk_size, cpu_gemm, fast="off")
        self.metric: DistanceMetric = metric
        self.group = group

    def __repr__(self) -> str:
        return f"ShardedKNN(metric={self.metric!r}, chunk_size={self.exact.chunk_size})"

    def search(self, queries: Tensor, gallery: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        """See :meth:`ExactKNN.search <omlcore.retrieval.knn.ExactKNN.search>`."""
        queries, gallery = as_embeddings("queries", queries), as_embeddings("gallery", gallery)
        rank, world = rank_and_world(self.group)
        chunk = self.exact.chunk_size or default_chunk_size(queries.device)
        n_chunks = len(chunk_slices(len(gallery), chunk))
        symmetric = is_symmetric(queries, gallery, exclude)
        work = [j + 1 if symmetric else 1 for j in range(n_chunks)]  # blocks per column chunk
        bounds = shard_bounds(work, world)
        columns = range(bounds[rank], bounds[rank + 1])
        scores, indices, scale = self.exact.search_scores(queries, gallery, k, exclude, columns=columns)
        merged_scores, merged_indices = merge_across_ranks(scores, indices, min(k, len(gallery)), self.group)
        return self.exact.finish(merged_scores, merged_indices, k, scale)
