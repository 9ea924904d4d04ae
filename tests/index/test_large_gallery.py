"""A gallery larger than the memory budget: 2,000,000 x 64 float16 (256 MiB; 512 MiB as float32) written in chunks
through ``Index.add``, so that this process never holds it, then searched in fresh processes whose memory is measured
(``/proc/self/status``): exactly, streamed from the files, and approximately with a saved faiss IVF.

The peak is ``VmHWM`` after resetting it (``/proc/self/clear_refs``) right before the measured section: a child's
``ru_maxrss`` starts at its parent's peak (Linux keeps it across ``exec``), so it would report pytest's own memory.
Everything runs on one thread: tiny GEMMs on two OpenMP threads of a busy 2-core machine mostly wait on each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omlcore.index import Index

pytestmark = pytest.mark.slow

N, CHUNK, DIM, K = 2_000_000, 250_000, 64, 10
CENTRES = 4096
#: The most the search process's memory may grow (peak): a quarter of the float16 gallery (244 MiB), an eighth of
#: it as float32. The 2,000,000 item ids alone take 2 x 15 MiB (the items table, the results' ``gallery_ids``).
BUDGET_MIB = 64
IVF = {"name": "faiss.ivf", "args": {"nlist": 64, "nprobe": 4}}

SEARCH = textwrap.dedent(
    """
    import json, resource, sys, tempfile, time
    import numpy as np, torch
    from omlcore.index import Index

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}

    torch.set_num_threads(1)
    folder, queries_file, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queries = torch.from_numpy(np.load(queries_file))
    with tempfile.TemporaryDirectory() as warm_up:  # lazy imports (pandas' CSV reader ...), allocator
        tiny = Index.build(torch.randn(100, queries.shape[1]), dtype="float16").save(f"{warm_up}/index")
        Index.load(tiny).search(queries[:2], k=k)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    before, start = status(), time.perf_counter()
    index = Index.load(folder)  # checks every file's sha256
    results = index.search(queries, k=k)
    after, seconds = status(), time.perf_counter() - start
    print(json.dumps({
        "ids": results.retrieved_ids.tolist(),
        "distances": results.distances.tolist(),
        "seconds": seconds,
        "rss_mib": before["VmRSS"],
        "rss_growth_mib": after["VmRSS"] - before["VmRSS"],
        "peak_growth_mib": after["VmHWM"] - before["VmRSS"],
        "anon_growth_mib": after["RssAnon"] - before["RssAnon"],
        "file_growth_mib": after["RssFile"] - before["RssFile"],
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    """
)


def chunk_of(number: int, centres: torch.Tensor) -> torch.Tensor:
    """Chunk ``number`` of the gallery: points around ``CENTRES`` centres, as float16 will store them."""
    generator = torch.Generator().manual_seed(1000 + number)
    picked = centres[torch.randint(0, CENTRES, (CHUNK,), generator=generator)]
    return (picked + 0.3 * torch.randn(CHUNK, DIM, generator=generator)).half().float()


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict[str, Any]:
    """The index folder, the queries file and, per query, the reference top-k (float64 brute force, chunk by chunk).

    Queries: 16 copies of gallery items, 2 per chunk (each must find itself first), and 16 points near the clusters.
    """
    root = tmp_path_factory.mktemp("large")
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(CENTRES, DIM, generator=generator)
    near = centres[torch.randint(0, CENTRES, (16,), generator=generator)] + 0.3 * torch.randn(16, DIM)
    rows = torch.randint(0, CHUNK, (N // CHUNK, 2), generator=generator)
    copies, copy_ids = [], []
    folder = None
    for number in range(N // CHUNK):
        chunk = chunk_of(number, centres)
        if folder is None:
            folder = Index.build(chunk, dtype="float16").save(root / "index")
        else:
            Index.load(folder, verify=False).add(chunk)
        copies.append(chunk[rows[number]])
        copy_ids += (number * CHUNK + rows[number]).tolist()
    queries = torch.cat([*copies, near])
    best = torch.full((len(queries), K), float("inf"), dtype=torch.float64)
    best_ids = torch.full((len(queries), K), -1, dtype=torch.long)
    for number in range(N // CHUNK):
        candidates = torch.cat([best, torch.cdist(queries.double(), chunk_of(number, centres).double())], dim=1)
        ids = torch.cat([best_ids, torch.arange(number * CHUNK, (number + 1) * CHUNK).expand(len(queries), -1)], 1)
        best, order = candidates.topk(K, dim=1, largest=False, sorted=True)
        best_ids = ids.gather(1, order)
    np.save(root / "queries.npy", queries.numpy())
    return {
        "root": root,
        "folder": folder,
        "queries": root / "queries.npy",
        "copy_ids": copy_ids,
        "ids": best_ids,
        "distances": best,
    }


def search_in_a_process(folder: Path, queries: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, str(folder), str(queries), str(K)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print({key: round(value, 1) for key, value in result.items() if not isinstance(value, list)})  # pytest -rP
    return result


def test_the_gallery_is_on_disk_in_chunks(large: dict[str, Any]) -> None:
    index = Index.load(large["folder"], verify=False)
    assert len(index) == N and index.dtype == "float16"
    files = sorted(large["folder"].glob("embeddings-*.npy"))
    assert len(files) == N // CHUNK
    assert sum(f.stat().st_size for f in files) >= N * DIM * 2  # 256 MiB of float16


def test_exact_search_streams_the_gallery_in_bounded_memory(large: dict[str, Any]) -> None:
    found = search_in_a_process(large["folder"], large["queries"])
    ids, distances = torch.tensor(found["ids"]), torch.tensor(found["distances"], dtype=torch.float64)
    assert ids[:16, 0].tolist() == large["copy_ids"]  # each copy finds itself
    assert torch.equal(ids[16:], large["ids"][16:])
    assert torch.allclose(distances[16:], large["distances"][16:], atol=1e-3)
    assert found["peak_growth_mib"] < BUDGET_MIB


def test_saved_faiss_ivf_searches_the_same_gallery(large: dict[str, Any]) -> None:
    pytest.importorskip("omlcore_faiss.backends", reason="needs the omlcore-faiss plugin")
    ivf = Index.load(large["folder"], verify=False, backend=IVF).save(large["root"] / "ivf")
    manifest = json.loads((ivf / "manifest.json").read_text())
    assert manifest["backend_state"]["rows"] == N
    assert f"{manifest['backend_state']['folder']}/faiss.index" in manifest["files"]
    found = search_in_a_process(ivf, large["queries"])
    ids = torch.tensor(found["ids"])
    assert ids[:16, 0].tolist() == large["copy_ids"]
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(ids.tolist(), large["ids"].tolist(), strict=True)])
    assert recall >= 0.9, recall
    # the inverted lists are memory-mapped: what the search reads of them is page cache, not the process's own memory
    assert found["anon_growth_mib"] < BUDGET_MIB
