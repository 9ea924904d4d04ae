"""A real 2-process torch.distributed (gloo) run: uneven, padded shards merge into exactly the 1-process metrics."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from omlcore.metrics import PML_METRICS, EmbeddingMetrics

N = 230
KW: dict[str, Any] = {
    "cmc_top_k": (1, 5),
    "precision_top_k": (5,),
    "map_top_k": (5, 10),
    "fmr_vals": (0.05,),
    "pcf_variance": (0.5,),
    "pml_metrics": PML_METRICS,
}


def make_data() -> dict[str, Any]:
    generator = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 40, (N,), generator=generator)
    return {
        "embeddings": torch.randn(N, 16, generator=generator),
        "labels": labels,
        "is_query": torch.rand(N, generator=generator) < 0.75,
        "is_gallery": torch.rand(N, generator=generator) < 0.8,
        "idx": torch.arange(N),
        "categories": [["a", "b"][int(i)] for i in torch.randint(0, 2, (N,), generator=generator)],
        "sequences": torch.randint(-1, 80, (N,), generator=generator),
    }


def feed(metrics: EmbeddingMetrics, data: dict[str, Any], rows: list[int], batch_size: int) -> None:
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        index = torch.tensor(chunk)
        metrics.update({k: [v[i] for i in chunk] if isinstance(v, list) else v[index] for k, v in data.items()})


def shard(rank: int) -> list[int]:
    """Uneven shards, interleaved like a sampler; rank 1 is padded with items of rank 0 (as DistributedSampler)."""
    order = torch.randperm(N, generator=torch.Generator().manual_seed(5)).tolist()
    return order[:83] if rank == 0 else order[83:] + order[:7]


def compute_quietly(metrics: EmbeddingMetrics) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: v for k, v in metrics.compute().items() if "/" in k}


def worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        metrics = EmbeddingMetrics(**KW)
        feed(metrics, make_data(), shard(rank), batch_size=16 + 9 * rank)
        states: list[Any] = [None] * world_size
        dist.all_gather_object(states, metrics.get_state())
        metrics.merge_state([state for other, state in enumerate(states) if other != rank])
        result = {"metrics": compute_quietly(metrics), "summary": metrics.summary}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()  # leave together: a process tearing its gloo pairs down early can abort the other (SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = EmbeddingMetrics(**KW)
    feed(single, make_data(), list(range(N)), batch_size=50)
    expected = compute_quietly(single)
    for rank in (0, 1):
        result = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert result["summary"]["n_duplicates_dropped"] == 7
        assert result["summary"]["n_items"] == N
        got = result["metrics"]
        assert got.keys() == expected.keys()
        for key, value in expected.items():  # to the last digit: the same items, in the same order
            assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), key
