"""Index: a gallery of embeddings with their items, searched many times, saved to and loaded from a folder.

>>> import torch
>>> from omlcore.index import Index
>>> index = Index.build(torch.randn(100, 16), labels=torch.arange(100) % 10)
>>> results = index.search(torch.randn(3, 16), k=5)
>>> results.distances.shape
torch.Size([3, 5])

Exact search (the default) streams the gallery in blocks of rows: a saved index is read from its files block by
block, never mapped or loaded whole, so memory stays ``O(Q * k + block)`` however large the gallery. Another
registered :class:`~omlcore.protocols.KNNBackend` searches the whole gallery at once, unless it is a
:class:`PersistableKNN` (``faiss.ivf`` / ``faiss.hnsw`` / ``faiss.flat`` from omlcore-faiss): that one builds its
structure once, from the gallery's blocks, and the index keeps it in its folder's ``backend/`` (each file in the
manifest with its checksum), loads it back instead of building it again, and extends it with every :meth:`Index.add`.
Postprocessors (:mod:`omlcore.postprocessing`) re-rank at search time. The folder format is in
:mod:`omlcore.index.storage`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

import omlcore
from omlcore.config import resolve
from omlcore.index.storage import (
    FORMAT,
    VERSION,
    IndexFormatError,
    file_record,
    locked,
    read_manifest,
    read_rows,
    replace_folder,
    write_manifest,
)
from omlcore.labels import as_class_ids
from omlcore.postprocessing import RetrievalContext, build_postprocessor, check_postprocessed
from omlcore.protocols import KNNBackend, Postprocessor
from omlcore.retrieval import ExactKNN, QueryGallerySplit, RetrievalResults, relevant_counts
from omlcore.retrieval.scores import DistanceMetric, Exclude
from omlcore.retrieval.sharded import merge_across_ranks, rank_and_world, shard_bounds
from omlcore.retrieval.validation import as_embeddings, as_int_keys, check_finite

__all__ = ["Index", "IndexDtype", "PersistableKNN"]

IndexDtype = Literal["float32", "float16"]
#: Gallery rows per block of a streamed exact search (4 MiB of float32 at dim 64, 16 MiB at dim 256).
BLOCK_ROWS = 16_384
_ITEM_COLUMNS = ("id", "label", "path", "text")
#: Where a persistable backend's state lives in an index folder.
BACKEND_DIR = "backend"


@runtime_checkable
class PersistableKNN(Protocol):
    """A :class:`~omlcore.protocols.KNNBackend` whose search structure is built once and kept with the index.

    Built from the gallery with :meth:`fit`, grown with :meth:`extend`, searched with :meth:`search_fitted`, and written
    to / read from a folder with :meth:`save` / :meth:`load`. An :class:`Index` with such a backend builds it on the
    first search or save, keeps it in ``backend/`` of its folder and extends it on every :meth:`Index.add`. faiss'
    IVF, HNSW and flat indexes of omlcore-faiss are ones.
    """

    def fit(self, blocks: Callable[[], Iterable[Tensor]], n: int) -> None:
        """Build the structure over a gallery of ``n`` rows; each call of ``blocks()`` yields them again, in order,
        as float32 ``(B, D)`` blocks (the gallery may not fit in memory)."""
        ...

    def extend(self, blocks: Iterable[Tensor]) -> None:
        """Append gallery rows, numbered after those already in."""
        ...

    def search_fitted(self, queries: Tensor, k: int, exclude: Exclude | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`KNNBackend.search <omlcore.protocols.KNNBackend.search>` over the rows fitted and extended."""
        ...

    def save(self, folder: Path) -> None:
        """Write the structure into ``folder`` (it exists and is empty)."""
        ...

    def load(self, folder: Path) -> None:
        """Read the structure that :meth:`save` wrote into ``folder``."""
        ...


@dataclass
class _Segment:
    """A run of consecutive items: in memory (``embeddings``) or in the files of a saved index (``file``)."""

    items: pd.DataFrame
    embeddings: np.ndarray | None = None
    file: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.embeddings is not None:
            return self.embeddings[start:stop]
        assert self.file is not None
        return read_rows(self.file, start, stop)

    def mapped(self) -> np.ndarray:
        """All rows; memory-mapped for a saved segment."""
        if self.embeddings is not None:
            return self.embeddings
        assert self.file is not None
        return np.load(self.file, mmap_mode="r")


def _read(piece: tuple[_Segment, int, int]) -> Tensor:
    """Rows ``begin .. end`` of a segment as a float32 tensor."""
    segment, begin, end = piece
    return torch.from_numpy(np.asarray(segment.rows(begin, end), dtype=np.float32))


class Index:
    """A searchable gallery: embeddings (float32 or float16), items (ids, labels, paths or texts) and a manifest.

    Args:
        dim: the embeddings' size.
        metric: ``"l2"`` or ``"cosine"``.
        dtype: how embeddings are stored (``"float16"`` halves the files; search computes in float32).
        model: what made the embeddings, e.g. ``{"name": "resnet18", "weights_sha256": ...}``; queries from another
            model are refused by :meth:`check_model`.
        config: the config that built it (kept in the manifest).
        backend: None (exact, streamed), a registered kNN backend name or ``{"name", "args"}`` spec; a
            :class:`PersistableKNN` one is kept in the folder.

    Build with :meth:`build`, grow with :meth:`add`, query with :meth:`search`, keep with :meth:`save` /
    :meth:`load`. On a saved (or loaded) index, :meth:`add` writes a new segment to the folder under a lock (and
    extends the saved backend state, if any).
    """

    def __init__(
        self,
        dim: int,
        metric: DistanceMetric = "l2",
        dtype: IndexDtype = "float32",
        model: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        backend: str | Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if metric not in ("l2", "cosine"):
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        self.dim, self.metric, self.dtype = dim, metric, dtype
        self.model = dict(model) if model is not None else None
        self.config = dict(config) if config is not None else None
        self.backend_spec: dict[str, Any] | None = _backend_spec(backend)
        self.folder: Path | None = None
        self._segments: list[_Segment] = []
        self._knn: KNNBackend | None = None
        self._fitted_rows: int | None = None  # the gallery rows the persistable backend holds (None: not built)
        self._state: dict[str, Any] | None = None  # the folder's saved backend state, when it is this backend's

    def __len__(self) -> int:
        return sum(len(segment) for segment in self._segments)

    def __repr__(self) -> str:
        where = f", folder='{self.folder}'" if self.folder else ""
        return f"Index({len(self)} items, dim={self.dim}, metric={self.metric!r}, dtype={self.dtype!r}{where})"

    # --- building ------------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        embeddings: Any,
        *,
        labels: Any = None,
        paths: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
        ids: Any = None,
        metric: DistanceMetric = "l2",
        dtype: IndexDtype = "float32",
        model: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        backend: str | Mapping[str, Any] | None = None,
    ) -> Index:
        """An index of ``embeddings`` ``(N, D)`` and their items (each optional; ``ids`` default ``0 .. N-1``)."""
        tensor = as_embeddings("embeddings", embeddings)
        index = cls(tensor.shape[1], metric, dtype, model, config, backend)
        index.add(tensor, labels=labels, paths=paths, texts=texts, ids=ids)
        return index

    def add(
        self,
        embeddings: Any,
        *,
        labels: Any = None,
        paths: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
        ids: Any = None,
    ) -> None:
        """Append items. Ids must be new (default: after the largest id so far). On a saved index the items go to a
        new segment of its folder (under a lock, so that concurrent writers lose nothing), then the manifest."""
        tensor = as_embeddings("embeddings", embeddings)
        if tensor.shape[1] != self.dim:
            raise IndexFormatError(f"the index holds {self.dim}-dim embeddings; these have {tensor.shape[1]}")
        check_finite("embeddings", tensor)
        if self.folder is None:
            self._segments.append(self._segment(tensor, labels, paths, texts, ids, self._ids()))
            return
        with locked(self.folder):
            manifest = read_manifest(self.folder, verify=False)
            if manifest.get("backend") != self.backend_spec:
                raise IndexFormatError(
                    f"this index was loaded to search with backend {self.backend_spec}, its folder's is "
                    f"{manifest.get('backend')}: load it without backend= to add items"
                )
            self._reload(manifest)  # what other writers added meanwhile
            segment = self._segment(tensor, labels, paths, texts, ids, self._ids())
            files = _write_segment(self.folder, len(manifest["segments"]), segment)
            manifest["segments"].append({"embeddings": files[0], "items": files[1], "count": len(segment)})
            manifest["files"].update({name: file_record(self.folder / name) for name in files})
            manifest["count"] = len(self) + len(segment)
            self._reload(manifest)
            old_state = self._state
            if self._save_state(self.folder, manifest):
                manifest["files"] = {
                    name: record
                    for name, record in manifest["files"].items()
                    if old_state is None or not name.startswith(f"{old_state['folder']}/")
                }
            write_manifest(self.folder, manifest)
            self._reload(manifest)
            if old_state is not None and old_state != self._state:
                _remove(self.folder / old_state["folder"])

    def _segment(
        self,
        embeddings: Tensor,
        labels: Any,
        paths: Sequence[str] | None,
        texts: Sequence[str] | None,
        ids: Any,
        existing: np.ndarray,
    ) -> _Segment:
        n = len(embeddings)
        if ids is None:
            start = int(existing.max()) + 1 if len(existing) else 0
            item_ids = np.arange(start, start + n, dtype=np.int64)
        else:
            item_ids = as_int_keys("ids", ids, n, torch.device("cpu")).numpy()
            repeated = np.unique(item_ids, return_counts=True)
            inside = repeated[0][repeated[1] > 1]
            taken = np.intersect1d(item_ids, existing)
            clash = np.union1d(inside, taken)
            if len(clash):
                raise IndexFormatError(
                    f"{len(clash)} item id(s) are repeated or already in the index, e.g. {clash[:5].tolist()}: ids "
                    "must be unique; leave ids out to number the items after the last one"
                )
        columns: dict[str, Any] = {"id": item_ids}
        if labels is not None:
            columns["label"] = as_class_ids("labels", labels).cpu().numpy()
        for name, values in (("path", paths), ("text", texts)):
            if values is not None:
                if len(values) != n:
                    raise IndexFormatError(f"{len(values)} {name}s for {n} embeddings: give one per embedding")
                columns[name] = [str(value) for value in values]
        known = {name for name in ("label", "path", "text") if name in columns}
        before = self._columns()
        if self._segments and known != before:
            raise IndexFormatError(
                f"the index's items have {sorted(before) or 'no'} columns besides the id; these have "
                f"{sorted(known) or 'none'}: give the same ones"
            )
        source = embeddings.detach().cpu().numpy()
        if self.dtype == "float16" and float(np.abs(source).max(initial=0.0)) > float(np.finfo(np.float16).max):
            raise IndexFormatError("embeddings overflow float16 (|x| > 65504); store them as float32")
        array = source.astype(self.dtype, copy=True)
        return _Segment(pd.DataFrame(columns), embeddings=array)

    def _columns(self) -> set[str]:
        return {name for name in ("label", "path", "text") if self._segments and name in self._segments[0].items}

    def _ids(self) -> np.ndarray:
        return self._column("id")

    def _column(self, name: str) -> np.ndarray:
        """A new int64 array of column ``name`` of every item (without concatenating the whole table)."""
        parts = [segment.items[name].to_numpy(np.int64) for segment in self._segments]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    # --- views ---------------------------------------------------------------------------------------------------

    @property
    def items(self) -> pd.DataFrame:
        """One row per item, in gallery order: ``id`` and, where known, ``label``, ``path``, ``text``."""
        if not self._segments:
            return pd.DataFrame({"id": np.zeros(0, dtype=np.int64)})
        return pd.concat([segment.items for segment in self._segments], ignore_index=True)

    def embeddings(self) -> np.ndarray:
        """All embeddings ``(N, D)`` in their stored dtype (one segment: memory-mapped for a saved index)."""
        if len(self._segments) == 1:
            return self._segments[0].mapped()
        if not self._segments:
            return np.zeros((0, self.dim), dtype=self.dtype)
        return np.concatenate([segment.mapped() for segment in self._segments])

    def check_model(self, name: str | None, weights_sha256: str | None) -> None:
        """An error if the index was built by another model (name or weights) than the one about to embed queries."""
        if self.model is None:
            return
        built = (self.model.get("name"), self.model.get("weights_sha256"))
        if (name, weights_sha256) != built:
            raise IndexFormatError(
                f"the index was built with model {built[0]!r} (weights sha256 {str(built[1])[:12]}...), the queries "
                f"come from {name!r} (weights {str(weights_sha256)[:12]}...): embed queries with the index's model, "
                "or build the index again with this one"
            )

    # --- searching -----------------------------------------------------------------------------------------------

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        query_labels: Any = None,
        exclude_ids: Any = None,
        postprocessor: Postprocessor | str | Mapping[str, Any] | Sequence[Any] | None = None,
        block_rows: int = BLOCK_ROWS,
        dataset: Any = None,
        gallery_dataset: Any = None,
        sharded: bool = False,
    ) -> RetrievalResults:
        """The ``k`` nearest items of every query.

        Args:
            queries: float ``(Q, D)`` embeddings (of the index's model: see :meth:`check_model`).
            k: neighbours per query; more than the index holds gives shorter rows.
            query_labels: the queries' labels, to make the results' ``n_relevant`` (and so metrics) exact.
            exclude_ids: int64 ``(Q,)``: an item id each query must not retrieve (itself), ``-1`` for none.
            postprocessor: re-ranks the results (:mod:`omlcore.postprocessing`); it gets the gallery in memory.
            block_rows: gallery rows per block of the streamed exact search.
            dataset, gallery_dataset: the queries' items and the gallery's (indexed by position), for postprocessors
                that read items (:class:`~omlcore.postprocessing.RetrievalContext`).
            sharded: under ``torch.distributed``, every rank calls this with the same queries and reads and scores
                only its share of the index's rows (whole blocks of ``block_rows``); the top k are merged exactly,
                and every rank gets the one-process results. Exact backend only.

        Returns:
            :class:`~omlcore.retrieval.RetrievalResults`: ``retrieved_ids`` are gallery positions (rows of
            :attr:`items`), ``gallery_ids`` the item ids.
        """
        query_tensor = as_embeddings("queries", queries).float()
        if query_tensor.shape[1] != self.dim:
            model = f" of model {self.model.get('name')!r}" if self.model else ""
            raise IndexFormatError(
                f"the index holds {self.dim}-dim embeddings{model}; the queries have {query_tensor.shape[1]}: embed "
                "them with the index's model"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not len(self):
            raise IndexFormatError("the index is empty: add items before searching")
        item_ids = torch.from_numpy(self._ids())
        exclude = []
        if exclude_ids is not None:
            exclude.append((as_int_keys("exclude_ids", exclude_ids, len(query_tensor), torch.device("cpu")), item_ids))
        width = min(k, len(self))
        backend = self._backend()
        if sharded and backend is not None:
            raise ValueError(
                f"sharded=True searches with the exact backend only; this index uses {self.backend_spec}: search "
                "without sharded=True, or build an index with backend='exact' to shard the search"
            )
        if backend is None:
            knn = ExactKNN(self.metric)
            if sharded:
                first, parts = self._shard(block_rows)
                scores, positions = knn.stream_scores(query_tensor, parts, width, exclude, offset=first)
                distances, positions = knn.finish(*merge_across_ranks(scores, positions, width), width, 1.0)
            else:
                distances, positions = knn.search_stream(query_tensor, self._blocks(block_rows), width, exclude)
        elif isinstance(backend, PersistableKNN):
            self._fit(backend)
            distances, positions = backend.search_fitted(query_tensor, width, exclude)
        else:
            distances, positions = backend.search(query_tensor, self._gallery_tensor(), width, exclude)
        gallery_labels = torch.from_numpy(self._column("label")) if "label" in self._columns() else None
        labels = None if query_labels is None else as_class_ids("query_labels", query_labels)
        n_relevant = (
            relevant_counts(labels, gallery_labels)
            if labels is not None and gallery_labels is not None
            else torch.full((len(query_tensor),), -1, dtype=torch.long)
        )
        valid = int((positions >= 0).sum(dim=1).max()) if len(positions) else 0
        results = RetrievalResults(
            distances=distances[:, :valid].contiguous(),
            retrieved_ids=positions[:, :valid].contiguous(),
            n_relevant=n_relevant,
            n_gallery=len(self),
            query_labels=labels,
            gallery_labels=gallery_labels,
            gallery_ids=item_ids,
            metric=self.metric,
        )
        step = build_postprocessor(postprocessor)
        if step is None:
            return results
        split = QueryGallerySplit(query_tensor, self._gallery_tensor(), labels, gallery_labels)
        context = RetrievalContext(split, self.metric, backend, dataset=dataset, gallery_dataset=gallery_dataset)
        return check_postprocessed(results, step.process(results, context), type(step).__name__)

    def _pieces(self, block_rows: int, start: int = 0) -> list[tuple[_Segment, int, int]]:
        """``(segment, begin, end)`` of every block of at most ``block_rows`` rows, from gallery row ``start`` on."""
        pieces, offset = [], 0
        for segment in self._segments:
            first, offset = max(start - offset, 0), offset + len(segment)
            pieces += [(segment, b, min(b + block_rows, len(segment))) for b in range(first, len(segment), block_rows)]
        return pieces

    def _blocks(self, block_rows: int, start: int = 0) -> Iterator[Tensor]:
        """The gallery from row ``start`` on, as float32 blocks of at most ``block_rows`` rows."""
        return (_read(piece) for piece in self._pieces(block_rows, start))

    def _shard(self, block_rows: int) -> tuple[int, Iterator[Tensor]]:
        """This rank's share of the blocks :meth:`_blocks` yields: its first row, and its blocks."""
        pieces = self._pieces(block_rows)
        rank, world = rank_and_world()
        bounds = shard_bounds([end - begin for _, begin, end in pieces], world)
        first = sum(end - begin for _, begin, end in pieces[: bounds[rank]])
        return first, (_read(piece) for piece in pieces[bounds[rank] : bounds[rank + 1]])

    def _gallery_tensor(self) -> Tensor:
        return torch.from_numpy(np.array(self.embeddings(), dtype=np.float32))  # a copy: files are read-only

    def _backend(self) -> KNNBackend | None:
        if self.backend_spec is None or self.backend_spec["name"] == "exact":
            return None
        if self._knn is None:
            spec = {"name": self.backend_spec["name"], "args": {"metric": self.metric, **self.backend_spec["args"]}}
            backend = resolve("knn_backend", spec, path="backend")
            if not isinstance(backend, KNNBackend):
                raise TypeError(f"backend {self.backend_spec['name']!r} is not a KNNBackend")
            self._knn = backend
        return self._knn

    def _fit(self, backend: PersistableKNN) -> None:
        """Bring a persistable backend up to every item: its saved state loaded (else built), then extended."""
        if self._fitted_rows is None:
            if self._state is not None and self.folder is not None:
                backend.load(self.folder / self._state["folder"])
                self._fitted_rows = int(self._state["rows"])
            else:
                backend.fit(lambda: self._blocks(BLOCK_ROWS), len(self))
                self._fitted_rows = len(self)
        if self._fitted_rows < len(self):
            backend.extend(self._blocks(BLOCK_ROWS, start=self._fitted_rows))
            self._fitted_rows = len(self)

    def _save_state(self, root: Path, manifest: dict[str, Any]) -> bool:
        """A persistable backend's state of every item into ``root``'s ``backend/``, listed in ``manifest``."""
        backend = self._backend()
        if not isinstance(backend, PersistableKNN) or not len(self):
            return False
        self._fit(backend)
        name = f"{BACKEND_DIR}/state-{len(manifest['segments']):05d}"
        _remove(root / name)  # left by an interrupted add: never listed
        (root / name).mkdir(parents=True)
        backend.save(root / name)
        written = sorted(path for path in (root / name).rglob("*") if path.is_file())
        manifest["files"].update({path.relative_to(root).as_posix(): file_record(path) for path in written})
        manifest["backend_state"] = {"folder": name, "rows": len(self)}
        return True

    # --- saving and loading --------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the index to ``folder`` atomically: built in a temporary sibling folder, then renamed into place.

        An existing ``folder`` is replaced only with ``overwrite``. Afterwards the index reads its segments from the
        folder, and :meth:`add` writes to it.
        """
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
        try:
            segments, files = [], {}
            for number, segment in enumerate(self._segments):
                names = _write_segment(building, number, segment)
                segments.append({"embeddings": names[0], "items": names[1], "count": len(segment)})
                files.update({name: file_record(building / name) for name in names})
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "omlcore": omlcore.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "dim": self.dim,
                "metric": self.metric,
                "dtype": self.dtype,
                "count": len(self),
                "model": self.model,
                "config": self.config,
                "backend": self.backend_spec,
                "segments": segments,
                "files": files,
            }
            self._save_state(building, manifest)
            write_manifest(building, manifest)
        except BaseException:
            _remove(building)
            raise
        replace_folder(building, target, overwrite)
        self.folder = target
        self._reload(read_manifest(target, verify=False))
        return target

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], verify: bool = True, backend: str | Mapping[str, Any] | None = None
    ) -> Index:
        """The index saved in ``folder`` (every file's size checked, and with ``verify`` its sha256).

        ``backend`` searches it with another kNN backend than the folder's (``"exact"``: the streamed exact search);
        :meth:`add` is then refused, and :meth:`save` to another folder keeps that backend.
        """
        path = Path(folder)
        manifest = read_manifest(path, verify=verify)
        index = cls(
            int(manifest["dim"]),
            manifest["metric"],
            manifest["dtype"],
            manifest.get("model"),
            manifest.get("config"),
            manifest.get("backend") if backend is None else backend,
        )
        index.folder = path
        index._reload(manifest)
        return index

    def _reload(self, manifest: Mapping[str, Any]) -> None:
        assert self.folder is not None
        known = {segment.file.name: segment for segment in self._segments if segment.file is not None}
        segments = []
        for record in manifest["segments"]:
            if record["embeddings"] in known:
                segments.append(known[record["embeddings"]])
                continue
            items = pd.read_csv(self.folder / record["items"], dtype={"path": str, "text": str}, keep_default_na=False)
            segments.append(_Segment(items, file=self.folder / record["embeddings"]))
        self._segments = segments
        same = manifest.get("backend") == self.backend_spec
        self._state = dict(manifest["backend_state"]) if same and manifest.get("backend_state") else None


def _backend_spec(backend: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if backend is None:
        return None
    spec: dict[str, Any] = {"name": backend} if isinstance(backend, str) else dict(backend)
    if not isinstance(spec.get("name"), str) or set(spec) - {"name", "args"}:
        raise ValueError(f"backend must be a registered kNN backend name or {{name, args}}, got {backend!r}")
    return {"name": spec["name"], "args": dict(spec.get("args") or {})}


def _write_segment(folder: Path, number: int, segment: _Segment) -> tuple[str, str]:
    """Write a segment's embeddings and items (each via a temporary file and a rename); their file names."""
    names = (f"embeddings-{number:05d}.npy", f"items-{number:05d}.csv")
    array = segment.mapped()
    for name, write in (
        (names[0], lambda handle: np.save(handle, np.ascontiguousarray(array))),
        (names[1], lambda handle: segment.items.to_csv(handle, index=False)),
    ):
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{name}.", delete=False) as handle:
            write(handle.file)  # the file itself: pandas writes line by line, slow through the wrapper
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, folder / name)
    return names


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
