"""faiss backends for omlcore's ``KNNBackend`` protocol: exact flat search, and approximate IVF / HNSW.

``backend.search(queries, gallery, k, exclude=None) -> (distances, indices)`` as omlcore specifies it:
float ``(Q, k)`` ascending distances and int64 ``(Q, k)`` gallery indices, ``(inf, -1)`` padding, gallery
item ``g`` skipped for query ``q`` when ``query_keys[q] == gallery_keys[g] >= 0`` for an exclusion pair.
faiss cannot skip items, so each query asks for ``k`` plus the number of gallery items it may have to drop
(queries are grouped by that depth, rounded up to a power of two), and the excluded ones are removed.
Within the returned items, equal distances are ordered by gallery index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import faiss
import numpy as np
import torch
from torch import Tensor

from omlcore.retrieval import RetrievalInputError

__all__ = ["FaissFlatKNN", "FaissHNSWKNN", "FaissIVFKNN"]

Metric = Literal["l2", "cosine"]
Exclude = Sequence[tuple[Tensor, Tensor]]


def _as_float32(name: str, x: Tensor, normalise: bool) -> np.ndarray:
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise RetrievalInputError(f"{name} must be a 2-D floating torch.Tensor (N, D), got {getattr(x, 'shape', x)}")
    array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
    if not np.isfinite(array).all():
        rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise RetrievalInputError(f"{name} contain NaN or Inf in rows {rows[:5].tolist()}: fix or drop these items")
    if normalise:
        array = array.copy()  # never normalise the caller's tensor in place
        faiss.normalize_L2(array)
    return array


def _excluded_counts(exclude: Exclude, n_queries: int) -> np.ndarray:
    """Per query, an upper bound of the gallery items the exclusion pairs remove."""
    counts = np.zeros(n_queries, dtype=np.int64)
    for query_keys, gallery_keys in exclude:
        keys, gallery = query_keys.cpu().numpy(), gallery_keys.cpu().numpy()
        values, value_counts = np.unique(gallery[gallery >= 0], return_counts=True)
        if len(values) == 0:
            continue
        position = np.searchsorted(values, keys).clip(max=len(values) - 1)
        counts += np.where((values[position] == keys) & (keys >= 0), value_counts[position], 0)
    return counts


class _FaissKNN:
    """Shared search logic; subclasses build the index."""

    def __init__(self, metric: Metric = "l2") -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        self.metric: Metric = metric

    @property
    def _faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def _build(self, gallery: np.ndarray) -> faiss.Index:
        raise NotImplementedError

    def _distances(self, raw: np.ndarray) -> np.ndarray:
        """faiss' squared L2 / inner products to omlcore's distances (Euclidean / ``1 - cos``)."""
        if self.metric == "l2":
            return np.sqrt(np.maximum(raw, 0.0))
        return np.maximum(1.0 - raw, 0.0)

    def search(self, queries: Tensor, gallery: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        normalise = self.metric == "cosine"
        query_array = _as_float32("queries", queries, normalise)
        gallery_array = _as_float32("gallery", gallery, normalise)
        if query_array.shape[1] != gallery_array.shape[1]:
            raise RetrievalInputError(
                f"queries have {query_array.shape[1]} dimensions and the gallery {gallery_array.shape[1]}"
            )
        n_queries, n_gallery = len(query_array), len(gallery_array)
        distances = np.full((n_queries, k), np.inf, dtype=np.float32)
        indices = np.full((n_queries, k), -1, dtype=np.int64)
        if n_queries and n_gallery:
            pairs = [(qk.cpu().numpy(), gk.cpu().numpy()) for qk, gk in exclude or ()]
            index = self._build(gallery_array)
            needed = np.minimum(k + _excluded_counts(exclude or (), n_queries), n_gallery)
            depths = np.minimum(2 ** np.ceil(np.log2(np.maximum(needed, 1))).astype(np.int64), n_gallery)
            for depth in np.unique(depths):
                rows = np.flatnonzero(depths == depth)
                raw, found = index.search(query_array[rows], int(depth))
                found = found.astype(np.int64)
                valid = found >= 0
                for query_keys, gallery_keys in pairs:
                    keys = query_keys[rows][:, None]
                    valid &= ~((keys == gallery_keys[found.clip(min=0)]) & (keys >= 0))
                dist = np.where(valid, self._distances(raw), np.inf).astype(np.float32)
                found = np.where(valid, found, -1)
                order = np.lexsort((np.where(valid, found, np.iinfo(np.int64).max), dist), axis=1)[:, :k]
                width = order.shape[1]
                distances[rows, :width] = np.take_along_axis(dist, order, axis=1)
                indices[rows, :width] = np.take_along_axis(found, order, axis=1)
        device = queries.device
        return torch.from_numpy(distances).to(device), torch.from_numpy(indices).to(device)


class FaissFlatKNN(_FaissKNN):
    """Exact search with ``faiss.IndexFlatL2`` (``metric="l2"``) or ``IndexFlatIP`` on normalised vectors."""

    def _build(self, gallery: np.ndarray) -> faiss.Index:
        index = faiss.IndexFlat(gallery.shape[1], self._faiss_metric)
        index.add(gallery)
        return index

    def __repr__(self) -> str:
        return f"FaissFlatKNN(metric={self.metric!r})"


class FaissIVFKNN(_FaissKNN):
    """Approximate search with ``faiss.IndexIVFFlat``: ``nlist`` k-means cells, ``nprobe`` of them searched.

    The cells are trained on the gallery; ``nlist`` is capped at the gallery size.
    """

    def __init__(self, metric: Metric = "l2", nlist: int = 100, nprobe: int = 8) -> None:
        super().__init__(metric)
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"nlist and nprobe must be positive, got nlist={nlist}, nprobe={nprobe}")
        self.nlist = nlist
        self.nprobe = nprobe

    def _build(self, gallery: np.ndarray) -> faiss.Index:
        dim, nlist = gallery.shape[1], min(self.nlist, len(gallery))
        quantizer = faiss.IndexFlat(dim, self._faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, self._faiss_metric)
        index.train(gallery)
        index.add(gallery)
        index.nprobe = min(self.nprobe, nlist)
        return index

    def __repr__(self) -> str:
        return f"FaissIVFKNN(metric={self.metric!r}, nlist={self.nlist}, nprobe={self.nprobe})"


class FaissHNSWKNN(_FaissKNN):
    """Approximate search with ``faiss.IndexHNSWFlat``: ``M`` links per node, ``ef_search`` / ``ef_construction``."""

    def __init__(self, metric: Metric = "l2", M: int = 32, ef_search: int = 64, ef_construction: int = 40) -> None:
        super().__init__(metric)
        if min(M, ef_search, ef_construction) < 1:
            raise ValueError(
                f"M, ef_search and ef_construction must be positive, got {M}, {ef_search}, {ef_construction}"
            )
        self.M = M
        self.ef_search = ef_search
        self.ef_construction = ef_construction

    def _build(self, gallery: np.ndarray) -> faiss.Index:
        index = faiss.IndexHNSWFlat(gallery.shape[1], self.M, self._faiss_metric)
        index.hnsw.efConstruction = self.ef_construction
        index.add(gallery)
        index.hnsw.efSearch = self.ef_search
        return index

    def __repr__(self) -> str:
        return (
            f"FaissHNSWKNN(metric={self.metric!r}, M={self.M}, ef_search={self.ef_search}, "
            f"ef_construction={self.ef_construction})"
        )
