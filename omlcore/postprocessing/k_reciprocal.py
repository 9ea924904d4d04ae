"""k-reciprocal re-ranking (Zhong, Zheng, Cao & Li, "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) on a top-K neighbour graph: memory ``O(N * K)``, never an N x N matrix.

The nodes are the queries and the gallery together (an item that is both is one node), as in the published code.
``d(p, g)`` is the squared Euclidean distance (of the L2-normalised embeddings for ``metric="cosine"``, i.e.
``2 - 2 cos``) divided by its mean over all pairs of distinct nodes, and ``N(p, k)`` is ``p`` followed by its
``k`` nearest other nodes (ties: the smaller node index). Then, as in the paper:

- ``R(p, k) = {g in N(p, k) : p in N(g, k)}``, the k-reciprocal neighbours;
- ``R*(p) = R(p, k1)`` joined by ``R(q, round(k1 / 2))`` of every ``q`` in ``R(p, k1)`` of which more than 2/3 lie
  in ``R(p, k1)``;
- ``V_p = exp(-d(p, g))`` on ``R*(p)``, normalised to sum 1; local query expansion: ``V_p`` <- the mean of ``V``
  over ``N(p, k2 - 1)`` (``k2`` nodes, ``p`` included);
- the Jaccard distance ``d_J(p, g) = 1 - sum_j min(V_pj, V_gj) / sum_j max(V_pj, V_gj)``;
- the final distance ``d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g)``.

Every set above lies within the neighbour graph when ``K >= k1`` (the graph is one chunked kNN search of the nodes
among themselves, which covers query -> gallery, gallery -> gallery, gallery -> query and query -> query);
distances of pairs off the graph (two hops away) are computed pair by pair. ``V`` holds ``O(N * |R*| * k2)``
entries, the graph ``O(N * K)``.

Re-ranked (the candidates of query ``q``): the gallery items among ``q``'s K graph neighbours and the items of its
incoming row, minus what the split excludes (``q`` itself, its sequence); they are returned sorted by ``d*`` (ties:
the smaller gallery index). A gallery item outside the candidates is not returned. When it shares no support with
``q`` (``d_J = 1``) it ranks, in the dense algorithm, behind every candidate whose ``d*`` is below
``1 - lambda + lambda d_K(q)`` (``d_K``: the K-th graph neighbour's distance), keeping its original order there. So
the rows can only miss gallery items farther than the K-th neighbour whose encoding shares support with ``q``'s
(items a few hops away in the graph). With ``K >= N - 1`` the rows equal the dense algorithm's.

Deviations from the published (dense, ``O(N^2)``) code, besides computing on the graph:

- it divides each row of squared distances by the row's maximum over all nodes (that needs the full row); here the
  squared distances are divided by one number, their mean over all pairs (``O(N D)``: ``2 sum |x - mean|^2 /
  (N - 1)``), a rescaled metric as the paper's Mahalanobis ``d`` allows, which keeps ``d`` symmetric;
- its ties are in ``argsort``'s arbitrary order; here by node index, each node first in its own list;
- it stacks disjoint query and gallery sets; an item both query and gallery is one node here;
- the split's exclusions do not shape the graph (the code knows none); they only remove items from the rows.

The expansion keeps the code's strict "more than 2/3" (the paper writes "at least").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from omlcore.postprocessing.base import PostprocessorError, RetrievalContext, with_rows
from omlcore.postprocessing.neighbours import (
    check_inputs,
    count_argument,
    excluded_pairs,
    number_argument,
    optional_count_argument,
    output_width,
    sort_rows,
)
from omlcore.protocols import KNNBackend
from omlcore.retrieval.results import QueryGallerySplit, RetrievalResults

__all__ = ["KReciprocalReranker"]

_CHUNK_ENTRIES = 2**19  # entries per chunk of the largest temporaries (each with a few int64 companions: ~40 MiB)
_DENSE_ROWS = 2**22  # float64 slots of the dense query rows of V in _jaccard (32 MiB)


@dataclass(frozen=True)
class _Rows:
    """A sparse matrix by rows (CSR): row ``i`` holds ``cols[starts[i]:starts[i + 1]]`` / ``values[...]``."""

    starts: Tensor
    cols: Tensor
    values: Tensor

    @classmethod
    def from_counts(cls, counts: Tensor, cols: Tensor, values: Tensor) -> _Rows:
        """From entries sorted by row, ``counts[i]`` of them in row ``i``."""
        starts = torch.zeros(len(counts) + 1, dtype=torch.long, device=counts.device)
        starts[1:] = torch.cumsum(counts, 0)
        return cls(starts, cols, values)

    def gather(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The entries of ``rows`` (a 1-D tensor, repeats allowed): ``(position in rows, col, value)``."""
        lengths = self.starts[rows + 1] - self.starts[rows]
        owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(len(owner), device=rows.device) - first[owner] + self.starts[rows][owner]
        return owner, self.cols[positions], self.values[positions]


def _chunks(n: int, per_row: int) -> list[slice]:
    size = max(1, _CHUNK_ENTRIES // max(1, per_row))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _nodes(split: QueryGallerySplit) -> tuple[Tensor, Tensor]:
    """The graph's nodes: the gallery (node ``j`` is gallery item ``j``), then the queries that are not gallery items
    (by item id); and the node of every query."""
    gallery, queries = split.gallery, split.queries
    if queries is gallery:
        return gallery, torch.arange(len(gallery), device=gallery.device)
    position = torch.full((len(queries),), -1, dtype=torch.long, device=queries.device)
    if split.query_ids is not None and split.gallery_ids is not None:
        sorted_ids, order = torch.sort(split.gallery_ids)
        at = torch.searchsorted(sorted_ids, split.query_ids).clamp_max(len(gallery) - 1)
        position = torch.where(sorted_ids[at] == split.query_ids, order[at], -1)
    extra = position < 0
    position[extra] = len(gallery) + torch.arange(int(extra.sum()), device=queries.device)
    return torch.cat([gallery, queries[extra]]), position


def _mean_squared_distance(points: Tensor) -> float:
    """``d``'s scale: the mean squared distance over pairs of distinct rows, ``2 sum |x - mean|^2 / (N - 1)``;
    1 when there is no pair or all rows are equal."""
    if len(points) < 2:
        return 1.0
    parts = points.split(8192)
    mean = sum(part.double().sum(dim=0) for part in parts) / len(points)
    spread = sum(float((part.double() - mean).pow(2).sum()) for part in parts)
    return 2 * spread / (len(points) - 1) or 1.0


def _squared_distances(points: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """float64 squared distances of the pairs ``(left[i], right[i])`` (node indices), from differences."""
    out = torch.empty(len(left), dtype=torch.float64, device=points.device)
    for part in _chunks(len(left), points.shape[1]):
        out[part] = (points[left[part]] - points[right[part]]).pow(2).sum(dim=1)
    return out


@dataclass(frozen=True)
class _Graph:
    """Every node's list: itself, then its K nearest other nodes (ties: the smaller index), with their ``d``."""

    points: Tensor
    scale: float
    ids: Tensor
    distances: Tensor

    @classmethod
    def search(cls, points: Tensor, knn: KNNBackend, metric: str, k: int) -> _Graph:
        """One chunked kNN search of the nodes among themselves (each distance once where the backend can)."""
        scale = _mean_squared_distance(points)
        itself = torch.arange(len(points), device=points.device)
        zero = torch.zeros(len(points), 1, dtype=torch.float64, device=points.device)
        if k == 0:
            return cls(points, scale, itself[:, None], zero)
        distances, ids = knn.search(points, points, k, [(itself, itself)])
        if bool((ids < 0).any()):
            raise PostprocessorError(
                f"KReciprocalReranker: the kNN backend {knn!r} found fewer than graph_k={k} neighbours for some "
                "items (an approximate index?); use an exact backend (e.g. 'exact') or a smaller graph_k"
            )
        # squared Euclidean distances; for the cosine distance 1 - cos of unit vectors: 2 - 2 cos
        squared = distances.double().pow(2) if metric == "l2" else distances.double() * 2
        return cls(points, scale, torch.cat([itself[:, None], ids], 1), torch.cat([zero, squared / scale], 1))

    def d(self, left: Tensor, right: Tensor) -> Tensor:
        """``d`` of the pairs ``(left[i], right[i])``: from ``left[i]``'s list, else computed from the points."""
        out = torch.empty(len(left), dtype=torch.float64, device=left.device)
        for part in _chunks(len(left), self.ids.shape[1]):
            match = self.ids[left[part]] == right[part, None]
            out[part] = self.distances[left[part], match.int().argmax(dim=1)]
            missing = (~match.any(dim=1)).nonzero().flatten() + part.start
            out[missing] = _squared_distances(self.points, left[missing], right[missing]) / self.scale
        return out


def _reciprocal(lists: Tensor) -> Tensor:
    """bool, shaped like ``lists`` (the first columns of the graph): ``p`` is in the list of ``lists[p, i]``."""
    out = torch.empty(lists.shape, dtype=torch.bool, device=lists.device)
    width = lists.shape[1]
    for rows in _chunks(len(lists), width * width):
        nodes = torch.arange(rows.start, rows.stop, device=lists.device)
        out[rows] = (lists[lists[rows]] == nodes[:, None, None]).any(dim=2)
    return out


def _expanded_sets(graph: Tensor, k1: int) -> tuple[Tensor, Tensor]:
    """``R*(p)`` of every node as ``(node, member)`` entries sorted by node, then member."""
    full = graph[:, : k1 + 1]
    half = graph[:, : round(k1 / 2) + 1]
    full_mask, half_mask = _reciprocal(full), _reciprocal(half)
    half_sizes = half_mask.sum(dim=1)
    nodes, members = [], []
    width, half_width = full.shape[1], half.shape[1]
    for rows in _chunks(len(graph), width * half_width * width):
        reciprocal = torch.where(full_mask[rows], full[rows], -1)  # R(p, k1), -1 elsewhere
        candidates = full[rows]
        their_sets = torch.where(half_mask[candidates], half[candidates], -2)  # R(q, k1/2) of each q, -2 elsewhere
        shared = (their_sets[..., None] == reciprocal[:, None, None, :]).any(dim=3).sum(dim=2)
        chosen = full_mask[rows] & (3 * shared > 2 * half_sizes[candidates])
        added = torch.where(chosen[..., None], their_sets, -1).flatten(1)
        joined = torch.sort(torch.cat([reciprocal, added.clamp_min(-1)], dim=1), dim=1).values
        keep = joined >= 0
        keep[:, 1:] &= joined[:, 1:] != joined[:, :-1]
        row, column = keep.nonzero().unbind(1)
        nodes.append(row + rows.start)
        members.append(joined[row, column])
    return torch.cat(nodes), torch.cat(members)


def _encode(graph: _Graph, k1: int, k2: int) -> _Rows:
    """``V`` after local query expansion (see the module docstring), rows sorted by column."""
    n = len(graph.ids)
    device = graph.ids.device
    nodes, members = _expanded_sets(graph.ids, k1)
    distances = graph.d(nodes, members)
    nearest = torch.full((n,), torch.inf, dtype=torch.float64, device=device)
    nearest.scatter_reduce_(0, nodes, distances, "amin")
    weights = torch.exp(nearest[nodes] - distances)  # exp(-d) up to a factor per row, which normalising removes
    totals = torch.zeros(n, dtype=torch.float64, device=device).index_add_(0, nodes, weights)
    encoding = _Rows.from_counts(torch.bincount(nodes, minlength=n), members, weights / totals[nodes])
    if k2 <= 1:
        return encoding
    sources = graph.ids[:, :k2]
    width = sources.shape[1]
    counts, cols_out, values_out = [], [], []
    for rows in _chunks(n, width * len(members) // n + 1):
        owner, cols, values = encoding.gather(sources[rows].flatten())
        keys, inverse = torch.unique((owner // width) * n + cols, return_inverse=True)
        sums = torch.zeros(len(keys), dtype=torch.float64, device=device).index_add_(0, inverse, values)
        counts.append(torch.bincount(keys // n, minlength=rows.stop - rows.start))
        cols_out.append(keys % n)
        values_out.append(sums.div_(width))
    return _Rows.from_counts(torch.cat(counts), torch.cat(cols_out), torch.cat(values_out))


def _jaccard(encoding: _Rows, query_nodes: Tensor, candidates: Tensor, n_nodes: int) -> Tensor:
    """``d_J`` of every pair ``(query_nodes[i], candidates[i, j])`` of nodes (``-1``: none, ``d_J = 1``), float64."""
    out = torch.ones(candidates.shape, dtype=torch.float64, device=candidates.device)
    dense = torch.zeros(0, dtype=torch.float64, device=candidates.device)
    per_query = len(encoding.cols) // max(1, n_nodes) * (candidates.shape[1] + 1)
    for rows in _chunks(len(query_nodes), max(per_query, n_nodes * _CHUNK_ENTRIES // _DENSE_ROWS)):
        if len(dense) < (rows.stop - rows.start) * n_nodes:
            dense = torch.zeros((rows.stop - rows.start) * n_nodes, dtype=torch.float64, device=out.device)
        owner, cols, values = encoding.gather(query_nodes[rows])
        flat = owner * n_nodes + cols
        dense[flat] = values  # this chunk's query rows of V, dense
        pair_row, pair_column = (candidates[rows] >= 0).nonzero().unbind(1)
        pair, cols, values = encoding.gather(candidates[rows][pair_row, pair_column])
        shared = torch.minimum(values, dense[pair_row[pair] * n_nodes + cols])
        overlap = torch.zeros(len(pair_row), dtype=torch.float64, device=out.device).index_add_(0, pair, shared)
        out[rows][pair_row, pair_column] = 1 - overlap / (2 - overlap)  # sum max = 2 - sum min: rows sum to 1
        dense[flat] = 0
    return out


class KReciprocalReranker:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) on a top-K neighbour graph; see the module docstring for the
    formulas, the candidates that are re-ranked, and the deviations from the published dense code.

    Args:
        k1: size of the k-reciprocal neighbourhoods (20 in the paper).
        k2: nodes averaged by the local query expansion, the node itself included (6 in the paper; 1: none).
        lambda_value: weight of the original distance in the final one, in ``[0, 1]`` (0.3 in the paper).
        graph_k: K, neighbours per node in the graph; default and minimum ``max(k1, k2 - 1, k)``; clipped to the
            number of nodes minus one. A larger K re-ranks more candidates (closer to the dense algorithm).
        k: results per query; default: the width of the incoming results.
    """

    def __init__(
        self, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, graph_k: int | None = None, k: int | None = None
    ) -> None:
        self.k1 = count_argument("k1", k1)
        self.k2 = count_argument("k2", k2)
        self.lambda_value = number_argument("lambda_value", lambda_value, 0.0, 1.0)
        self.graph_k = optional_count_argument("graph_k", graph_k)
        self.k = optional_count_argument("k", k)

    def __repr__(self) -> str:
        return (
            f"KReciprocalReranker(k1={self.k1}, k2={self.k2}, lambda_value={self.lambda_value}, "
            f"graph_k={self.graph_k}, k={self.k})"
        )

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        check_inputs("KReciprocalReranker", results, context)
        width = output_width(self.k, results)
        if width == 0:
            return results
        split = context.split
        points, query_nodes = _nodes(split)
        if context.metric == "cosine":
            points = torch.nn.functional.normalize(points, dim=1)
        graph_k = min(max(self.k1, self.k2 - 1, width, self.graph_k or 0), len(points) - 1)
        graph = _Graph.search(points, context.knn, context.metric, graph_k)
        encoding = _encode(graph, self.k1, self.k2)

        # candidates: the gallery items among the K graph neighbours and in the incoming row, once, not excluded
        neighbours = graph.ids[query_nodes, 1:]
        in_gallery = torch.where(neighbours < results.n_gallery, neighbours, -1)
        candidates = torch.sort(torch.cat([in_gallery, results.retrieved_ids], dim=1), dim=1).values
        candidates[:, 1:].masked_fill_(candidates[:, 1:] == candidates[:, :-1], -1)
        valid = candidates >= 0
        rows = torch.arange(len(query_nodes), device=valid.device)[:, None].expand_as(valid)
        valid[valid.clone()] = ~excluded_pairs(split, rows[valid], candidates[valid])
        candidates.masked_fill_(~valid, -1)

        final = _jaccard(encoding, query_nodes, candidates, len(points)).mul_(1 - self.lambda_value)
        final[valid] += self.lambda_value * graph.d(query_nodes[rows[valid]], candidates[valid])
        distances, ids = sort_rows(final, candidates, width)
        return with_rows(results, distances.float(), ids)
