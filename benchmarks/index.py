"""Build and search throughput of a persisted ``omlcore.index.Index``: the exact engine and faiss IVF, against N.

For each dim and N, a gallery of clustered random embeddings (float16 on disk) is written in chunks of at most
250,000 rows through ``Index.add``, so that this process never holds it (build: items/s of embeddings written,
checksummed and listed). The faiss IVF index (``faiss.ivf``: ``nlist`` cells, ``nprobe`` searched, trained on at most
256 * nlist rows) is then built from the saved index and saved with it (build: items/s of train + add + save, which
includes writing a second copy of the segments). Each search runs in a fresh process on ``--threads`` threads: load
(every file's sha256 checked) and ``--queries`` queries at k = 10, with its peak memory above the start (``VmHWM``
after ``/proc/self/clear_refs``, after a warm-up search of a tiny index). Search throughput is queries/s and gallery
items compared per second (N x queries / s); IVF recall@10 is measured against the exact results.

    python benchmarks/index.py                                   # dim 64: N = 1e4 .. 2e6; dim 384: N = 1e4 .. 1e6
    python benchmarks/index.py --dims 64 --sizes 10000 100000    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omlcore.index import Index

CHUNK = 250_000
CENTRES = 4096
K = 10

SEARCH = """
import json, sys, tempfile, time
import numpy as np, torch
from omlcore.index import Index

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM", "RssAnon")}

folder, queries_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
try:
    import faiss
    faiss.omp_set_num_threads(threads)
except ImportError:
    pass
queries = torch.from_numpy(np.load(queries_file))
with tempfile.TemporaryDirectory() as warm_up:
    tiny = Index.build(torch.randn(100, queries.shape[1]), dtype="float16").save(f"{warm_up}/index")
    Index.load(tiny).search(queries[:2], k=10)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = status()
start = time.perf_counter()
index = Index.load(folder)
loaded = time.perf_counter()
results = index.search(queries, k=10)
done = time.perf_counter()
after = status()
print(json.dumps({
    "load_s": loaded - start, "search_s": done - loaded, "ids": results.retrieved_ids.tolist(),
    "peak_mib": after["VmHWM"] - before["VmRSS"], "anon_mib": after["RssAnon"] - before["RssAnon"],
}))
"""


def chunk_of(seed: int, rows: int, dim: int, centres: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    picked = centres[torch.randint(0, CENTRES, (rows,), generator=generator)]
    return picked + 0.3 * torch.randn(rows, dim, generator=generator)


def build_exact(folder: Path, n: int, dim: int, centres: torch.Tensor) -> float:
    """Write the gallery chunk by chunk; the seconds spent in the index (not in generating the data)."""
    spent = 0.0
    for number, start in enumerate(range(0, n, CHUNK)):
        chunk = chunk_of(number, min(CHUNK, n - start), dim, centres)
        begin = time.perf_counter()
        if number == 0:
            Index.build(chunk, dtype="float16").save(folder)
        else:
            Index.load(folder, verify=False).add(chunk)
        spent += time.perf_counter() - begin
    return spent


def search_process(folder: Path, queries: Path, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, str(folder), str(queries), str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(n: int, dim: int, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    centres = torch.randn(CENTRES, dim, generator=torch.Generator().manual_seed(dim))
    generator = torch.Generator().manual_seed(1)
    queries = centres[torch.randint(0, CENTRES, (args.queries,), generator=generator)]
    queries = queries + 0.3 * torch.randn(args.queries, dim, generator=generator)
    np.save(root / "queries.npy", queries.numpy())
    exact_folder, ivf_folder = root / "exact", root / "ivf"
    build_s = build_exact(exact_folder, n, dim, centres)
    exact = search_process(exact_folder, root / "queries.npy", args.threads)
    rows = [_row("exact (streamed)", n, dim, build_s, exact, args.queries, None)]
    if not args.no_faiss:
        nlist = min(args.nlist, max(1, n // 39))
        spec = {"name": "faiss.ivf", "args": {"nlist": nlist, "nprobe": args.nprobe}}
        begin = time.perf_counter()
        Index.load(exact_folder, verify=False, backend=spec).save(ivf_folder)
        ivf_build_s = time.perf_counter() - begin
        ivf = search_process(ivf_folder, root / "queries.npy", args.threads)
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ivf["ids"], exact["ids"], strict=True)]))
        rows.append(
            _row(f"faiss IVF (nlist {nlist}, nprobe {args.nprobe})", n, dim, ivf_build_s, ivf, args.queries, recall)
        )
    shutil.rmtree(exact_folder)
    shutil.rmtree(ivf_folder, ignore_errors=True)
    return rows


def _row(
    engine: str, n: int, dim: int, build_s: float, found: dict[str, Any], queries: int, recall: float | None
) -> dict[str, Any]:
    return {
        "engine": engine,
        "n": n,
        "dim": dim,
        "gallery_mib": n * dim * 2 / 2**20,
        "build_items_per_s": n / build_s,
        "load_s": found["load_s"],
        "queries_per_s": queries / found["search_s"],
        "items_compared_per_s": n * queries / found["search_s"],
        "search_peak_mib": found["peak_mib"],
        "search_anon_mib": found["anon_mib"],
        "recall_at_10": recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 384])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000])
    parser.add_argument(
        "--max-bytes", type=float, default=1e9, help="skip galleries larger than this on disk (float16)"
    )
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--nlist", type=int, default=256, help="IVF cells (at most N / 39)")
    parser.add_argument("--nprobe", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    columns = ["engine", "dim", "N", "gallery, MiB", "build, items/s", "load, s", "search, queries/s"]
    columns += ["items compared/s", "search peak, MiB", "recall@10"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns), flush=True)
    for dim in args.dims:
        for n in args.sizes:
            if n * dim * 2 > args.max_bytes:
                continue
            with tempfile.TemporaryDirectory(dir=os.environ.get("OMLCORE_BENCH_DIR")) as folder:
                for row in run(n, dim, args, Path(folder)):
                    rows.append(row)
                    recall = "" if row["recall_at_10"] is None else f"{row['recall_at_10']:.3f}"
                    cells = [row["engine"], dim, f"{n:,}", f"{row['gallery_mib']:.0f}"]
                    cells += [
                        f"{row['build_items_per_s']:,.0f}",
                        f"{row['load_s']:.2f}",
                        f"{row['queries_per_s']:,.1f}",
                    ]
                    cells += [f"{row['items_compared_per_s']:.3g}", f"{row['search_peak_mib']:.0f}", recall]
                    print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
