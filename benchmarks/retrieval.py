"""Retrieval evaluation side by side: omlcore vs OML 4.0 vs PML 2.9 (AccuracyCalculator with faiss-cpu).

Synthetic L2-normalised embeddings (``--dim``, default 384), 5 to 10 items per label (7.5 on average), every
item both query and gallery. Each library runs in its own subprocess, on the same data, so that its peak RSS
is its own: "peak RSS above start" is the peak resident memory during the timed section minus the resident
memory right before it (with the embeddings already in memory). Timed sections:

- omlcore: ``EmbeddingMetrics.update`` + ``compute`` with CMC@1,5 / precision@5 / mAP@5 and PML's
  precision_at_1, R-precision, MAP@R in one run (its exact kNN retrieves max(R) neighbours for the latter);
- OML 4.0: ``RetrievalResults.from_embeddings`` + ``calc_retrieval_metrics_rr`` (CMC@1,5 / precision@5 / mAP@5);
- PML 2.9: ``AccuracyCalculator(k="max_bin_count").get_accuracy`` (precision_at_1, R-precision, MAP@R), faiss kNN.

The distance GEMM is the floor: ``2 * Q * G * D`` FLOP, or half of it when the queries are the gallery and each
distance is computed once. The script measures this machine's fp32 matmul rate (``torch.mm`` and, on CPU,
oneDNN) at the shape omlcore's blocks use and reports the fraction of it that omlcore's whole run reaches.

    python benchmarks/retrieval.py --n 50000                    # tox -e bench -- benchmarks/retrieval.py --n 50000
    python benchmarks/retrieval.py --n 200000 --libraries omlcore
    python benchmarks/retrieval.py --n 1000000 --device cuda --libraries omlcore
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

LIBRARIES = ("omlcore", "oml", "pml")
OML_METRICS = {"cmc": (1, 5), "precision": (5,), "map": (5,)}
PML_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
COLUMNS = ["cmc/1", "cmc/5", "precision/5", "map/5", *PML_METRICS]


def make_data(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm embeddings around one random centre per label (5..10 items each), in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(5, 11, (n // 5 + 1,), generator=generator)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), sizes)[:n]
    if int((labels == labels[-1]).sum()) < 5:  # the last label, cut short: join it to the one before
        labels[labels == labels[-1]] -= 1
    labels = labels[torch.randperm(n, generator=generator)]
    centres = torch.randn(int(labels.max()) + 1, dim, generator=generator)
    embeddings = torch.randn(n, dim, generator=generator).mul_(2.0).add_(centres[labels])
    return torch.nn.functional.normalize(embeddings, dim=1, out=embeddings), labels


# --- memory --------------------------------------------------------------------------------------------------


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def _status_kib(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mib() -> float:
    return _status_kib("VmHWM") / 1024


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine spent (``/proc/stat``: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def chosen(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> list[str]:
    """The names in the comma-separated ``text``; a parser error names those not in ``allowed``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = set(names) - set(allowed)
    if unknown:
        parser.error(f"unknown {what} {sorted(unknown)}; choose from {', '.join(allowed)}")
    return names


def run_worker(command: list[str], what: str) -> dict[str, Any]:
    """Run one worker process; its JSON line (the last of its stdout), plus ``others_cpu_seconds``: the CPU time
    the machine spent on other processes meanwhile (a shared machine makes timings noisy)."""
    busy_before, children_before = busy_cpu_seconds(), children_cpu_seconds()
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"{what} failed:\n{completed.stderr}")
    run: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    run["others_cpu_seconds"] = (busy_cpu_seconds() - busy_before) - (children_cpu_seconds() - children_before)
    return run


# --- the libraries -------------------------------------------------------------------------------------------


def run_omlcore(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from omlcore.metrics import EmbeddingMetrics

    everything = torch.ones(len(labels), dtype=torch.bool, device=embeddings.device)
    metrics = EmbeddingMetrics(
        cmc_top_k=OML_METRICS["cmc"],
        precision_top_k=OML_METRICS["precision"],
        map_top_k=OML_METRICS["map"],
        pcf_variance=(),
        pml_metrics=PML_METRICS,
    )
    metrics.update(
        {
            "embeddings": embeddings,
            "labels": labels,
            "is_query": everything,
            "is_gallery": everything,
            "idx": torch.arange(len(labels), device=embeddings.device),
        }
    )
    result = metrics.compute()
    return {column: float(result[f"OVERALL/{column}"]) for column in COLUMNS}


def run_oml(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    import pandas as pd
    from oml.datasets.dataframe import DFQueryGalleryLabeledDataset
    from oml.interfaces.datasets import IBaseDataset
    from oml.metrics.embeddings import calc_retrieval_metrics_rr
    from oml.retrieval import RetrievalResults

    class Items(IBaseDataset):
        def __init__(self, n: int) -> None:
            self.n, self.extra_data, self.index_key, self.input_tensors_key = n, {}, "idx", "x"

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, item: int) -> dict[str, Any]:
            return {"idx": item}

    n = len(labels)
    table = pd.DataFrame({"label": labels.cpu().numpy(), "is_query": True, "is_gallery": True})
    dataset = DFQueryGalleryLabeledDataset(Items(n), table)
    results = RetrievalResults.from_embeddings(embeddings, dataset, n_items=max(max(v) for v in OML_METRICS.values()))
    metrics = calc_retrieval_metrics_rr(
        results,
        cmc_top_k=OML_METRICS["cmc"],
        precision_top_k=OML_METRICS["precision"],
        map_top_k=OML_METRICS["map"],
        verbose=False,
    )
    return {f"{name}/{k}": float(metrics[name][k]) for name, ks in OML_METRICS.items() for k in ks}


def run_pml(embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(include=PML_METRICS, k="max_bin_count", device=embeddings.device)
    return {name: float(value) for name, value in calculator.get_accuracy(embeddings, labels).items()}


RUNNERS = {"omlcore": run_omlcore, "oml": run_oml, "pml": run_pml}
#: Imported before the clock starts (the runners' own imports are then free).
IMPORTS = {
    "omlcore": ["omlcore.metrics"],
    "oml": ["pandas", "oml.datasets.dataframe", "oml.interfaces.datasets", "oml.metrics.embeddings", "oml.retrieval"],
    "pml": ["pytorch_metric_learning.utils.accuracy_calculator", "faiss"],
}


def worker(library: str, n: int, dim: int, device: str) -> dict[str, Any]:
    """One library on the benchmark data, in this (fresh) process."""
    for module in IMPORTS[library]:
        importlib.import_module(module)
    embeddings, labels = make_data(n, dim)
    embeddings, labels = embeddings.to(device), labels.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start_rss = rss_mib()
    reset_peak()
    start = time.perf_counter()
    values = RUNNERS[library](embeddings, labels)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "library": library,
        "seconds": seconds,
        "start_rss_mib": start_rss,
        "peak_above_start_mib": peak_mib() - start_rss,
        "embeddings_mib": embeddings.numel() * 4 / 2**20,
        "values": values,
    }
    if device == "cuda":
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if library == "omlcore":  # right after the run, in the same process and conditions
        result["matmul_gflops"] = matmul_rates(dim, device)
    return result


# --- the GEMM floor ------------------------------------------------------------------------------------------


def matmul_rates(dim: int, device: str) -> dict[str, float]:
    """fp32 GFLOP/s of ``torch.mm`` (and oneDNN on CPU) at the block shape of omlcore's kNN: (c x dim) @ (dim x c)."""
    from omlcore.retrieval.scores import default_chunk_size

    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32
    size = default_chunk_size(torch.device(device))
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(size, dim, generator=generator).to(device)
    b = torch.randn(size, dim, generator=generator).to(device)
    flop = 2 * size * size * dim

    def rate(function: Any, seconds: float = 1.0) -> float:
        function()
        if device == "cuda":
            torch.cuda.synchronize()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            function()
            count += 1
        if device == "cuda":
            torch.cuda.synchronize()
        return flop * count / (time.perf_counter() - start) / 1e9

    rates = {"torch.mm": max(rate(lambda: torch.mm(a, b.T)) for _ in range(3))}  # best of 3: least disturbed
    if device == "cpu" and torch.backends.mkldnn.is_available():
        a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
        rates["oneDNN"] = max(rate(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None).to_dense()) for _ in range(3))
    return rates


# --- report --------------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {"python": platform.python_version()}
    for name in ("omlcore", "torch", "numpy", "open-metric-learning", "pytorch-metric-learning", "faiss-cpu"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"  # NaN: not computed by this library


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    n, dim = args.n, args.dim
    ours = next((run for run in runs if run["library"] == "omlcore"), None)
    lines = [
        f"N = {n:,}, dim {dim}, every item both query and gallery, {args.device}. "
        f"Embeddings: {runs[0]['embeddings_mib']:.0f} MiB. Fastest of {args.repeat} interleaved run(s) per library.",
        "",
        "| library | time, s | omlcore faster by | peak RSS above start, MiB | other processes' CPU, s | "
        + " | ".join(COLUMNS)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(COLUMNS),
    ]
    for run in runs:
        speedup = f"{run['seconds'] / ours['seconds']:.1f}x" if ours and run is not ours else ""
        values = " | ".join(fmt(run["values"].get(column, float("nan"))) for column in COLUMNS)
        lines.append(
            f"| {run['library']} | {run['seconds']:.2f} | {speedup} | {run['peak_above_start_mib']:.0f} "
            f"| {run['others_cpu_seconds']:.1f} | {values} |"
        )
    if ours:
        full_flop, floor_flop = 2 * n * n * dim, n * n * dim  # queries are the gallery: each distance once
        rates = ours["matmul_gflops"]
        best = max(rates.values())
        lines += [
            "",
            "fp32 matmul rate at omlcore's block shape: "
            + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in rates.items())
            + f". omlcore's whole run = {floor_flop / ours['seconds'] / 1e9:.0f} GFLOP/s of the symmetric floor "
            f"(N^2 D = {floor_flop / 1e12:.2f} TFLOP): {floor_flop / ours['seconds'] / 1e9 / best:.0%} of the best "
            f"rate; {full_flop / ours['seconds'] / 1e9 / best:.0%} of it counted against the full 2 Q G D.",
        ]
        if "gpu_peak_mib" in ours:
            lines.append(f"GPU peak memory allocated: {ours['gpu_peak_mib']:.0f} MiB.")
    lines += ["", f"Machine: {machine(args.device)}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="number of items (each both query and gallery)")
    parser.add_argument("--dim", type=int, default=384, help="embedding size")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated subset of omlcore,oml,pml")
    parser.add_argument("--repeat", type=int, default=1, help="runs per library (interleaved); the fastest is shown")
    parser.add_argument("--json", type=Path, help="also write the raw results (every run) here")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.device)))
        return
    libraries = chosen(parser, args.libraries, LIBRARIES, "libraries")
    every: list[dict[str, Any]] = []
    for repetition in range(args.repeat):  # interleaved, so that a noisy spell hits every library alike
        for library in libraries:
            command = [sys.executable, __file__, "--worker", library, "--n", str(args.n), "--dim", str(args.dim)]
            run = run_worker([*command, "--device", args.device], library)
            every.append(run)
            print(f"[{repetition + 1}/{args.repeat}] {library}: {run['seconds']:.2f} s", file=sys.stderr)
    runs = [min((r for r in every if r["library"] == library), key=lambda r: r["seconds"]) for library in libraries]
    print(report(args, runs))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": every}))


if __name__ == "__main__":
    main()
