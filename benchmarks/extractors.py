"""Extraction throughput (images/s) of omlcore's extractors: vits16 and resnet50 at 224 px by default.

Random weights (throughput does not depend on them), ``torch.inference_mode``, eval mode, a fixed batch
of random images, one untimed warm-up batch; the models are timed in turns (``--repeats``) and the median is
reported, so that load from other processes hits all of them alike. On CUDA it also measures bf16 autocast.
Where OML is installed (``tox -e bench -- benchmarks/extractors.py``), OML's ViTExtractor / ResnetExtractor
of the same architectures run in the same process, side by side.

    python benchmarks/extractors.py                      # CPU, every core torch sees
    python benchmarks/extractors.py --device cuda        # fp32 and bf16 autocast
    python benchmarks/extractors.py --models vitb32_clip small_cnn --size 64 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import platform
import statistics
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


def _oml_model(name: str) -> torch.nn.Module | None:
    """OML's extractor of the same architecture, if OML is installed and has one."""
    try:
        oml_models = importlib.import_module("oml.models")
    except ImportError:
        return None
    if name in oml_models.ViTExtractor.constructors:
        return oml_models.ViTExtractor(None, name, normalise_features=False)
    if name in oml_models.ResnetExtractor.constructors:
        resnet = oml_models.ResnetExtractor(None, name, gem_p=None, remove_fc=True, normalise_features=False)
        return resnet
    return None


def seconds_per_batch(
    model: torch.nn.Module, images: torch.Tensor, context: contextlib.AbstractContextManager[object], iters: int
) -> float:
    """Mean wall time of ``iters`` forward passes (after the warm-up the caller did)."""
    with torch.inference_mode(), context:
        _sync(images.device)
        start = time.perf_counter()
        for _ in range(iters):
            model(images)
        _sync(images.device)
    return (time.perf_counter() - start) / iters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vits16", "resnet50"], help="registered extractor names")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224, help="side of the square input images")
    parser.add_argument("--iters", type=int, default=2, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per model, interleaved; median reported")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-oml", action="store_true", help="skip OML's extractors even where OML is installed")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(
        f"torch {torch.__version__}, {hardware}, {torch.get_num_threads()} threads, {args.size} px, batch "
        f"{args.batch_size}; median of {args.repeats} interleaved measurements of {args.iters} batches each"
    )
    images = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    runs = []
    for name in args.models:
        models = [(f"omlcore {name}", build_extractor(name))]
        oml_model = None if args.no_oml else _oml_model(name)
        if oml_model is not None:
            models.append((f"OML {name}", oml_model))
        for label, model in models:
            model = model.to(device).eval()
            for precision, context in _precisions(device):
                with torch.inference_mode(), context:
                    model(images)  # warm-up
                runs.append((label, precision, model, context))
    timings: dict[int, list[float]] = {index: [] for index in range(len(runs))}
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits every model alike
        for index, (_, _, model, context) in enumerate(runs):
            timings[index].append(seconds_per_batch(model, images, context, args.iters))
    print("| model | precision | images/s (median) | min - max | ms/batch |")
    print("|---|---|---:|---:|---:|")
    for index, (label, precision, _, _) in enumerate(runs):
        rates = sorted(args.batch_size / seconds for seconds in timings[index])
        median = statistics.median(rates)
        spread = f"{rates[0]:,.1f} - {rates[-1]:,.1f}"
        print(f"| {label} | {precision} | {median:,.1f} | {spread} | {1000 * args.batch_size / median:,.0f} |")


if __name__ == "__main__":
    main()
