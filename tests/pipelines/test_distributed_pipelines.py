"""The pipelines under Lightning's ``ddp`` strategy on 2 CPU processes: one run folder, written by process 0 only.

Lightning's launcher starts the second process by running the same command again, so the pipelines run in both
and only process 0 may create the folder, print and write (:func:`omlcore.pipelines.common.is_primary_process`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omlcore.pipelines import validate

from .conftest import run_folders

pytest.importorskip("lightning")

DDP = "runner.args={epochs: 2, accelerator: cpu, devices: 2, strategy: ddp, progress: false, log_every_n_steps: 1}"


def omlcore_command(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m omlcore ...`` in a fresh process: a real command line, which the launcher can run again."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMLCORE_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "omlcore", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_train_validate_predict_with_two_ddp_processes(tiny_config: Path) -> None:
    train = omlcore_command("train", str(tiny_config), "runner.name=lightning", DDP)
    assert train.returncode == 0, train.stderr[-3000:]
    [run] = run_folders(tiny_config)  # not one per process
    assert train.stdout.count("Validation of the untrained model") == 1  # printed by one process
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.ckpt", "extractor.pt", "best.pt"}
    history = json.loads((run / "metrics.json").read_text())
    assert [record["epoch"] for record in history] == [0, 1]
    validation = json.loads((run / "validation.json").read_text())
    # the evaluation in 2 processes equals one process evaluating the saved weights
    single = validate(tiny_config, [f"checkpoint={run}", "run_name=single"])
    assert validation["trained"] == pytest.approx(single.metrics, abs=1e-6)
    assert validation["trained"] == pytest.approx({k: history[-1][k] for k in single.metrics}, abs=1e-6)

    checked = omlcore_command("validate", str(tiny_config), "runner.name=lightning", DDP, f"checkpoint={run}")
    assert checked.returncode == 0, checked.stderr[-3000:]
    [validated] = [p for p in run_folders(tiny_config) if p.name.startswith("validate-")]
    assert json.loads((validated / "metrics.json").read_text())["flat"] == pytest.approx(single.metrics, abs=1e-6)

    predicted = omlcore_command("predict", str(tiny_config), "runner.name=lightning", DDP, f"checkpoint={run}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    [folder] = [p for p in run_folders(tiny_config) if p.name.startswith("predict-")]
    assert {"embeddings.npy", "items.csv", "neighbours.json", "neighbours.csv"} <= {p.name for p in folder.iterdir()}
