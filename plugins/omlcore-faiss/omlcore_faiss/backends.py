"""faiss backends for omlcore's ``KNNBackend`` protocol: exact flat search, and approximate IVF / HNSW.

``backend.search(queries, gallery, k, exclude=None) -> (distances, indices)`` as omlcore specifies it:
float ``(Q, k)`` ascending distances and int64 ``(Q, k)`` gallery indices, ``(inf, -1)`` padding, gallery
item ``g`` skipped for query ``q`` when ``query_keys[q] == gallery_keys[g] >= 0`` for an exclusion pair.
faiss cannot skip items, so each query asks for ``k`` plus the number of gallery items it may have to drop
(queries are grouped by that depth, rounded up to a power of two), and the excluded ones are removed.
Within the returned items, equal distances are ordered by gallery index.

Each backend is also persistable (omlcore's ``omlcore.index.PersistableKNN``): ``fit`` builds its faiss index from
gallery blocks (IVF cells trained on an evenly spaced sample of at most ``256 * nlist`` rows, then every block
added), ``extend`` adds rows, ``search_fitted`` searches the built index, and ``save`` / ``load`` write it to and
read it from a folder (``faiss.index``, ``faiss_index.json``). A loaded IVF index is memory-mapped: its inverted
lists stay in the page cache, not in the process's own memory, until ``extend`` reads it whole to add to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np
import torch
from torch import Tensor

from omlcore.retrieval import RetrievalInputError

__all__ = ["FaissFlatKNN", "FaissHNSWKNN", "FaissIVFKNN"]

Metric = Literal["l2", "cosine"]
Exclude = Sequence[tuple[Tensor, Tensor]]
_INDEX_FILE = "faiss.index"
_INFO_FILE = "faiss_index.json"
#: Training rows per IVF cell at most (faiss' own cap on what k-means uses).
_TRAIN_PER_CELL = 256


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
    """Shared search and persistence; subclasses make the empty index (:meth:`_new`)."""

    def __init__(self, metric: Metric = "l2") -> None:
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        self.metric: Metric = metric
        self._index: faiss.Index | None = None
        self._mapped: Path | None = None  # the file the built index is memory-mapped from (read-only)

    @property
    def _faiss_metric(self) -> int:
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def _new(self, dim: int, n: int) -> faiss.Index:
        """An empty index, with its search parameters, for a gallery of ``n`` rows."""
        raise NotImplementedError

    def _train_rows(self, index: faiss.Index, n: int) -> int:
        """How many gallery rows training takes (an evenly spaced sample)."""
        return n

    def _build(self, gallery: np.ndarray) -> faiss.Index:
        index = self._new(gallery.shape[1], len(gallery))
        if not index.is_trained:
            index.train(gallery)
        index.add(gallery)
        return index

    # --- omlcore.index.PersistableKNN ----------------------------------------------------------------------------

    def fit(self, blocks: Callable[[], Iterable[Tensor]], n: int) -> None:
        """Build the index over a gallery of ``n`` rows given as blocks (see the module docstring)."""
        index: faiss.Index | None = None
        if n < 1:
            raise RetrievalInputError("the gallery is empty: nothing to build a faiss index of")
        for block in blocks():
            array = _as_float32("gallery", block, self.metric == "cosine")
            if index is None:
                index = self._new(array.shape[1], n)
                if not index.is_trained:
                    index.train(self._sample(blocks, n, self._train_rows(index, n)))
            index.add(array)
        if index is None or index.ntotal != n:
            raise RetrievalInputError(f"the gallery blocks held {0 if index is None else index.ntotal} rows, not {n}")
        self._index, self._mapped = index, None

    def _sample(self, blocks: Callable[[], Iterable[Tensor]], n: int, size: int) -> np.ndarray:
        """Rows ``0, step, 2 * step ...`` of the gallery (``size`` of them at most), read block by block."""
        step = -(-n // max(size, 1))
        parts, offset = [], 0
        for block in blocks():
            first = -offset % step
            parts.append(_as_float32("gallery", block[first::step], self.metric == "cosine"))
            offset += len(block)
        return np.concatenate(parts)

    def extend(self, blocks: Iterable[Tensor]) -> None:
        """Add gallery rows after those in the built (or loaded) index."""
        index = self._built()
        if self._mapped is not None:  # a memory-mapped index is read-only: read it whole to add to it
            index = self._index = faiss.read_index(str(self._mapped))
            self._mapped = None
        for block in blocks:
            array = _as_float32("gallery", block, self.metric == "cosine")
            if array.shape[1] != index.d:
                raise RetrievalInputError(f"the index holds {index.d}-dim vectors, the new rows {array.shape[1]}")
            index.add(array)

    def search_fitted(self, queries: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`search` in the built (or loaded) index instead of a gallery."""
        index = self._built()
        return self._search(index, index.ntotal, queries, k, exclude)

    def save(self, folder: Path) -> None:
        """Write the built index to ``folder``: ``faiss.index`` and what it is (``faiss_index.json``)."""
        index = self._built()
        faiss.write_index(index, str(folder / _INDEX_FILE))
        info = {"backend": type(self).__name__, "metric": self.metric, "dim": index.d, "rows": index.ntotal}
        (folder / _INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    def load(self, folder: Path) -> None:
        """Read the index :meth:`save` wrote (memory-mapped where faiss can); its kind and metric must be ours."""
        info: dict[str, Any] = json.loads((folder / _INFO_FILE).read_text(encoding="utf-8"))
        if (info.get("backend"), info.get("metric")) != (type(self).__name__, self.metric):
            raise RetrievalInputError(
                f"'{folder}' holds a {info.get('backend')} index of metric {info.get('metric')!r}, not a "
                f"{type(self).__name__} of metric {self.metric!r}: build it again with this backend"
            )
        path = folder / _INDEX_FILE
        self._index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        self._mapped = path
        self._tune(self._index)

    def _tune(self, index: faiss.Index) -> None:
        """Set this backend's search-time parameters on a loaded index."""

    def _built(self) -> faiss.Index:
        if self._index is None:
            raise RuntimeError(f"{type(self).__name__} has no built index: call fit or load first")
        return self._index

    def _distances(self, raw: np.ndarray) -> np.ndarray:
        """faiss' squared L2 / inner products to omlcore's distances (Euclidean / ``1 - cos``)."""
        if self.metric == "l2":
            return np.sqrt(np.maximum(raw, 0.0))
        return np.maximum(1.0 - raw, 0.0)

    def search(self, queries: Tensor, gallery: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        gallery_array = _as_float32("gallery", gallery, self.metric == "cosine")
        index = self._build(gallery_array) if len(gallery_array) and len(queries) else None
        return self._search(index, len(gallery_array), queries, k, exclude, gallery_array.shape[1])

    def _search(
        self,
        index: faiss.Index | None,
        n_gallery: int,
        queries: Tensor,
        k: int,
        exclude: Exclude | None,
        dim: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The top ``k`` of ``queries`` in ``index`` (of ``n_gallery`` rows; None when there is nothing to search)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        query_array = _as_float32("queries", queries, self.metric == "cosine")
        dim = index.d if index is not None else dim
        if dim is not None and query_array.shape[1] != dim:
            raise RetrievalInputError(f"queries have {query_array.shape[1]} dimensions and the gallery {dim}")
        n_queries = len(query_array)
        distances = np.full((n_queries, k), np.inf, dtype=np.float32)
        indices = np.full((n_queries, k), -1, dtype=np.int64)
        if index is not None and n_queries and n_gallery:
            pairs = [(qk.cpu().numpy(), gk.cpu().numpy()) for qk, gk in exclude or ()]
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

    def _new(self, dim: int, n: int) -> faiss.Index:
        return faiss.IndexFlat(dim, self._faiss_metric)

    def __repr__(self) -> str:
        return f"FaissFlatKNN(metric={self.metric!r})"


class FaissIVFKNN(_FaissKNN):
    """Approximate search with ``faiss.IndexIVFFlat``: ``nlist`` k-means cells, ``nprobe`` of them searched.

    The cells are trained on the gallery (at most ``256 * nlist`` evenly spaced rows of it); ``nlist`` is capped at
    the gallery size. A saved index keeps its cells; ``nprobe`` is this backend's.
    """

    def __init__(self, metric: Metric = "l2", nlist: int = 100, nprobe: int = 8) -> None:
        super().__init__(metric)
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"nlist and nprobe must be positive, got nlist={nlist}, nprobe={nprobe}")
        self.nlist = nlist
        self.nprobe = nprobe

    def _new(self, dim: int, n: int) -> faiss.Index:
        nlist = min(self.nlist, n)
        quantizer = faiss.IndexFlat(dim, self._faiss_metric)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, self._faiss_metric)
        self._tune(index)
        return index

    def _train_rows(self, index: faiss.Index, n: int) -> int:
        return min(n, _TRAIN_PER_CELL * faiss.extract_index_ivf(index).nlist)

    def _tune(self, index: faiss.Index) -> None:
        faiss.extract_index_ivf(index).nprobe = min(self.nprobe, faiss.extract_index_ivf(index).nlist)

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

    def _new(self, dim: int, n: int) -> faiss.Index:
        index = faiss.IndexHNSWFlat(dim, self.M, self._faiss_metric)
        index.hnsw.efConstruction = self.ef_construction
        self._tune(index)
        return index

    def _tune(self, index: faiss.Index) -> None:
        cast(faiss.IndexHNSWFlat, index).hnsw.efSearch = self.ef_search

    def __repr__(self) -> str:
        return (
            f"FaissHNSWKNN(metric={self.metric!r}, M={self.M}, ef_search={self.ef_search}, "
            f"ef_construction={self.ef_construction})"
        )
