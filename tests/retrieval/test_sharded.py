"""Galleries sharded over 2 real gloo processes give the one-process results bit for bit: the kNN itself, an
evaluation (EmbeddingMetrics with ShardedKNN) and Index.search(sharded=True)."""

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
from torch import Tensor

from omlcore.index import Index
from omlcore.metrics import EmbeddingMetrics
from omlcore.retrieval import ExactKNN, ShardedKNN
from omlcore.retrieval.sharded import merge_across_ranks, shard_bounds

N, CHUNK, BLOCK_ROWS = 300, 32, 40
KW: dict[str, Any] = {"cmc_top_k": (1, 5), "precision_top_k": (5,), "map_top_k": (5,), "fmr_vals": (0.05,)}


def make_data() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(21)
    items = torch.randn(N, 12, generator=generator)
    items[100:130] = items[0]  # exact duplicates: ties across shards, broken by the smaller gallery index
    return {
        "items": items,
        "labels": torch.randint(0, 50, (N,), generator=generator),
        "sequences": torch.randint(-1, 40, (N,), generator=generator),
        "queries": torch.randn(70, 12, generator=generator),
    }


def knn_cases(data: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor, int, list[tuple[Tensor, Tensor]], str]]:
    items, ids, sequences = data["items"], torch.arange(N), data["sequences"]
    return {
        "self-l2": (items, items, 7, [(ids, ids), (sequences, sequences)], "l2"),
        "self-cosine": (items, items, 4, [(ids, ids)], "cosine"),
        "sets-l2": (data["queries"], items, 9, [], "l2"),
        "sets-k-beyond-gallery": (data["queries"], items[:20], 25, [], "l2"),
    }


def compute_quietly(metrics: EmbeddingMetrics) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: v for k, v in metrics.compute().items() if "/" in k}


def evaluate(data: dict[str, Tensor], rows: Tensor, backend: Any) -> EmbeddingMetrics:
    metrics = EmbeddingMetrics(**KW, knn_backend=backend)
    metrics.update(
        {
            "embeddings": data["items"][rows],
            "labels": data["labels"][rows],
            "is_query": torch.ones(len(rows), dtype=torch.bool),
            "is_gallery": torch.ones(len(rows), dtype=torch.bool),
            "idx": rows,
        }
    )
    return metrics


def worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        data = make_data()
        found = {}
        for name, (queries, gallery, k, exclude, metric) in knn_cases(data).items():
            found[name] = ShardedKNN(metric, chunk_size=CHUNK).search(queries, gallery, k, exclude)  # type: ignore[arg-type]
        # an evaluation: each rank feeds half of the items, the states are gathered, the kNN is sharded
        metrics = evaluate(data, torch.arange(rank, N, world_size), ShardedKNN(chunk_size=CHUNK))
        states: list[Any] = [None] * world_size
        dist.all_gather_object(states, metrics.get_state())
        metrics.merge_state([state for other, state in enumerate(states) if other != rank])
        index = Index.load(Path(out_dir, "index"))
        searched = index.search(data["queries"], 6, sharded=True, block_rows=BLOCK_ROWS)
        found["index"] = (searched.distances, searched.retrieved_ids)
        torch.save(found, Path(out_dir, f"rank{rank}.pt"))
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(compute_quietly(metrics)))
        dist.barrier()  # leave together: a process tearing its gloo pairs down early can abort the other (SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    data = make_data()
    index = Index.build(data["items"], labels=data["labels"])
    index.save(tmp_path / "index")
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = {
        name: ExactKNN(metric, chunk_size=CHUNK, fast="off").search(queries, gallery, k, exclude)  # type: ignore[arg-type]
        for name, (queries, gallery, k, exclude, metric) in knn_cases(data).items()
    }
    single = index.search(data["queries"], 6, block_rows=BLOCK_ROWS)
    expected["index"] = (single.distances, single.retrieved_ids)
    metrics = compute_quietly(evaluate(data, torch.arange(N), ExactKNN(chunk_size=CHUNK, fast="off")))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, (distances, ids) in expected.items():
            assert torch.equal(got[name][1], ids), (rank, name)
            assert torch.equal(got[name][0].view(torch.int32), distances.view(torch.int32)), (rank, name)
        got_metrics = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got_metrics.keys() == metrics.keys()
        for key, value in metrics.items():
            assert got_metrics[key] == value or (math.isnan(got_metrics[key]) and math.isnan(value)), key


def test_shard_bounds_balance_the_work() -> None:
    assert shard_bounds([1] * 10, 2) == [0, 5, 10]
    assert shard_bounds(list(range(1, 11)), 2) == [0, 7, 10]  # a triangle: later columns hold more blocks
    assert shard_bounds([1], 3) == [0, 0, 1, 1]  # more ranks than pieces: some get none
    assert shard_bounds([], 2) == [0, 0, 0]


def test_merge_without_a_process_group_is_the_local_top_k() -> None:
    scores = torch.tensor([[3.0, 1.0, 1.0, float("inf")]])
    ids = torch.tensor([[5, 9, 2, -1]])
    merged_scores, merged_ids = merge_across_ranks(scores, ids, 3)
    assert merged_ids.tolist() == [[2, 9, 5]] and merged_scores.tolist() == [[1.0, 1.0, 3.0]]


def test_sharded_index_search_without_a_process_group_is_the_plain_search() -> None:
    generator = torch.Generator().manual_seed(2)
    index = Index.build(torch.randn(90, 4, generator=generator), backend="exact")
    queries = torch.randn(5, 4, generator=generator)
    plain, sharded = index.search(queries, 3, block_rows=16), index.search(queries, 3, block_rows=16, sharded=True)
    assert torch.equal(plain.retrieved_ids, sharded.retrieved_ids) and torch.equal(plain.distances, sharded.distances)
