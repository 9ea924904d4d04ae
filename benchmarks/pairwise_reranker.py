"""Throughput (pairs/s) of PairwiseReranker on the CPU with a small CNN pairwise model, for several top_n.

The model stands in for a trained re-ranker: two conv towers (query, gallery) of 3x64x64 images, their features
concatenated and scored by an MLP head, sigmoid output (OML's STIR convention: lower = more similar). Random
weights: throughput does not depend on them. Items are random images held in memory (no decoding), so the figure
is the re-ranker's own cost (item fetching, collation, model, sorting and rescaling) over the model's. Each top_n
runs the model alone on the same pairs (the floor), omlcore's re-ranker and, where OML is installed
(``tox -e bench -- benchmarks/pairwise_reranker.py``), OML 4.0's PairwiseReranker with the same model and items,
``--repeats`` times in turns; medians of wall-clock and CPU time are shown (on a shared machine pairs per CPU-second
is the steadier figure).

    python benchmarks/pairwise_reranker.py                       # 500 queries, top_n 5 10 20
    python benchmarks/pairwise_reranker.py --queries 200 --top-n 10 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from omlcore.postprocessing import RetrievalContext
from omlcore.postprocessing.pairwise import PairwiseReranker
from omlcore.retrieval import QueryGallerySplit, RetrievalResults


def _tower() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class SmallPairwiseCNN(nn.Module):
    """Two conv towers + concatenation + MLP head; ``forward(x1, x2) -> (B,)`` sigmoid scores."""

    def __init__(self) -> None:
        super().__init__()
        self.query_tower, self.gallery_tower = _tower(), _tower()
        self.head = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        features = torch.cat([self.query_tower(x1), self.gallery_tower(x2)], dim=1)
        return torch.sigmoid(self.head(features)).squeeze(1)

    def predict(self, x1: Tensor, x2: Tensor) -> Tensor:  # OML's IPairwiseModel
        return self.forward(x1, x2)


class Images:
    """Random 3x64x64 images in memory, as dataset items; OML's query/gallery dataset interface on top."""

    input_tensors_key = "images"

    def __init__(self, n: int, query_ids: Tensor, gallery_ids: Tensor, size: int) -> None:
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
        self.query_ids, self.gallery_ids = query_ids, gallery_ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": self.images[index], "idx": index}

    def get_query_ids(self) -> Tensor:
        return self.query_ids

    def get_gallery_ids(self) -> Tensor:
        return self.gallery_ids


def _seconds(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of ``run()``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _model_alone(model: nn.Module, images: Tensor, pairs: tuple[Tensor, Tensor], batch_size: int) -> None:
    """The floor: the model over the same pairs in batches of the same size, images gathered by index."""
    queries, gallery = pairs
    with torch.no_grad():
        for start in range(0, len(queries), batch_size):
            model(images[queries[start : start + batch_size]], images[gallery[start : start + batch_size]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--gallery", type=int, default=2000)
    parser.add_argument("--top-n", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    n_items = args.queries + args.gallery
    is_query = torch.arange(n_items) < args.queries
    split = QueryGallerySplit.from_items(torch.randn(n_items, 32), is_query=is_query, is_gallery=~is_query)
    results = RetrievalResults.from_split(split, top_k=max(args.top_n) + 10)
    assert split.query_ids is not None and split.gallery_ids is not None
    items = Images(n_items, split.query_ids, split.gallery_ids, args.size)
    context = RetrievalContext(split, dataset=items)
    model = SmallPairwiseCNN().eval()
    oml_reranker = None
    if importlib.util.find_spec("oml") is not None:
        from oml.retrieval.postprocessors.pairwise import PairwiseReranker as oml_reranker

    print(
        f"CPU threads: {torch.get_num_threads()}, torch {torch.__version__}, images 3x{args.size}x{args.size}, "
        f"batches of {args.batch_size} pairs, median of {args.repeats}, load average {os.getloadavg()[0]:.1f}"
    )
    print("| top_n | pairs | run | time, s | pairs/s | ms per query | CPU, s | pairs per CPU-s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for top_n in args.top_n:
        head = results.retrieved_ids[:, :top_n]
        pairs = (split.query_ids[:, None].expand_as(head).flatten(), split.gallery_ids[head].flatten())
        ours = PairwiseReranker(top_n, model, batch_size=args.batch_size)
        runs: dict[str, Callable[[], object]] = {
            "model alone": functools.partial(_model_alone, model, items.images, pairs, args.batch_size),
            "omlcore": functools.partial(ours.process, results, context),
        }
        if oml_reranker is not None:
            theirs = oml_reranker(top_n, model, num_workers=0, batch_size=args.batch_size)
            runs["OML 4.0"] = functools.partial(theirs.process, _to_oml(results), items)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.repeats):  # in turns, so that load from other processes hits every run alike
            for name, run in runs.items():
                times[name].append(_seconds(run))
        n_pairs = len(pairs[0])
        for name, measured in times.items():
            wall, cpu = (statistics.median(values) for values in zip(*measured, strict=True))
            print(
                f"| {top_n} | {n_pairs} | {name} | {wall:.2f} | {n_pairs / wall:,.0f} | "
                f"{1000 * wall / args.queries:.2f} | {cpu:.2f} | {n_pairs / cpu:,.0f} |"
            )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def _to_oml(results: RetrievalResults) -> Any:
    from oml.retrieval.retrieval_results import RetrievalResults as OMLRetrievalResults

    distances, retrieved, _ = results.to_lists()
    return OMLRetrievalResults(distances=distances, retrieved_ids=retrieved)


if __name__ == "__main__":
    main()
