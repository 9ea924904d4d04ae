"""The pipelines on 2 CPU processes: Lightning's ``ddp`` strategy, and the torch runner under ``torchrun``.

Every process runs the pipeline (Lightning's launcher starts the second one by running the same command again;
``torchrun`` starts both), and only process 0 creates the run folder, prints and writes
(the runner's ``is_primary``): one folder, whose validation equals one process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omlcore.pipelines import validate
from omlcore_lightning.runner import LightningRunner
from omlcore_torch.runner import TorchRunner

from .conftest import run_folders

LIGHTNING_DDP = (
    "runner.name=lightning",
    "runner.args={epochs: 2, accelerator: cpu, devices: 2, strategy: ddp, progress: false, log_every_n_steps: 1}",
)
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")


def omlcore_command(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python [launcher] -m omlcore ...`` in a fresh process: a real command line, which a launcher can rerun."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMLCORE_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, *launcher, "-m", "omlcore", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.parametrize("how", ["lightning ddp", "torchrun"])
def test_train_validate_predict_with_two_processes(tiny_config: Path, how: str) -> None:
    if how == "lightning ddp":
        pytest.importorskip("lightning")
    overrides, launcher = (LIGHTNING_DDP, ()) if how == "lightning ddp" else (("runner.args.epochs=2",), TORCHRUN)
    train = omlcore_command("train", str(tiny_config), *overrides, launcher=launcher)
    assert train.returncode == 0, train.stderr[:3000] + "\n...\n" + train.stderr[-3000:]
    [run] = run_folders(tiny_config)  # not one per process
    assert train.stdout.count("Validation of the untrained model") == 1  # printed by one process
    resumable = "last.ckpt" if how == "lightning ddp" else "last.pt"
    assert {p.name for p in (run / "checkpoints").iterdir()} == {resumable, "extractor.pt", "best.pt"}
    history = json.loads((run / "metrics.json").read_text())
    assert [record["epoch"] for record in history] == [0, 1]
    validation = json.loads((run / "validation.json").read_text())
    # the evaluation in 2 processes equals one process evaluating the saved weights
    single = validate(tiny_config, [f"checkpoint={run}", "run_name=single"])
    assert validation["trained"] == pytest.approx(single.metrics, abs=1e-6)
    assert validation["trained"] == pytest.approx({k: history[-1][k] for k in single.metrics}, abs=1e-6)

    checked = omlcore_command("validate", str(tiny_config), *overrides, f"checkpoint={run}", launcher=launcher)
    assert checked.returncode == 0, checked.stderr[-3000:]
    [validated] = [p for p in run_folders(tiny_config) if p.name.startswith("validate-")]
    assert json.loads((validated / "metrics.json").read_text())["flat"] == pytest.approx(single.metrics, abs=1e-6)

    predicted = omlcore_command("predict", str(tiny_config), *overrides, f"checkpoint={run}", launcher=launcher)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    [folder] = [p for p in run_folders(tiny_config) if p.name.startswith("predict-")]
    assert {"embeddings.npy", "items.csv", "neighbours.json", "neighbours.csv"} <= {p.name for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("env", "primary"),
    [
        ({}, True),
        ({"RANK": "1"}, True),  # a stray RANK outside a distributed run
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, False),  # torchrun
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # Lightning's relaunched process
        ({"WORLD_SIZE": "4", "LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
    ],
)
def test_which_process_writes_under_lightning(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], primary: bool
) -> None:
    pytest.importorskip("lightning")
    _set_launcher_env(monkeypatch, env)
    assert LightningRunner(progress=False).is_primary() is primary


@pytest.mark.parametrize(
    ("env", "primary"),
    [
        ({}, True),
        ({"RANK": "1"}, True),  # a stray RANK outside a distributed run
        ({"WORLD_SIZE": "2", "RANK": "0"}, True),
        ({"WORLD_SIZE": "2", "RANK": "1"}, False),
    ],
)
def test_which_process_writes_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], primary: bool
) -> None:
    runner = TorchRunner(progress=False)  # built outside the launcher: it joins no process group
    _set_launcher_env(monkeypatch, env)
    assert runner.is_primary() is primary


def _set_launcher_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_a_checkpointing_metric_error_stops_every_torchrun_process(tiny_config: Path) -> None:
    stopped = omlcore_command(
        "train",
        str(tiny_config),
        "runner.args.epochs=2",
        "validate_untrained=false",  # the unknown name is found from the metric's declared names, in both processes
        "metric_for_checkpointing=OVERALL/cmc/7",
        launcher=TORCHRUN,
    )
    assert stopped.returncode != 0  # and it returned: no process waits for the other one
    assert "metric_for_checkpointing: the validation reports no metric 'OVERALL/cmc/7'" in stopped.stderr
