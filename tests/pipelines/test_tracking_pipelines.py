"""``logger`` and ``callbacks`` through ``omlcore train / validate`` with both runners, the real tools offline
(TensorBoard event files, an MLflow SQLite store, W&B offline), and 2-process runs that log once, from process 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from tracking import conftest as tracking
from tracking.test_loggers import read_tensorboard, wandb_log

from omlcore.config import ConfigError
from omlcore.pipelines import train, validate
from omlcore_lightning.runner import LightningRunner
from omlcore_torch.runner import TorchRunner

from .conftest import run_folders
from .test_distributed_pipelines import LIGHTNING_DDP, TORCHRUN, omlcore_command

needs, mlflow_store, wandb_offline = tracking.needs, tracking.mlflow_store, tracking.wandb_offline  # and fixtures

RUNNERS = {
    "torch": ("runner.args={epochs: 2, progress: false, log_every_n_steps: 1}",),
    "lightning": (
        "runner.name=lightning",
        "runner.args={epochs: 2, accelerator: cpu, progress: false, log_every_n_steps: 1}",
    ),
}


def loggers(*specs: dict[str, Any]) -> str:
    return "logger=" + yaml.safe_dump(list(specs), default_flow_style=True).strip()


@pytest.mark.parametrize("runner", ["torch", "lightning"])
def test_train_logs_to_tensorboard_mlflow_wandb_and_csv(
    tiny_config: Path, runner: str, mlflow_store: dict[str, str], wandb_offline: None
) -> None:
    needs("tensorboard", *(["lightning"] if runner == "lightning" else []))
    store = {**mlflow_store, "experiment_name": f"pipeline-{runner}"}
    result = train(
        tiny_config,
        [
            *RUNNERS[runner],
            loggers({"name": "csv"}, {"name": "tensorboard"}, {"name": "mlflow", "args": store}, {"name": "wandb"}),
            "callbacks=[{name: lr_monitor}]",
        ],
    )
    run, history = result.run_dir, result.history
    cmc = [result.untrained["OVERALL/cmc/1"], *(record["OVERALL/cmc/1"] for record in history)]

    events = read_tensorboard(run / "tensorboard")
    tags = events.Tags()  # type: ignore[attr-defined]
    assert {"train/loss", "train/loss_epoch", "lr-SGD", "OVERALL/map/2"} <= set(tags["scalars"])
    assert [e.value for e in events.Scalars("OVERALL/cmc/1")] == pytest.approx(cmc)  # type: ignore[attr-defined]
    steps = [e.step for e in events.Scalars("train/loss")]  # type: ignore[attr-defined]
    assert steps == list(range(6))  # 2 epochs of 3 steps, each once, at its 0-based index
    assert {"worst_OVERALL_cmc_1", "worst_OVERALL_map_2"} <= set(tags["images"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # type: ignore[attr-defined]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store["tracking_uri"])
    [found] = client.search_runs([client.get_experiment_by_name(store["experiment_name"]).experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == run.name
    assert found.data.params["loss.args.margin"] == "0.2" and found.data.params["runner.name"] == runner
    logged = sorted(client.get_metric_history(found.info.run_id, "OVERALL/cmc/1"), key=lambda m: m.step)
    assert [m.value for m in logged] == pytest.approx(cmc)
    artifacts = {a.path for d in ("retrieval", "checkpoints") for a in client.list_artifacts(found.info.run_id, d)}
    assert {"retrieval/worst_OVERALL_cmc_1.png", "checkpoints/best.pt"} <= artifacts

    [wandb_run] = (run / "wandb").glob("offline-run-*")
    assert b"OVERALL/cmc/1" in wandb_log(next(wandb_run.glob("run-*.wandb")), "worst_OVERALL_cmc_1")
    rows = pd.read_csv(run / "logs" / "metrics.csv")
    assert rows["OVERALL/cmc/1"].dropna().tolist() == pytest.approx(cmc)


def test_validate_logs_its_metrics_and_grids(tiny_config: Path, mlflow_store: dict[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    store = {**mlflow_store, "experiment_name": "validate"}
    result = validate(tiny_config, [loggers({"name": "mlflow", "args": store})])
    client = MlflowClient(mlflow_store["tracking_uri"])
    [found] = client.search_runs([client.get_experiment_by_name("validate").experiment_id])
    assert found.data.metrics == pytest.approx(result.metrics)
    assert "retrieval/worst_OVERALL_cmc_1.png" in {
        a.path for a in client.list_artifacts(found.info.run_id, "retrieval")
    }
    assert found.data.params["extractor.name"] == "small_cnn"


def test_a_logger_or_callback_that_cannot_be_used_stops_before_the_run(tiny_config: Path) -> None:
    from omlcore.plugins import get_registry

    for name in ("neptune", "comet", "clearml"):
        if not get_registry().get("logger", name).available:  # its package is missing: the pip command, no run
            with pytest.raises(ConfigError, match=rf'logger\[0\]\.name: .*pip install "omlcore\[{name}\]"'):
                train(tiny_config, [loggers({"name": name})])
    lightning_callback = "callbacks=[{name: lightning.EarlyStopping, args: {monitor: loss}}]"
    expected = (
        r"callbacks: the torch runner takes omlcore's callbacks .* not EarlyStopping"
        if tracking.is_available("lightning")
        else r'pip install "omlcore\[lightning\]"'
    )
    with pytest.raises(ConfigError, match=expected):
        train(tiny_config, [lightning_callback])
    with pytest.raises(ConfigError, match=r"callbacks\[0\]\.args\.patiense: .*Did you mean: patience"):
        train(tiny_config, ["callbacks=[{name: early_stopping, args: {patiense: 2}}]"])
    assert run_folders(tiny_config) == []


def _extractor_weights(runner: str, path: Path) -> dict[str, torch.Tensor]:
    loaded = torch.load(path, map_location="cpu", weights_only=path.suffix == ".pt")
    weights = (TorchRunner if runner == "torch" else LightningRunner).extractor_weights(None, loaded)  # type: ignore[arg-type]
    assert weights is not None
    return dict(weights)


@pytest.mark.parametrize("runner", ["torch", "lightning"])
def test_freeze_schedule_early_stopping_and_top_k_in_both_runners(tiny_config: Path, runner: str) -> None:
    if runner == "lightning":
        pytest.importorskip("lightning")
    model = (
        "extractor={name: extractor_with_mlp, args: "
        "{extractor: {name: small_cnn, args: {feat_dim: 8, widths: [4, 8]}}, mlp_features: [8]}}"
    )
    common = [*RUNNERS[runner], model, "validate_untrained=false"]
    initial = train(tiny_config, [*common, "runner.args.epochs=0", "run_name=initial"]).run_dir
    start = torch.load(initial / "checkpoints" / "extractor.pt", weights_only=True)
    callbacks = (
        "callbacks=[{name: freeze_backbone, args: {epochs: 1}}, "
        "{name: early_stopping, args: {monitor: OVERALL/cmc/1, patience: 1, min_delta: 1.0}}, "
        "{name: top_k_checkpoints, args: {k: 2}}]"
    )
    result = train(tiny_config, [*common, "runner.args.epochs=4", callbacks])
    assert [record["epoch"] for record in result.history] == [0, 1]  # an improvement of 1.0 never comes
    suffix = ".pt" if runner == "torch" else ".ckpt"
    top_k = sorted((result.run_dir / "checkpoints" / "top_k").iterdir())
    assert [p.name for p in top_k] == [f"epoch=000{suffix}", f"epoch=001{suffix}"]
    frozen, free = (_extractor_weights(runner, path) for path in top_k)
    start = {k: v for k, v in start.items() if k.endswith(("weight", "bias"))}  # BatchNorm statistics still move
    for key, value in start.items():
        if key.startswith("extractor."):  # the backbone: untouched in epoch 0, trained in epoch 1
            assert torch.equal(frozen[key], value), key
        elif key.endswith("weight"):  # the projection trains from the start
            assert not torch.equal(frozen[key], value), key
    assert any(not torch.equal(free[k], frozen[k]) for k in start if k.startswith("extractor.") and "weight" in k)


@pytest.mark.parametrize("how", ["torchrun", "lightning ddp"])
def test_two_processes_log_once_from_process_0(tiny_config: Path, how: str) -> None:
    needs("tensorboard", *(["lightning"] if how == "lightning ddp" else []))
    overrides, launcher = (LIGHTNING_DDP, ()) if how == "lightning ddp" else (("runner.args.epochs=2",), TORCHRUN)
    logged = loggers({"name": "csv"}, {"name": "tensorboard"})
    done = omlcore_command("train", str(tiny_config), *overrides, logged, launcher=launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr.lower().replace("userwarning", ""), done.stderr[-3000:]
    [run] = run_folders(tiny_config)
    history = json.loads((run / "metrics.json").read_text())
    untrained = json.loads((run / "validation.json").read_text())["untrained"]
    cmc = [untrained["OVERALL/cmc/1"], *(record["OVERALL/cmc/1"] for record in history)]
    events = read_tensorboard(run / "tensorboard")
    assert [e.value for e in events.Scalars("OVERALL/cmc/1")] == pytest.approx(cmc)  # type: ignore[attr-defined]
    assert pd.read_csv(run / "logs" / "metrics.csv")["OVERALL/cmc/1"].dropna().tolist() == pytest.approx(cmc)


def test_library_is_quiet_and_the_cli_prints_per_verbosity(
    tiny_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omlcore.cli import main

    train(tiny_config, ["runner.args.epochs=1", "logger=null"])
    assert capsys.readouterr().out == ""  # a library: messages go to the `omlcore` loggers, shown by no one here
    assert main(["train", str(tiny_config), "runner.args.epochs=1", "--quiet"]) == 0
    assert "Validation of the untrained model" not in capsys.readouterr().out
    assert main(["train", str(tiny_config), "runner.args.epochs=1"]) == 0
    assert "Validation of the untrained model" in capsys.readouterr().out


def test_the_cli_shows_a_warning_when_it_happens(tiny_config: Path) -> None:
    """A logger that cannot start warns at once: the warning comes before the epochs, not at the end of the run."""
    blocker = tiny_config.parent / "a-file"
    blocker.write_text("")
    command = [
        sys.executable,
        "-m",
        "omlcore",
        "train",
        str(tiny_config),
        loggers({"name": "csv", "args": {"save_dir": str(blocker)}}),
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    lines = done.stdout.splitlines()
    warned = next(
        i for i, line in enumerate(lines) if line.startswith("warning: logger[0]: the logger 'csv' could not start")
    )
    assert warned < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2"))
