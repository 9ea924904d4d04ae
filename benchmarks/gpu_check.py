"""One short check of omlcore on a CUDA machine: training, inference, kNN, metrics and NCCL, each timed.

1. ``fit``: one epoch of AMP training (bfloat16 autocast) of an omlcore resnet18 with a triplet loss on generated
   images (a class is a random colour pattern plus noise), with a finite loss throughout;
2. ``inference``: embeddings of those images in eval mode under autocast, images per second;
3. ``knn``: the exact kNN (float32, TF32 off) and the certified fast path at ``--n`` items (default 1,000,000,
   dim 384, each item a query excluded for itself), their ids equal, and the exact ids of a sample of queries
   verified in float64 (every returned item no farther than the float64 k-th neighbour, within float32 rounding);
4. ``metrics``: EmbeddingMetrics on a subset on CUDA and on the CPU, equal;
5. ``nccl``: a 1-GPU NCCL process group, an all-reduce.

On a machine without CUDA it says so and exits 0 (nothing to check). The checks take a device, so their
CPU-independent parts run in the unit tests (tests/retrieval/test_gpu_check.py).

    python benchmarks/gpu_check.py                      # everything, about a minute on an H100
    python benchmarks/gpu_check.py --n 200000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

CHECKS = ("fit", "inference", "knn", "metrics", "nccl")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_images(n: int, n_classes: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(3, size, size)`` in ``n_classes`` classes: a fixed random pattern per class plus noise."""
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.rand(n_classes, 3, size, size, generator=generator)
    labels = torch.arange(n) * n_classes // n  # consecutive blocks: every batch holds whole classes
    images = patterns[labels] + 0.3 * torch.randn(n, 3, size, size, generator=generator)
    return images, labels


def check_fit(
    device: torch.device, n: int = 2048, size: int = 64, batch: int = 128, amp: bool = True
) -> dict[str, Any]:
    """One epoch of training (``amp``: under bfloat16 autocast); ok when every loss is finite."""
    from omlcore.losses import TripletLossWithMiner
    from omlcore.models import resnet18

    images, labels = make_images(n, n_classes=max(2, n // 16), size=size)  # batches of batch / 16 classes
    model = resnet18(normalise_features=True).to(device)
    loss_fn = TripletLossWithMiner(margin=0.2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    _sync(device)
    start = time.perf_counter()
    model.train()
    for first in range(0, n, batch):
        x, y = images[first : first + batch].to(device), labels[first : first + batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embeddings = model(x)
        loss = loss_fn(embeddings.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.detach())
    _sync(device)
    values = torch.stack(losses).float().cpu()
    return {
        "ok": bool(torch.isfinite(values).all()),
        "seconds": time.perf_counter() - start,
        "steps": len(losses),
        "last_loss": float(values[-1]),
    }


def check_inference(device: torch.device, n: int = 4096, size: int = 64, batch: int = 512) -> dict[str, Any]:
    """Embeddings of ``n`` generated images in eval mode under autocast; ok when all are finite."""
    from omlcore.models import resnet18

    images, _ = make_images(n, n_classes=16, size=size)
    model = resnet18(normalise_features=True).to(device).eval()
    outputs = []
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for first in range(0, n, batch):
            outputs.append(model(images[first : first + batch].to(device)).float())
    _sync(device)
    seconds = time.perf_counter() - start
    embeddings = torch.cat(outputs)
    return {"ok": bool(torch.isfinite(embeddings).all()), "seconds": seconds, "images_per_second": n / seconds}


def verify_in_float64(
    queries: torch.Tensor, gallery: torch.Tensor, ids: torch.Tensor, exclude_self: torch.Tensor | None
) -> bool:
    """Whether each row of ``ids`` holds ``k`` distinct gallery items (no ``-1``, not the query's own position in
    ``exclude_self``), none farther in float64 than the float64 k-th nearest neighbour by more than the float32
    rounding of squared L2 distances allows: ``d^2 <= kth^2 + 2 gamma_(D+3) (||q|| + max ||g||)^2``."""
    q, g = queries.double(), gallery.double()
    squared = torch.cdist(q, g).square_()
    k, dim = ids.shape[1], q.shape[1]
    if bool((ids < 0).any()) or any(len(set(row)) < k for row in ids.tolist()):
        return False
    if exclude_self is not None:
        if bool((ids == exclude_self[:, None]).any()):
            return False
        squared[torch.arange(len(q), device=q.device), exclude_self] = math.inf
    kth = squared.topk(k, dim=1, largest=False).values[:, -1]
    unit = 2.0**-24
    rounding = 2 * (dim + 3) * unit / (1 - (dim + 3) * unit) * (q.norm(dim=1) + g.norm(dim=1).max()) ** 2
    return bool((squared.gather(1, ids) <= (kth + rounding * 1.01)[:, None]).all())


def check_knn(
    device: torch.device, n: int = 1_000_000, dim: int = 384, k: int = 5, sample: int = 256
) -> dict[str, Any]:
    """The exact and the fast kNN at ``n`` items; ok when their ids are equal and a sample verifies in float64."""
    from omlcore.retrieval import ExactKNN

    torch.backends.cuda.matmul.allow_tf32 = False
    generator = torch.Generator().manual_seed(2)
    items = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1).to(device)
    ids = torch.arange(n, device=device)
    timings, found = {}, {}
    for mode in ("off", "on"):
        knn = ExactKNN(fast=mode)
        _sync(device)
        start = time.perf_counter()
        found[mode] = knn.search(items, items, k, [(ids, ids)])
        _sync(device)
        timings[mode] = time.perf_counter() - start
        stats = knn.last_fast_stats
    chosen = torch.randperm(n, generator=generator)[:sample].to(device)
    verified = verify_in_float64(items[chosen], items, found["off"][1][chosen], chosen)
    equal = torch.equal(found["on"][1], found["off"][1]) and torch.equal(found["on"][0], found["off"][0])
    return {
        "ok": equal and verified,
        "exact_seconds": timings["off"],
        "fast_seconds": timings["on"],
        "fast_equals_exact": equal,
        "sample_verified_in_float64": verified,
        "certified_fraction": None if stats is None else stats.certified_fraction,
        "fast_path_ran": stats is not None,
    }


def compare_metrics(got: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ (NaN equals NaN; a key missing on one side differs)."""
    differing = []
    for key in sorted(set(got) | set(expected)):
        a, b = got.get(key), expected.get(key)
        same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        if not same:
            differing.append(key)
    return differing


def check_metrics(device: torch.device, n: int = 20_000, dim: int = 384) -> dict[str, Any]:
    """EmbeddingMetrics of the same subset on ``device`` and on the CPU; ok when every value is equal."""
    from omlcore.metrics import EmbeddingMetrics

    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, n // 6, (n,), generator=generator)
    centres = torch.randn(int(labels.max()) + 1, dim, generator=generator)
    embeddings = torch.nn.functional.normalize(centres[labels] + 2 * torch.randn(n, dim, generator=generator), dim=1)
    values = {}
    seconds = {}
    for where in (device, torch.device("cpu")):
        metrics = EmbeddingMetrics(cmc_top_k=(1, 5), precision_top_k=(5,), map_top_k=(5,), fmr_vals=(0.01,))
        everything = torch.ones(n, dtype=torch.bool)
        metrics.update(
            {"embeddings": embeddings.to(where), "labels": labels, "is_query": everything, "is_gallery": everything}
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = metrics.compute()
        seconds[where.type] = time.perf_counter() - start
        values[where.type] = {key: float(value) for key, value in result.items() if "/" in key}
    differing = compare_metrics(values[device.type], values["cpu"])
    return {"ok": not differing, "seconds": seconds, "differing": differing, "values": values[device.type]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_nccl(device: torch.device) -> dict[str, Any]:
    """A 1-process NCCL group on ``device``: an all-reduce of ones gives ones."""
    import torch.distributed as dist

    start = time.perf_counter()
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        value = torch.ones(1024, device=device)
        dist.all_reduce(value)
        _sync(device)
        ok = bool((value == 1).all())
    finally:
        dist.destroy_process_group()
    return {"ok": ok, "seconds": time.perf_counter() - start}


def run_checks(device: torch.device, names: list[str], n: int) -> dict[str, dict[str, Any]]:
    checks: dict[str, Callable[[], dict[str, Any]]] = {
        "fit": lambda: check_fit(device),
        "inference": lambda: check_inference(device),
        "knn": lambda: check_knn(device, n=n),
        "metrics": lambda: check_metrics(device),
        "nccl": lambda: check_nccl(device),
    }
    results = {}
    for name in names:
        try:
            results[name] = checks[name]()
        except Exception as error:  # a failed check is reported, the others still run
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(f"{name}: {json.dumps(results[name], default=str)}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="items of the kNN check")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.checks.split(",") if name.strip()]
    if set(names) - set(CHECKS):
        parser.error(f"unknown checks {sorted(set(names) - set(CHECKS))}; choose from {', '.join(CHECKS)}")
    if not torch.cuda.is_available():
        print("gpu_check needs a CUDA device; torch sees none here, so there is nothing to check.")
        return 0
    device = torch.device("cuda")
    results = run_checks(device, names, args.n)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, pid {os.getpid()}")
    for name, result in results.items():
        print(f"- {name}: {'ok' if result['ok'] else 'FAILED'} {json.dumps(result, default=str)}")
    if args.json:
        args.json.write_text(json.dumps(results, default=str))
    return 0 if all(result["ok"] for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
