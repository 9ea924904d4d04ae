"""Extraction throughput (images/s) of omlcore's extractors: vits16 and resnet50 at 224 px by default.

Random weights (throughput does not depend on them), ``torch.inference_mode``, eval mode, a fixed batch
of random images; the first iterations warm up and are not timed. On CUDA it also measures bf16 autocast.

    python benchmarks/extractors.py                      # CPU, every core torch sees
    python benchmarks/extractors.py --device cuda        # fp32 and bf16 autocast
    python benchmarks/extractors.py --models vitb32_clip small_cnn --size 64 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from omlcore.models import build_extractor


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _precisions(device: torch.device) -> Iterator[tuple[str, contextlib.AbstractContextManager[object]]]:
    yield "fp32", contextlib.nullcontext()
    if device.type == "cuda":
        yield "bf16 autocast", torch.autocast("cuda", dtype=torch.bfloat16)


def measure(name: str, device: torch.device, batch_size: int, size: int, iters: int, warmup: int) -> list[str]:
    """Markdown rows ``| model | precision | batch | images/s | ms/batch |`` for one extractor."""
    model = build_extractor(name).to(device).eval()
    images = torch.randn(batch_size, 3, size, size, device=device)
    rows = []
    for precision, context in _precisions(device):
        with torch.inference_mode(), context:
            for _ in range(warmup):
                model(images)
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                model(images)
            _sync(device)
            seconds = (time.perf_counter() - start) / iters
        rows.append(f"| {name} | {precision} | {batch_size} | {batch_size / seconds:,.1f} | {seconds * 1000:,.0f} |")
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vits16", "resnet50"], help="registered extractor names")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="side of the square input images")
    parser.add_argument("--iters", type=int, default=3, help="timed batches per model and precision")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(
        f"torch {torch.__version__}, {hardware}, {torch.get_num_threads()} threads, {args.size} px, "
        f"{args.iters} timed batches after {args.warmup} warm-up"
    )
    print("| model | precision | batch | images/s | ms/batch |")
    print("|---|---|---:|---:|---:|")
    for name in args.models:
        measure(name, device, args.batch_size, args.size, args.iters, args.warmup)


if __name__ == "__main__":
    main()
