"""Training-free postprocessors beside the plain kNN: time and peak memory, at several N (memory growth).

The data of ``benchmarks/retrieval.py`` (L2-normalised, dim 384, 5 to 10 items per label), every item both query
and gallery (leave-one-out), ``top_k`` results per query (default 10), metric ``l2``. One fresh process per
postprocessor and N: it times the plain kNN (``RetrievalResults.from_split``), then the postprocessor's ``process``
on those results (built from its registered name with its default arguments), so that both run in the same
conditions on this shared machine; "x kNN" is the ratio of the two in that process, of CPU seconds (all threads:
steadier than wall time when other jobs share the cores) and of wall seconds. Peak memory: the rise of the
peak RSS (VmHWM, reset before each timed section, after returning freed heap to the OS) above the RSS right before
it, the embeddings already loaded.

    python benchmarks/postprocessing.py --n 25000 50000
    python benchmarks/postprocessing.py --n 5000 --steps aqe,csls     # a quick look
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from retrieval import (
    machine,
    make_data,
    peak_mib,
    reset_peak,
    rss_mib,
    run_worker,
    versions,
)

STEPS = ("aqe", "alpha_qe", "dba", "k_reciprocal", "csls")


def measured(function: Any) -> tuple[Any, dict[str, float]]:
    """``function()``'s value; its wall and CPU seconds (all threads), its peak RSS rise (MiB)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS, so that reusing it counts as a rise
    start_rss = rss_mib()
    reset_peak()
    start, start_cpu = time.perf_counter(), time.process_time()
    value = function()
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return value, {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak_mib() - start_rss}


def hits(results: Any) -> dict[str, float]:
    relevant = results.is_relevant.float()
    return {"cmc@1": float(relevant[:, 0].mean()), "precision": float(relevant.mean())}


def worker(step: str, n: int, dim: int, top_k: int) -> dict[str, Any]:
    from omlcore.postprocessing import RetrievalContext, build_postprocessor
    from omlcore.retrieval import QueryGallerySplit, RetrievalResults

    embeddings, labels = make_data(n, dim)
    split = QueryGallerySplit.from_items(embeddings, labels)
    postprocessor = build_postprocessor(step)
    assert postprocessor is not None
    results, knn = measured(lambda: RetrievalResults.from_split(split, top_k=top_k, metric="l2"))
    context = RetrievalContext(split, metric="l2")
    processed, own = measured(lambda: postprocessor.process(results, context))
    return {
        "step": step,
        "n": n,
        "postprocessor": repr(postprocessor),
        **{f"knn_{key}": value for key, value in knn.items()},
        **own,
        "embeddings_mib": embeddings.numel() * 4 / 2**20,
        "before": hits(results),
        "after": hits(processed),
    }


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    lines = []
    for n in args.n:
        at_n = [run for run in runs if run["n"] == n]
        knn = sorted(at_n, key=lambda run: run["knn_cpu_seconds"])[len(at_n) // 2]  # the median process's kNN
        lines += [
            f"N = {n:,} (embeddings {knn['embeddings_mib']:.0f} MiB), top_k {args.top_k}, l2, leave-one-out:",
            "",
            "| step | wall, s | CPU, s | x kNN, CPU (wall) | peak RSS above start, MiB | other processes' CPU, s "
            f"| CMC@1 | precision@{args.top_k} |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            f"| plain kNN (median of the {len(at_n)} processes) | {knn['knn_seconds']:.1f} | "
            f"{knn['knn_cpu_seconds']:.1f} | 1 | {knn['knn_peak_mib']:.0f} | | {knn['before']['cmc@1']:.4f} | "
            f"{knn['before']['precision']:.4f} |",
        ]
        for run in at_n:
            cpu_ratio, wall_ratio = run["cpu_seconds"] / run["knn_cpu_seconds"], run["seconds"] / run["knn_seconds"]
            lines.append(
                f"| {run['postprocessor']} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | {cpu_ratio:.2f} "
                f"({wall_ratio:.2f}) | {run['peak_mib']:.0f} | {run['others_cpu_seconds']:.0f} "
                f"| {run['after']['cmc@1']:.4f} | {run['after']['precision']:.4f} |"
            )
        lines.append("")
    if len(args.n) > 1:
        low, high = min(args.n), max(args.n)
        growth = [f"kNN {_peak(runs, high, None) / _peak(runs, low, None):.1f}x"]
        growth += [f"{step} {_peak(runs, high, step) / _peak(runs, low, step):.1f}x" for step in args.steps]
        lines += [f"Peak memory growth from N = {low:,} to {high:,}: " + ", ".join(growth) + ".", ""]
    lines.append(
        f"Machine: {machine('cpu')}. Versions: " + ", ".join(f"{key} {value}" for key, value in versions().items())
    )
    return "\n".join(lines)


def _peak(runs: list[dict[str, Any]], n: int, step: str | None) -> float:
    """The kNN's median peak (``step`` None) or the step's, at ``n``."""
    if step is None:
        peaks = sorted(run["knn_peak_mib"] for run in runs if run["n"] == n)
        return peaks[len(peaks) // 2]
    return next(run["peak_mib"] for run in runs if run["n"] == n and run["step"] == step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[25_000, 50_000], help="numbers of items, one table each")
    parser.add_argument("--dim", type=int, default=384, help="embedding size")
    parser.add_argument("--top-k", type=int, default=10, help="results per query")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.manual_seed(0)
        print(json.dumps(worker(args.worker, args.n[0], args.dim, args.top_k)))
        return
    args.steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    runs = []
    for n in args.n:
        for step in args.steps:
            command = [sys.executable, __file__, "--worker", step, "--n", str(n), "--dim", str(args.dim)]
            run = run_worker([*command, "--top-k", str(args.top_k)], f"{step} at N = {n}")
            runs.append(run)
            print(f"N = {n}, {step}: kNN {run['knn_seconds']:.1f} s, then {run['seconds']:.1f} s", file=sys.stderr)
    print(report(args, runs))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs}))


if __name__ == "__main__":
    main()
