"""Index: search against brute force, float16 storage, save / load / add (also by two processes at once), errors."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omlcore.index import Index, IndexFormatError
from omlcore.postprocessing import RetrievalContext
from omlcore.retrieval import RetrievalResults


def brute_force(queries: torch.Tensor, gallery: torch.Tensor, k: int, metric: str = "l2") -> torch.Tensor:
    """Gallery positions of the k nearest, by float64 distance then position."""
    q, g = queries.double(), gallery.double()
    if metric == "cosine":
        distances = 1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    else:
        distances = torch.cdist(q, g)
    return torch.sort(distances, dim=1, stable=True).indices[:, :k]


def integer_data(seed: int, n: int, dim: int = 6) -> torch.Tensor:
    """Small integers: exact distances, ties everywhere (the tie rule decides)."""
    return torch.randint(-3, 4, (n, dim), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("block_rows", [7, 100, 65_536])
def test_streamed_exact_search_equals_brute_force_with_ties(block_rows: int) -> None:
    gallery, queries = integer_data(0, 500), integer_data(1, 40)
    index = Index.build(gallery, labels=torch.arange(500) % 9)
    results = index.search(queries, k=12, block_rows=block_rows, query_labels=torch.arange(40) % 9)
    assert torch.equal(results.retrieved_ids, brute_force(queries, gallery, 12))
    assert torch.allclose(results.distances, torch.cdist(queries, gallery).gather(1, results.retrieved_ids))
    assert results.n_relevant.tolist() == [len([g for g in range(500) if g % 9 == q % 9]) for q in range(40)]
    assert torch.equal(results.gallery_ids, torch.arange(500))


def test_cosine_k_beyond_the_gallery_and_excluded_items() -> None:
    gallery = torch.randn(30, 8, generator=torch.Generator().manual_seed(2))
    index = Index.build(gallery, metric="cosine", ids=torch.arange(100, 130))
    results = index.search(gallery[:4], k=50, exclude_ids=torch.tensor([100, 101, -1, 103]))
    assert results.top_k == 30  # all 30, fewer where an item is excluded
    assert results.n_retrieved.tolist() == [29, 29, 30, 29]
    expected = brute_force(gallery[:4], gallery, 30, "cosine")
    assert results.retrieved_ids[2].tolist() == expected[2].tolist()
    assert 0 not in results.retrieved_ids[0].tolist() and results.retrieved_ids[0, 0] == expected[0, 1]


def test_float16_storage_searches_the_rounded_embeddings(tmp_path: Path) -> None:
    gallery = torch.randn(300, 16, generator=torch.Generator().manual_seed(3))
    index = Index.build(gallery, dtype="float16")
    rounded = gallery.half().float()
    queries = torch.randn(20, 16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(index.search(queries, k=5).retrieved_ids, brute_force(queries, rounded, 5))
    index.save(tmp_path / "half")
    assert (tmp_path / "half" / "embeddings-00000.npy").stat().st_size < 300 * 16 * 2 + 200
    assert Index.load(tmp_path / "half").embeddings().dtype == np.float16
    with pytest.raises(IndexFormatError, match="overflow float16"):
        Index.build(torch.full((2, 4), 1e6), dtype="float16")


def test_save_load_and_add_keep_every_item(tmp_path: Path) -> None:
    first, second = integer_data(5, 200), integer_data(6, 50)
    index = Index.build(
        first, labels=2**60 + torch.arange(200) % 7, paths=[f"img/{i}.png" for i in range(200)], model={"name": "m"}
    )
    folder = index.save(tmp_path / "index")
    loaded = Index.load(folder)
    assert loaded.items.equals(index.items) and loaded.items["label"].iloc[0] == 2**60  # exact beyond 2^53
    assert isinstance(loaded.embeddings(), np.memmap)
    loaded.add(second, labels=torch.arange(50) % 7, paths=[f"new/{i}.png" for i in range(50)])
    again = Index.load(folder)
    assert len(again) == 250 and again.items["id"].tolist() == list(range(250))
    queries = integer_data(7, 10)
    whole = torch.cat([first, second])
    assert torch.equal(again.search(queries, k=9).retrieved_ids, brute_force(queries, whole, 9))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["count"] for s in manifest["segments"]] == [200, 50] and manifest["model"] == {"name": "m"}
    with pytest.raises(IndexFormatError, match="exists; choose another folder, or pass overwrite=True"):
        Index.build(first).save(folder)
    assert len(Index.load(folder)) == 250  # untouched
    Index.build(first[:3]).save(folder, overwrite=True)
    assert len(Index.load(folder)) == 3 and not list(tmp_path.glob(".index*"))


def test_two_processes_adding_at_once_lose_nothing(tmp_path: Path) -> None:
    folder = Index.build(integer_data(8, 10)).save(tmp_path / "shared")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from omlcore.index import Index
        index = Index.load({str(folder)!r})
        for step in range(5):
            index.add(torch.full((3, 6), float(sys.argv[1])))
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(value)]) for value in (1, 2)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    index = Index.load(folder)
    assert len(index) == 10 + 2 * 5 * 3 and index.items["id"].is_unique
    values = index.embeddings()[10:, 0].tolist()
    assert values.count(1.0) == values.count(2.0) == 15


class Reverse:
    """Reverses each row (then re-sorts nothing): used to check that search applies and checks a postprocessor."""

    def process(self, results: RetrievalResults, context: RetrievalContext) -> RetrievalResults:
        assert len(context.split.gallery) == results.n_gallery
        steps = torch.arange(results.top_k, dtype=torch.float32).expand(results.n_queries, -1)
        return dataclasses.replace(results, retrieved_ids=results.retrieved_ids.flip(1), distances=steps.clone())


def test_postprocessor_at_search_time() -> None:
    index = Index.build(integer_data(9, 40))
    plain = index.search(integer_data(10, 3), k=4)
    reversed_ = index.search(integer_data(10, 3), k=4, postprocessor=Reverse())
    assert torch.equal(reversed_.retrieved_ids, plain.retrieved_ids.flip(1))


def corrupt(folder: Path, how: str) -> None:
    manifest_path = folder / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    data = folder / "embeddings-00000.npy"
    if how == "flip":
        raw = bytearray(data.read_bytes())
        raw[-1] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "truncate":
        data.write_bytes(data.read_bytes()[:-8])
    elif how == "manifest":
        manifest_path.unlink()
    elif how == "version":
        manifest["version"] = 0
        manifest_path.write_text(json.dumps(manifest))
    elif how == "missing":
        (folder / "items-00000.csv").unlink()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("flip", "does not match its checksum"),
        ("truncate", "is truncated or was changed"),
        ("manifest", "has no manifest.json"),
        ("version", "index of format version 0; this omlcore reads version 1"),
        ("missing", "items-00000.csv', listed in the manifest, is missing"),
    ],
)
def test_damaged_folders_are_named(tmp_path: Path, how: str, message: str) -> None:
    folder = Index.build(integer_data(11, 20)).save(tmp_path / "index")
    corrupt(folder, how)
    with pytest.raises(IndexFormatError, match=message):
        Index.load(folder)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    index = Index.build(integer_data(12, 20), labels=torch.arange(20), model={"name": "a", "weights_sha256": "1" * 64})
    with pytest.raises(IndexFormatError, match="holds 6-dim embeddings of model 'a'; the queries have 5"):
        index.search(torch.randn(2, 5))
    with pytest.raises(IndexFormatError, match=r"built with model 'a'.*the queries come from 'b'"):
        index.check_model("b", "2" * 64)
    index.check_model("a", "1" * 64)
    with pytest.raises(IndexFormatError, match=r"1 item id\(s\) are repeated or already in the index, e.g. \[3\]"):
        index.add(integer_data(13, 2), labels=[0, 1], ids=[3, 99])
    with pytest.raises(IndexFormatError, match="besides the id; these have none"):
        index.add(integer_data(13, 2))
    with pytest.raises(IndexFormatError, match="3 paths for 2 embeddings"):
        Index.build(integer_data(13, 2), paths=["a", "b", "c"])
    with pytest.raises(IndexFormatError, match="the index is empty"):
        Index(4).search(torch.randn(1, 4))
    with pytest.raises(IndexFormatError, match="no index folder"):
        Index.load(tmp_path / "nowhere")
    with pytest.raises(Exception, match="contain NaN"):
        index.add(torch.full((1, 6), math.nan), labels=[0])
