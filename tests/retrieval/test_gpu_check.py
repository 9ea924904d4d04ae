"""benchmarks/gpu_check.py: on a machine without CUDA it says so and exits 0; its checks run here on the CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
CPU = torch.device("cpu")


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run its checks")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    completed = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "needs a CUDA device" in completed.stdout


def test_unknown_checks_are_refused() -> None:
    with pytest.raises(SystemExit):
        gpu_check.main(["--checks", "fit,teleport"])


def test_float64_verification_accepts_exact_ids_and_rejects_wrong_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    items = torch.randn(300, 8, generator=generator)
    queries = torch.arange(20)
    distances = torch.cdist(items[queries].double(), items.double())
    distances[torch.arange(20), queries] = float("inf")
    ids = distances.topk(5, dim=1, largest=False).indices
    assert gpu_check.verify_in_float64(items[queries], items, ids, queries)
    too_far = ids.clone()
    too_far[3, 4] = distances[3].topk(40, largest=False).indices[-1]  # the 40th neighbour instead of the 5th
    assert not gpu_check.verify_in_float64(items[queries], items, too_far, queries)
    itself = ids.clone()
    itself[0, 0] = queries[0]
    assert not gpu_check.verify_in_float64(items[queries], items, itself, queries)
    repeated = ids.clone()
    repeated[1, 1] = repeated[1, 0]
    assert not gpu_check.verify_in_float64(items[queries], items, repeated, queries)


def test_compare_metrics_names_the_differing_keys() -> None:
    expected = {"a/b": 0.5, "c": float("nan"), "d": 1.0}
    assert gpu_check.compare_metrics(dict(expected), expected) == []
    assert gpu_check.compare_metrics({"a/b": 0.5, "c": float("nan"), "d": 0.9}, expected) == ["d"]
    assert gpu_check.compare_metrics({"a/b": 0.5}, expected) == ["c", "d"]


def test_the_checks_run_on_the_cpu() -> None:
    assert gpu_check.check_knn(CPU, n=1500, dim=16, sample=64)["ok"]
    assert gpu_check.check_metrics(CPU, n=600, dim=16)["ok"]  # the CPU against itself
    fit = gpu_check.check_fit(CPU, n=64, size=32, batch=32, amp=False)  # bfloat16 convolutions are slow on CPUs
    assert fit["ok"] and fit["steps"] == 2
    assert gpu_check.check_inference(CPU, n=16, size=32, batch=8)["ok"]
