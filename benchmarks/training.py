"""Training components side by side with OML 4.0 and PML 2.9: miners, triplet loss + miner, BalanceSampler.

Cases (dimension 384, L2-normalised float32 embeddings, so that PML's default normalisation changes nothing;
batches of 64 = 16 labels x 4, 256 = 32 x 8, 1024 = 128 x 8 items):

- ``all triplets``: every valid triplet. omlcore ``AllTripletsMiner()``, OML ``AllTripletsMiner()._sample``
  (OML's index lists), PML ``lmu.get_all_triplets_indices`` (what PML's losses use without a miner).
- ``all triplets, cap 4096``: a random subset of 4096 triplets. omlcore ``AllTripletsMiner(4096)``, OML
  ``AllTripletsMiner(4096)``; PML has no capped variant.
- ``batch hard``: omlcore ``HardTripletsMiner``, OML ``HardTripletsMiner._sample``, PML ``BatchHardMiner``.
- ``triplet + all, fwd+bwd`` / ``triplet + batch hard, fwd+bwd``: a margin-0.1 triplet loss on the mined
  triplets, forward and backward. omlcore ``TripletLossWithMiner``, OML ``TripletLossWithMiner``, PML
  ``TripletMarginLoss(distance=LpDistance(normalize_embeddings=False), reducer=MeanReducer())`` (+ ``BatchHardMiner``):
  with these two settings PML's definition equals OML's (mean over the triplets of ``relu(m + d_ap - d_an)``).
- ``BalanceSampler epoch``: one epoch of batches (``list(sampler)``) over 1,000,000 items with 100,000 labels
  (10 items each), ``n_labels=64``, ``n_instances=4``.

Every cell is the median of ``--repeats`` timed runs after one untimed warm-up; the implementations run in
turns, in a freshly shuffled order every run (seeded), so that load from other processes and caches left cold
by the previous call hit all of them alike; ``--steady`` times each call right after two untimed calls of the
same implementation instead (caches warm with its own code and data). Before timing, the outputs are
compared: mined sets must be identical (as sets for OML, whose order is random; as tensors for PML), losses and
gradients equal (``rtol 1e-4``), capped subsets valid triplets. Peak memory is measured in a fresh process per
cell: how far the resident set's high-water mark rises during one cold call, or the ``tracemalloc`` peak if larger
(Linux; ``--no-memory`` skips it). Ratio = time of the faster peer / time of omlcore.

    python benchmarks/training.py                 # the full table (a few minutes)
    python benchmarks/training.py --quick         # batch 64 and 256 only, small sampler
    python benchmarks/training.py --cases "batch hard" --no-memory   # one case
    python benchmarks/training.py --steady        # warm: each call right after two of its own
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import torch

THREADS = 2
DIM = 384
MARGIN = 0.1
CAP = 4096
BATCHES = {64: (16, 4), 256: (32, 8), 1024: (128, 8)}
SAMPLER = {"items": 1_000_000, "labels": 100_000, "n_labels": 64, "n_instances": 4}
QUICK_SAMPLER = {"items": 100_000, "labels": 10_000, "n_labels": 64, "n_instances": 4}
TOO_BIG = {("triplet + all, fwd+bwd", "OML", 1024): "n/a: gathers 7.3M x 384 x 3 floats (~34 GB)"}


@dataclass
class Cell:
    seconds: float | None = None
    peak_mb: float | None = None
    note: str = ""


@dataclass
class Row:
    case: str
    size: str
    cells: dict[str, Cell] = field(default_factory=dict)
    check: str = ""


def batch(size: int, requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    n_labels, n_instances = BATCHES[size]
    generator = torch.Generator().manual_seed(size)
    labels = torch.arange(n_labels).repeat_interleave(n_instances)[torch.randperm(size, generator=generator)]
    x = torch.nn.functional.normalize(torch.randn(size, DIM, generator=generator), dim=1)
    return x.requires_grad_(requires_grad), labels


def sampler_labels(config: dict[str, int]) -> np.ndarray:
    per_label = config["items"] // config["labels"]
    return np.random.default_rng(0).permutation(np.repeat(np.arange(config["labels"]), per_label))


# ---------------------------------------------------------------- the implementations, as zero-argument calls


def miner_calls(case: str, size: int) -> dict[str, Callable[[], Any]]:
    from oml.miners import AllTripletsMiner as OMLAll
    from oml.miners import HardTripletsMiner as OMLHard
    from pytorch_metric_learning.miners import BatchHardMiner
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    from omlcore.miners import AllTripletsMiner, HardTripletsMiner

    x, labels = batch(size)
    as_list = labels.tolist()
    if case == "all triplets":
        return {
            "omlcore": lambda: AllTripletsMiner()(x, labels),
            "OML": lambda: OMLAll()._sample(x, labels=as_list),
            "PML": lambda: lmu.get_all_triplets_indices(labels),
        }
    if case == f"all triplets, cap {CAP}":
        return {
            "omlcore": lambda: AllTripletsMiner(CAP)(x, labels),
            "OML": lambda: OMLAll(CAP)._sample(x, labels=as_list),
        }
    pml_miner, oml_miner, ours = BatchHardMiner(), OMLHard(), HardTripletsMiner()
    return {
        "omlcore": lambda: ours(x, labels),
        "OML": lambda: oml_miner._sample(x, labels=as_list),
        "PML": lambda: pml_miner(x, labels),
    }


def loss_functions(case: str) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    from oml.losses import TripletLossWithMiner as OMLTripletWithMiner
    from oml.miners import AllTripletsMiner as OMLAll
    from oml.miners import HardTripletsMiner as OMLHard
    from pytorch_metric_learning import distances, losses, miners, reducers

    from omlcore.losses import TripletLossWithMiner
    from omlcore.miners import HardTripletsMiner

    plain = distances.LpDistance(normalize_embeddings=False)
    pml_loss = losses.TripletMarginLoss(margin=MARGIN, distance=plain, reducer=reducers.MeanReducer())
    if case == "triplet + all, fwd+bwd":
        return {
            "omlcore": TripletLossWithMiner(MARGIN),
            "OML": OMLTripletWithMiner(MARGIN, miner=OMLAll()),
            "PML": pml_loss,
        }
    pml_miner = miners.BatchHardMiner(distance=plain)
    return {
        "omlcore": TripletLossWithMiner(MARGIN, miner=HardTripletsMiner()),
        "OML": OMLTripletWithMiner(MARGIN, miner=OMLHard()),
        "PML": lambda x, labels: pml_loss(x, labels, pml_miner(x, labels)),
    }


def loss_calls(case: str, size: int) -> dict[str, Callable[[], Any]]:
    x, labels = batch(size, requires_grad=True)

    def step(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], float]:
        def run() -> float:
            value = loss(x, labels)
            value.backward()
            x.grad = None
            return value.item()

        return run

    return {name: step(loss) for name, loss in loss_functions(case).items() if (case, name, size) not in TOO_BIG}


def sampler_calls(config: dict[str, int]) -> dict[str, Callable[[], Any]]:
    from oml.samplers import BalanceSampler as OMLBalance

    from omlcore.samplers import BalanceSampler

    labels = sampler_labels(config)
    ours = BalanceSampler(labels, config["n_labels"], config["n_instances"])
    oml = OMLBalance(labels.tolist(), config["n_labels"], config["n_instances"])
    return {"omlcore": lambda: list(ours), "OML": lambda: list(oml)}


def calls(case: str, size: int, quick: bool) -> dict[str, Callable[[], Any]]:
    if case.startswith("triplet +"):
        return loss_calls(case, size)
    if case == "BalanceSampler epoch":
        return sampler_calls(QUICK_SAMPLER if quick else SAMPLER)
    return miner_calls(case, size)


# ---------------------------------------------------------------- checks: same mined sets, same losses


def _encode(triplets: Any, size: int) -> torch.Tensor:
    a, p, n = (torch.as_tensor(t).long() for t in triplets)
    return ((a * size + p) * size + n).sort().values


def check(case: str, size: int) -> str:
    torch.manual_seed(0)
    np.random.seed(0)
    if case.startswith("triplet +"):
        x, labels = batch(size, requires_grad=True)
        results = {}
        for name, loss in loss_functions(case).items():
            if (case, name, size) in TOO_BIG:
                continue
            value = loss(x, labels)
            (grad,) = torch.autograd.grad(value, x)
            results[name] = (value.detach(), grad)
        ours = results.pop("omlcore")
        for value, grad in results.values():
            assert torch.allclose(ours[0], value, rtol=1e-4), (case, size, ours[0], value)
            assert torch.allclose(ours[1], grad, rtol=1e-4, atol=1e-7), (case, size)
        return f"same loss and gradient as {', '.join(results)}"
    if case == "BalanceSampler epoch":
        return "same epoch length and batch statistics (tests/oracles/training)"
    x, labels = batch(size)
    outputs = {name: call() for name, call in miner_calls(case, size).items()}
    ours = outputs.pop("omlcore")
    if case.startswith("all triplets, cap"):
        a, p, n = ours
        assert len(a) == min(CAP, len(_encode(outputs["OML"], size))) == len(set(_encode(ours, size).tolist()))
        assert bool((labels[a] == labels[p]).all() & (labels[a] != labels[n]).all() & (a != p).all())
        return "both: 4096 distinct valid triplets (random subsets)"
    for name, theirs in outputs.items():
        if name == "PML":
            assert all(torch.equal(u, v) for u, v in zip(ours, theirs, strict=True)), (case, size)
        else:
            assert torch.equal(_encode(ours, size), _encode(theirs, size)), (case, size)
    return "identical triplets (PML: same order)"


# ---------------------------------------------------------------- timing and memory


def time_row(case: str, size: int, quick: bool, repeats: int, steady: bool = False) -> dict[str, Cell]:
    """Median seconds per implementation; ``steady``: each timed call right after two untimed ones of its own."""
    implementations = calls(case, size, quick)
    times: dict[str, list[float]] = {name: [] for name in implementations}
    for call in implementations.values():
        call()  # warm-up
    budget = time.perf_counter() + 120.0
    names = list(implementations)
    order = random.Random(0)
    for i in range(repeats):
        order.shuffle(names)
        for name in names:
            call = implementations[name]
            if steady:
                call()
                call()
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
        if i >= 2 and time.perf_counter() > budget:  # very slow peers: at least three runs
            break
    return {name: Cell(statistics.median(values)) for name, values in times.items()}


def peak_memory_mb(case: str, name: str, size: int, quick: bool) -> float | None:
    command = [sys.executable, __file__, "--child", json.dumps([case, name, size, quick])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        print(f"memory of {case} / {name} / {size} failed: {result.stderr[-500:]}", file=sys.stderr)
        return None
    return float(result.stdout.strip().splitlines()[-1])


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key))


def child(spec: str) -> None:
    """One cold call; prints its peak memory in MB.

    The larger of: how far the resident set's high-water mark rose above the RSS before the call (sees torch's
    allocations) and the peak traced by ``tracemalloc`` (Python and numpy objects, also when they reuse memory
    that the allocator kept from the set-up).
    """
    case, name, size, quick = json.loads(spec)
    torch.set_num_threads(THREADS)
    call = calls(case, size, quick)[name]
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    before = _status_mb("VmRSS")
    tracemalloc.start()
    call()
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    print(max(_status_mb("VmHWM") - before, traced))


# ---------------------------------------------------------------- the table


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def fmt_memory(mb: float | None) -> str:
    return "" if mb is None else f" / {mb:.0f} MB" if mb >= 1 else " / <1 MB"


def table(rows: list[Row]) -> str:
    lines = [
        "| case | batch | omlcore | OML 4.0 | PML 2.9 | ratio vs faster peer | target | outputs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = row.cells["omlcore"].seconds
        peers = [c.seconds for n, c in row.cells.items() if n != "omlcore" and c.seconds is not None]
        ratio = min(peers) / ours if peers and ours else None
        if row.case == "BalanceSampler epoch":
            target = "10x: " + ("met" if ratio and ratio >= 10 else "NOT met")
        elif row.size in ("256", "1024"):
            target = "2x: " + ("met" if ratio and ratio >= 2 else "NOT met")
        else:
            target = "-"

        def cell(name: str, row: Row = row) -> str:
            if name not in row.cells:
                return next(
                    (note for (c, n, s), note in TOO_BIG.items() if (c, n, str(s)) == (row.case, name, row.size)), "-"
                )
            c = row.cells[name]
            return fmt_time(c.seconds) + fmt_memory(c.peak_mb)

        lines.append(
            f"| {row.case} | {row.size} | {cell('omlcore')} | {cell('OML')} | {cell('PML')} | "
            f"{'n/a' if ratio is None else f'{ratio:.1f}x'} | {target} | {row.check} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = ", ".join(
        f"{name} {version(dist)}"
        for name, dist in (
            ("torch", "torch"),
            ("numpy", "numpy"),
            ("OML", "open-metric-learning"),
            ("PML", "pytorch-metric-learning"),
        )
    )
    return f"{cpu}, {THREADS} threads (torch.set_num_threads), Python {platform.python_version()}, {versions}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 64 and 256 only, a 100k-item sampler")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per cell (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--steady", action="store_true", help="time each call right after two of its own (warm caches), not cold"
    )
    parser.add_argument("--cases", nargs="+", metavar="CASE", help="only these cases (names as in the table)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return
    torch.set_num_threads(THREADS)
    sizes = [64, 256] if args.quick else list(BATCHES)
    cases = [
        "all triplets",
        f"all triplets, cap {CAP}",
        "batch hard",
        "triplet + all, fwd+bwd",
        "triplet + batch hard, fwd+bwd",
    ]
    plan = [(case, size) for case in cases for size in sizes] + [("BalanceSampler epoch", 0)]
    if args.cases:
        unknown = set(args.cases) - {case for case, _ in plan}
        if unknown:
            parser.error(f"unknown case(s) {sorted(unknown)}; choose from {[*cases, 'BalanceSampler epoch']}")
        plan = [(case, size) for case, size in plan if case in args.cases]
    load_start = os.getloadavg()[0]
    rows = []
    for case, size in plan:
        label = f"{(QUICK_SAMPLER if args.quick else SAMPLER)['items']:,} items" if not size else str(size)
        row = Row(case, label, check=check(case, size))
        row.cells = time_row(case, size, args.quick, args.repeats, args.steady)
        rows.append(row)
        print(
            f"{case} / {label}: " + ", ".join(f"{n} {fmt_time(c.seconds)}" for n, c in row.cells.items()),
            file=sys.stderr,
        )
    load = f"load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end of the timings"
    if not args.no_memory:  # after all timings, so that these processes do not disturb them
        for (case, size), row in zip(plan, rows, strict=True):
            for name, cell in row.cells.items():
                cell.peak_mb = peak_memory_mb(case, name, size, args.quick)
    print(f"Machine: {machine()}; {load}.\n")
    print("Cells: median time / peak memory of one cold call (RSS high-water mark rise, or tracemalloc peak).\n")
    print(table(rows))


if __name__ == "__main__":
    main()
