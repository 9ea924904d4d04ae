"""The certified fast kNN path and FNMR@FMR against the exact kNN, side by side in one run (issue 18).

Same data as benchmarks/retrieval.py (synthetic unit-norm embeddings, 5 to 10 items per label, every item both
query and gallery, each item excluded for itself). Each mode runs in its own fresh process, the modes alternate
``--repeat`` times, and the report shows per mode the median time and the median of its ratios to the exact run of
the same round, with the load average around each run (the machine is shared: compare ratios, not times):

- ``exact``: ``RetrievalResults.from_embeddings(..., top_k=k, backend=ExactKNN(fast="off"))``;
- ``fast``: the same with ``ExactKNN(fast="on")`` (bfloat16 candidates, certificate, float32 rescoring), plus the
  certified fraction of queries and the time of each stage (the fallback is the uncertified queries' exact search);
- ``fnmr``: ``fnmr_at_fmr`` at FMR 0.1%, 1%, 10% over all pairs; ``fnmr_before``: the implementation it replaced
  (tests/metrics/fnmr_dense_oracle.py).

Every run reports a digest of its ids and distances (kNN modes) or its values (FNMR modes): equal digests are
bit-equal results. The first run also reports this CPU's capability, the block GEMM times in float32 and bfloat16
and what ``fast="auto"`` decides here.

    python benchmarks/fast_retrieval.py --n 50000 --repeat 3
    python benchmarks/fast_retrieval.py --n 20000 --modes exact,fast --repeat 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import chosen, machine, make_data, run_worker, versions

MODES = ("exact", "fast", "fnmr", "fnmr_before")
FMR = (0.001, 0.01, 0.1)


def digest(*tensors: torch.Tensor) -> str:
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def gemm_probe(dim: int) -> dict[str, Any]:
    """This CPU's capability, the block GEMM times (median of 5) and the decision of ``fast="auto"``."""
    from omlcore.retrieval.fast import fast_pays
    from omlcore.retrieval.scores import Scorer, default_chunk_size

    chunk = default_chunk_size(torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    scorer = Scorer(
        torch.randn(chunk, dim, generator=generator), torch.randn(chunk, dim, generator=generator), "l2", "auto"
    )
    whole = slice(0, chunk)
    exact_rows, low_rows = scorer.row_block(whole), scorer.low_precision_rows(whole)

    def median_seconds(function: Any) -> float:
        function()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "float32_block_ms": 1e3 * median_seconds(lambda: scorer.scores(whole, exact_rows, whole)),
        "bfloat16_block_ms": 1e3 * median_seconds(lambda: scorer.low_precision_scores(whole, low_rows, whole)),
        "auto_uses_fast_path": fast_pays(scorer, chunk, 1 << 40),
    }


def worker(mode: str, n: int, dim: int, k: int) -> dict[str, Any]:
    from omlcore.metrics import fnmr_at_fmr
    from omlcore.retrieval import ExactKNN, RetrievalResults

    embeddings, labels = make_data(n, dim)
    ids = torch.arange(n)
    result: dict[str, Any] = {"mode": mode, "load_before": os.getloadavg()[0]}
    start = time.perf_counter()
    if mode in ("exact", "fast"):
        knn = ExactKNN(fast="off" if mode == "exact" else "on")
        results = RetrievalResults.from_embeddings(embeddings, labels, top_k=k, backend=knn)
        result["seconds"] = time.perf_counter() - start
        result["digest"] = digest(results.distances, results.retrieved_ids)
        relevant = results.is_relevant
        result["cmc@1"] = float(relevant[:, :1].any(dim=1).double().mean())
        result["cmc@5"] = float(relevant[:, :5].any(dim=1).double().mean())
        stats = knn.last_fast_stats
        if stats is not None:
            result["stats"] = {
                "certified_fraction": stats.certified_fraction,
                "candidates": stats.n_candidates,
                "candidate_seconds": stats.candidate_seconds,
                "rescore_seconds": stats.rescore_seconds,
                "fallback_seconds": stats.fallback_seconds,
            }
    else:
        if mode == "fnmr":
            function = fnmr_at_fmr
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "metrics"))
            from fnmr_dense_oracle import dense_fnmr_at_fmr as function
        start = time.perf_counter()
        values = function(embeddings, embeddings, labels, labels, FMR, exclude=[(ids, ids)])
        result["seconds"] = time.perf_counter() - start
        result["digest"] = digest(values)
        result["values"] = values.tolist()
    result["load_after"] = os.getloadavg()[0]
    return result


def report(args: argparse.Namespace, runs: list[dict[str, Any]], probe: dict[str, Any]) -> str:
    modes = list(dict.fromkeys(run["mode"] for run in runs))
    rounds = [runs[i : i + len(modes)] for i in range(0, len(runs), len(modes))]
    lines = [
        f"N = {args.n:,}, dim {args.dim}, k = {args.k}, every item both query and gallery; {args.repeat} round(s) of "
        f"{', '.join(modes)}, each in a fresh process, alternating.",
        "",
        "| mode | median time, s | median ratio to exact (same round) | digests | load average during runs |",
        "|---|---:|---:|---|---|",
    ]
    for mode in modes:
        mine = [run for run in runs if run["mode"] == mode]
        ratios = [
            next(r for r in chunk if r["mode"] == mode)["seconds"]
            / next(r for r in chunk if r["mode"] == "exact")["seconds"]
            for chunk in rounds
            if any(r["mode"] == "exact" for r in chunk)
        ]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
        loads = ", ".join(f"{run['load_before']:.1f}-{run['load_after']:.1f}" for run in mine)
        digests = ", ".join(sorted({run["digest"] for run in mine}))
        lines.append(
            f"| {mode} | {statistics.median(r['seconds'] for r in mine):.2f} | {ratio} | {digests} | {loads} |"
        )
    fast = [run for run in runs if "stats" in run]
    if fast:
        stats = {key: statistics.median(run["stats"][key] for run in fast) for key in fast[0]["stats"]}
        lines += [
            "",
            f"Fast path (medians): {stats['certified_fraction']:.2%} of the queries certified with "
            f"{stats['candidates']:.0f} candidates each; stages: bfloat16 candidates "
            f"{stats['candidate_seconds']:.2f} s, float32 rescoring {stats['rescore_seconds']:.2f} s, fallback of the "
            "uncertified queries "
            f"{stats['fallback_seconds']:.2f} s.",
        ]
    lines += [
        "",
        f"This CPU: capability {probe['cpu_capability']}; a 1024 x {args.dim} x 1024 score block takes "
        f"{probe['float32_block_ms']:.1f} ms in float32 and {probe['bfloat16_block_ms']:.1f} ms in bfloat16; "
        f"fast='auto' {'uses' if probe['auto_uses_fast_path'] else 'does not use'} the fast path here.",
        "",
        f"Machine: {machine('cpu')}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.k)))
        return
    modes = chosen(parser, args.modes, MODES, "modes")
    probe = gemm_probe(args.dim)
    runs = []
    for repetition in range(args.repeat):
        for mode in modes:
            command = [sys.executable, __file__, "--worker", mode, "--n", str(args.n), "--dim", str(args.dim)]
            run = run_worker([*command, "--k", str(args.k)], mode)
            runs.append(run)
            print(f"[{repetition + 1}/{args.repeat}] {mode}: {run['seconds']:.2f} s", file=sys.stderr)
    print(report(args, runs, probe))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "probe": probe, "runs": runs}))


if __name__ == "__main__":
    main()
