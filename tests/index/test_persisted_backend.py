"""An Index with a persistable kNN backend (omlcore-faiss): built once, kept under backend/, loaded, extended."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omlcore.index import Index, IndexFormatError, PersistableKNN
from omlcore.index import index as index_module

backends = pytest.importorskip("omlcore_faiss.backends", reason="needs the omlcore-faiss plugin")

IVF = {"name": "faiss.ivf", "args": {"nlist": 8, "nprobe": 2}}
BACKENDS = [IVF, {"name": "faiss.hnsw", "args": {"M": 8}}, {"name": "faiss.flat", "args": {}}]


def clustered(seed: int, n: int, dim: int = 8) -> torch.Tensor:
    """Points around 8 well-separated centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(8, dim, generator=torch.Generator().manual_seed(99))
    return centres[torch.randint(0, 8, (n,), generator=generator)] + torch.randn(n, dim, generator=generator)


def never_fit(self: Any, blocks: Any, n: int) -> None:
    raise AssertionError("the saved state should have been loaded, not built again")


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def test_faiss_backends_are_persistable() -> None:
    for cls in (backends.FaissFlatKNN, backends.FaissIVFKNN, backends.FaissHNSWKNN):
        assert isinstance(cls(), PersistableKNN)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda spec: spec["name"])
def test_saved_state_is_loaded_not_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: dict[str, Any]
) -> None:
    gallery, queries = clustered(0, 400), clustered(1, 30)
    index = Index.build(gallery, labels=torch.arange(400) % 8, backend=backend)
    before = index.search(queries, k=5)
    folder = index.save(tmp_path / "index")
    manifest = manifest_of(folder)
    state = manifest["backend_state"]
    assert state == {"folder": "backend/state-00001", "rows": 400}
    assert {f"{state['folder']}/faiss.index", f"{state['folder']}/faiss_index.json"} <= set(manifest["files"])
    monkeypatch.setattr(backends._FaissKNN, "fit", never_fit)
    after = Index.load(folder).search(queries, k=5)
    assert torch.equal(after.retrieved_ids, before.retrieved_ids)
    assert torch.allclose(after.distances, before.distances)


def test_add_extends_the_saved_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "BLOCK_ROWS", 64)  # fit and extend read many blocks
    first, second = clustered(2, 400), clustered(3, 150)
    folder = Index.build(first, backend=IVF).save(tmp_path / "index")
    Index.load(folder).add(second)
    manifest = manifest_of(folder)
    assert manifest["backend_state"] == {"folder": "backend/state-00002", "rows": 550}
    assert not (folder / "backend" / "state-00001").exists()
    assert not [name for name in manifest["files"] if name.startswith("backend/state-00001")]
    monkeypatch.setattr(backends._FaissKNN, "fit", never_fit)
    results = Index.load(folder).search(second, k=1)
    assert results.retrieved_ids[:, 0].tolist() == list(range(400, 550))  # each new item finds itself
    assert float(results.distances.max()) < 1e-3


def test_cosine_ivf_distances_are_one_minus_cos(tmp_path: Path) -> None:
    gallery, queries = clustered(4, 300), clustered(5, 10)
    folder = Index.build(gallery, metric="cosine", backend=IVF).save(tmp_path / "index")
    results = Index.load(folder).search(queries, k=3)
    unit_q = torch.nn.functional.normalize(queries, dim=1)
    unit_g = torch.nn.functional.normalize(gallery, dim=1)
    expected = 1 - (unit_q[:, None, :] * unit_g[results.retrieved_ids]).sum(-1)
    assert torch.allclose(results.distances, expected, atol=1e-5)


def test_another_backend_searches_a_saved_index(tmp_path: Path) -> None:
    gallery, queries = clustered(6, 300), clustered(7, 20)
    folder = Index.build(gallery, backend=IVF).save(tmp_path / "ivf")
    exact = Index.load(folder, backend="exact")
    expected = torch.cdist(queries.double(), gallery.double()).argsort(dim=1)[:, :4]
    assert torch.equal(exact.search(queries, k=4).retrieved_ids, expected)
    with pytest.raises(IndexFormatError, match="load it without backend= to add items"):
        exact.add(gallery[:2])
    hnsw = Index.load(folder, backend={"name": "faiss.hnsw", "args": {"M": 8}}).save(tmp_path / "hnsw")
    manifest = manifest_of(hnsw)
    assert manifest["backend"]["name"] == "faiss.hnsw" and manifest["backend_state"]["rows"] == 300
    assert Index.load(hnsw).items.equals(Index.load(folder).items)


def test_a_damaged_backend_file_is_named(tmp_path: Path) -> None:
    folder = Index.build(clustered(8, 100), backend=IVF).save(tmp_path / "index")
    state = folder / "backend" / "state-00001" / "faiss.index"
    raw = bytearray(state.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    state.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"faiss\.index' does not match its checksum"):
        Index.load(folder)
    (folder / "backend" / "state-00001" / "faiss_index.json").unlink()
    with pytest.raises(IndexFormatError, match=r"faiss_index\.json', listed in the manifest, is missing"):
        Index.load(folder, verify=False)


def test_a_state_of_another_kind_is_refused(tmp_path: Path) -> None:
    built = backends.FaissIVFKNN(nlist=4)
    built.fit(lambda: iter([clustered(9, 100)]), 100)
    built.save(tmp_path)
    with pytest.raises(Exception, match="holds a FaissIVFKNN index of metric 'l2', not a FaissHNSWKNN"):
        backends.FaissHNSWKNN().load(tmp_path)
    with pytest.raises(Exception, match="of metric 'l2', not a FaissIVFKNN of metric 'cosine'"):
        backends.FaissIVFKNN(metric="cosine").load(tmp_path)


def test_ivf_trains_on_an_evenly_spaced_sample_of_the_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    gallery = torch.arange(1000 * 4, dtype=torch.float32).view(1000, 4)
    blocks = [gallery[:333], gallery[333:700], gallery[700:]]
    trained: list[np.ndarray] = []
    train = backends.faiss.IndexIVFFlat.train

    def record(index: Any, sample: np.ndarray) -> None:
        trained.append(sample.copy())
        train(index, sample)

    monkeypatch.setattr(backends.faiss.IndexIVFFlat, "train", record)
    knn = backends.FaissIVFKNN(nlist=2)  # 256 * 2 = 512 training rows at most: every 2nd row
    knn.fit(lambda: iter(blocks), 1000)
    [sample] = trained
    assert np.array_equal(sample, gallery[::2].numpy())
    distances, found = knn.search_fitted(gallery[[5, 999]], k=1)
    assert found[:, 0].tolist() == [5, 999] and distances.abs().max() == 0


def test_sharded_search_is_refused_for_a_persisted_backend_and_names_the_backend() -> None:
    gallery = torch.randn(200, 8, generator=torch.Generator().manual_seed(4))
    index = Index.build(gallery, backend=IVF)
    with pytest.raises(ValueError, match=r"exact backend only.*faiss\.ivf.*without sharded=True"):
        index.search(gallery[:3], 2, sharded=True)
