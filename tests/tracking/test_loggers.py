"""Each logger on its own tool, offline, read back with the tool's own reader: CSV, TensorBoard (EventAccumulator),
MLflow (a SQLite store and its client), W&B (offline mode, the run folder)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from omlcore_torch.loggers import CSVLogger, MLflowLogger, TensorBoardLogger, WandbLogger

from .conftest import needs

PARAMS = {"seed": 3, "loss.name": "triplet_with_miner", "loss.args.margin": 0.2, "metric.args.cmc_top_k": "[1, 2]"}
GRID = np.tile(np.arange(30, dtype=np.uint8)[None, :, None], (20, 1, 3))  # a 20 x 30 RGB image


def write_a_run(logger: object, checkpoint: Path | None = None) -> None:
    """What a pipeline writes: the config, step scalars, two epochs' metrics, a grid, the best checkpoint."""
    logger.log_hyperparams(PARAMS)  # type: ignore[attr-defined]
    for step in (1, 2, 3, 4):
        logger.log_metrics({"train/loss": 1.0 / step}, step)  # type: ignore[attr-defined]
    logger.log_metrics({"epoch": 0, "train/loss_epoch": 0.75, "OVERALL/cmc/1": 0.5}, 2)  # type: ignore[attr-defined]
    logger.log_metrics({"epoch": 1, "train/loss_epoch": 0.3, "OVERALL/cmc/1": 0.75}, 4)  # type: ignore[attr-defined]
    if hasattr(logger, "save"):
        logger.save()
    if hasattr(logger, "log_image"):
        logger.log_image("worst_OVERALL_cmc_1", GRID, 2)
    if checkpoint is not None and hasattr(logger, "log_artifact"):
        logger.log_artifact(checkpoint)
    logger.finalize("success")  # type: ignore[attr-defined]


def test_csv_writes_lightnings_layout_and_a_resumed_run_appends(tmp_path: Path) -> None:
    write_a_run(CSVLogger(tmp_path))
    with (tmp_path / "logs" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["step", "train/loss", "epoch", "train/loss_epoch", "OVERALL/cmc/1"]
    assert [row["step"] for row in rows] == ["1", "2", "3", "4", "2", "4"]
    assert rows[-1]["OVERALL/cmc/1"] == "0.75" and rows[0]["OVERALL/cmc/1"] == ""
    assert yaml.safe_load((tmp_path / "logs" / "hparams.yaml").read_text()) == PARAMS
    resumed = CSVLogger(tmp_path)
    resumed.log_metrics({"train/loss": 0.1}, 5)
    resumed.finalize("success")
    with (tmp_path / "logs" / "metrics.csv").open() as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["1", "2", "3", "4", "2", "4", "5"]


def read_tensorboard(folder: Path) -> object:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_event_files_read_back_with_tensorboard(tmp_path: Path) -> None:
    needs("tensorboard")
    logger = TensorBoardLogger(tmp_path)
    write_a_run(logger)
    events = read_tensorboard(tmp_path / "tensorboard")
    tags = events.Tags()  # type: ignore[attr-defined]
    assert {"train/loss", "epoch", "train/loss_epoch", "OVERALL/cmc/1"} <= set(tags["scalars"])
    loss = events.Scalars("train/loss")  # type: ignore[attr-defined]
    assert [(e.step, round(e.value, 6)) for e in loss] == [(1, 1.0), (2, 0.5), (3, round(1 / 3, 6)), (4, 0.25)]
    assert [(e.step, e.value) for e in events.Scalars("OVERALL/cmc/1")] == [(2, 0.5), (4, 0.75)]  # type: ignore[attr-defined]
    [image] = events.Images("worst_OVERALL_cmc_1")  # type: ignore[attr-defined]
    assert (image.step, image.width, image.height) == (2, 30, 20)
    assert "config/text_summary" in tags["tensors"]
    plugins = events.PluginTagToContent("hparams")  # type: ignore[attr-defined]
    assert "_hparams_/session_start_info" in plugins
    shared = TensorBoardLogger(tmp_path / "run-2", save_dir=str(tmp_path / "shared"))
    assert shared.log_dir == tmp_path / "shared" / "run-2"
    shared.finalize("success")


def test_mlflow_run_read_back_with_its_client(tmp_path: Path, mlflow_store: dict[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    logger = MLflowLogger(tmp_path / "train-tiny-1", experiment_name="loggers", **mlflow_store)
    write_a_run(logger, checkpoint)
    client = MlflowClient(mlflow_store["tracking_uri"])
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-tiny-1"
    assert run.data.params == {key: str(value) for key, value in PARAMS.items()}
    assert run.data.tags["omlcore.run_dir"] == str((tmp_path / "train-tiny-1").resolve())
    history = client.get_metric_history(logger.run_id, "OVERALL/cmc/1")
    assert sorted((m.step, m.value) for m in history) == [(2, 0.5), (4, 0.75)]
    assert sorted(m.step for m in client.get_metric_history(logger.run_id, "train/loss")) == [1, 2, 3, 4]
    artifacts = {
        a.path for folder in ("retrieval", "checkpoints") for a in client.list_artifacts(logger.run_id, folder)
    }
    assert artifacts == {"retrieval/worst_OVERALL_cmc_1.png", "checkpoints/best.pt"}
    saved = Path(client.download_artifacts(logger.run_id, "checkpoints/best.pt", str(tmp_path / "down")))
    assert saved.read_bytes() == b"weights"
    failed = MLflowLogger(tmp_path / "train-tiny-2", experiment_name="loggers", **mlflow_store)
    failed.finalize("failed")
    assert client.get_run(failed.run_id).info.status == "FAILED"


def wandb_log(path: Path, last: str, seconds: float = 60.0) -> bytes:
    """W&B's transaction log (what ``wandb sync`` uploads later) once ``last`` is in it: W&B's service process, which
    outlives ours, may still be writing it when ``finish`` returns."""
    deadline = time.monotonic() + seconds
    while last.encode() not in (log := path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return log


def test_wandb_offline_run_folder(tmp_path: Path, wandb_offline: None) -> None:
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    logger = WandbLogger(tmp_path / "train-tiny-1", project="omlcore-tests")
    run = logger.run
    finalize, logger.finalize = logger.finalize, lambda status: None  # type: ignore[method-assign]
    write_a_run(logger, checkpoint)
    assert run.name == "train-tiny-1" and run.config["loss.args.margin"] == 0.2
    assert run.summary["OVERALL/cmc/1"] == 0.75 and run.summary["trainer/global_step"] == 2
    finalize("success")
    [run_folder] = (tmp_path / "train-tiny-1" / "wandb").glob(f"offline-run-*-{run.id}")
    log = wandb_log(run_folder / f"run-{run.id}.wandb", f"model-{run.id}")
    for written in ("OVERALL/cmc/1", "train/loss_epoch", "trainer/global_step", "loss.args.margin", f"model-{run.id}"):
        assert written.encode() in log, written
    assert list((run_folder / "files" / "media" / "images").glob("worst_OVERALL_cmc_1_*.png"))


@pytest.mark.parametrize("name", ["neptune", "comet", "clearml"])
def test_a_logger_whose_package_is_missing_names_the_pip_command(name: str) -> None:
    from omlcore.config import ConfigError, check_component
    from omlcore.plugins import get_registry

    entry = get_registry().get("logger", name)
    if entry.available:
        pytest.skip(f"{name}'s package is installed here")
    with pytest.raises(
        ConfigError, match=rf'logger\.name: logger \'{name}\' .*needs .*pip install "omlcore\[{name}\]"'
    ):
        check_component("logger", {"name": name}, "logger")
