"""omlcore_torch under a real 2-process gloo group (torch.multiprocessing): exactly the one-process results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from .test_torch_fit import timeless

SCRIPT = Path(__file__).with_name("torch_ddp_script.py")


@pytest.fixture(scope="module")
def results(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("torch_ddp")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(toy_root), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return {name: torch.load(out / f"{name}.pt", weights_only=False) for name in ("one", "rank0", "rank1")}


def test_inference_gathers_exactly_the_one_process_embeddings(results: dict[str, dict[str, Any]]) -> None:
    one = results["one"]["inference"]
    assert one.shape == (24, 16)
    for rank in ("rank0", "rank1"):
        assert results[rank]["world_size"] == 2
        assert torch.equal(results[rank]["inference"], one)  # bitwise: same batches, dataset order, no padding


def test_merged_metrics_equal_the_one_process_metrics(results: dict[str, dict[str, Any]]) -> None:
    one = results["one"]["metrics"]
    assert {"OVERALL", "cold", "warm", "OVERALL/cmc/1", "OVERALL/map/3", "OVERALL/precision_at_1"} <= set(one)
    assert 0 < one["OVERALL/cmc/1"] < 1  # a non-trivial value
    for rank in ("rank0", "rank1"):
        assert results[rank]["metrics"] == one
        assert results[rank]["stats"] == results["one"]["stats"]  # sum, cat (in dataset order), max, min
    assert results["one"]["stats"]["count"] == 24


def test_all_gather_with_padding_for_uneven_sizes(results: dict[str, dict[str, Any]]) -> None:
    for rank in ("rank0", "rank1"):
        gathered = results[rank]["gathered"]
        assert [g.shape for g in gathered] == [(1, 2), (4, 2)]
        assert torch.equal(gathered[1][:, 0], torch.arange(4).float())
        assert [float(s) for s in results[rank]["scalars"]] == [0.5, 1.5]
        assert all(s.dim() == 0 for s in results[rank]["scalars"])
        states = results[rank]["states"]
        assert [s["x"].shape for s in states] == [(1, 3), (2, 3)] and states[1]["x"].dtype == torch.bool
        assert states[1]["x"].all() and not states[0]["x"].any()
        assert [s["empty"].shape for s in states] == [(0,), (0,)]


def test_fit_under_ddp_shards_the_batches_and_keeps_the_ranks_in_step(results: dict[str, dict[str, Any]]) -> None:
    one, rank0, rank1 = results["one"], results["rank0"], results["rank1"]
    assert torch.equal(rank0["trained"], rank1["trained"])  # DDP averaged the gradients
    assert torch.equal(rank0["buffers"], rank1["buffers"])  # and the BatchNorm statistics are rank 0's on both
    assert not torch.equal(rank0["trained"], one["trained"])  # two ranks' batches per step, not one
    assert len(rank0["seen"]) == len(rank1["seen"]) == 16 and len(one["seen"]) == 32
    assert not set(rank0["seen"]) & set(rank1["seen"])  # disjoint shares of the same epoch
    assert set(rank0["seen"]) | set(rank1["seen"]) == set(one["seen"])
    assert timeless(rank0["history"]) == timeless(rank1["history"])  # the loss averaged over ranks
