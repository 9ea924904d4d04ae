"""Experiment loggers (kind ``logger``) on each tool's own client library: CSV, TensorBoard, MLflow, W&B, Neptune,
Comet and ClearML.

Each implements :class:`omlcore.tracking.ExperimentLogger` (hyperparameters, scalars at a global step, images,
artifacts, finalize). The pipelines build them in the primary process once the run folder exists, passing it as
``run_dir``; each writes beside it by default. Their client libraries are imported when a logger is built; the
registry lists a logger whose package is missing as unavailable, with the ``pip install "omlcore[...]"`` that fixes
it, and a config that names it fails before the run starts.

The Lightning runner hands Lightning's own loggers, attached to the same runs, to its ``Trainer``
(:mod:`omlcore_lightning.tracking`).
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from omlcore.utils.optional import require

__all__ = [
    "CSVLogger",
    "ClearMLLogger",
    "CometLogger",
    "MLflowLogger",
    "NeptuneLogger",
    "TensorBoardLogger",
    "WandbLogger",
]


def _slug(key: str) -> str:
    """A file name for a metric or image key (``OVERALL/cmc/1`` -> ``OVERALL_cmc_1``)."""
    return re.sub(r"[^A-Za-z0-9.@=-]+", "_", key).strip("_")


class CSVLogger:
    """``<run>/logs/metrics.csv`` (a row per logging call: ``step``, then every key seen) and ``hparams.yaml``: the
    layout of Lightning's ``CSVLogger``, written without any tool. A resumed run's rows are kept and appended to.

    Args:
        run_dir: the run folder (passed by the pipeline).
        save_dir: the folder to write ``name/`` into (default: the run folder).
        name: the sub-folder.
    """

    display_name = "csv"

    def __init__(self, run_dir: str | os.PathLike[str], save_dir: str | None = None, name: str = "logs") -> None:
        self.folder = Path(save_dir if save_dir is not None else run_dir) / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metrics_file = self.folder / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.metrics_file.is_file():
            with self.metrics_file.open(newline="", encoding="utf-8") as existing:
                self.rows = [dict(row) for row in csv.DictReader(existing)]
        self._saved = len(self.rows)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        (self.folder / "hparams.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False), encoding="utf-8")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.rows.append({"step": step, **metrics})

    def save(self) -> None:
        """Rewrite ``metrics.csv`` (atomically) when rows were added since the last save."""
        if len(self.rows) == self._saved:
            return
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        temporary = self.metrics_file.with_name(f".{self.metrics_file.name}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temporary, self.metrics_file)
        self._saved = len(self.rows)

    def finalize(self, status: str) -> None:
        self.save()


class TensorBoardLogger:
    """TensorBoard event files, written by ``torch.utils.tensorboard.SummaryWriter`` (``pip install
    "omlcore[tensorboard]"``): scalars, the config as hyperparameters (HParams tab) and as a text table, images.

    Args:
        run_dir: the run folder (passed by the pipeline).
        save_dir: a folder shared by runs (``tensorboard --logdir <save_dir>`` compares them); each run writes into
            ``<save_dir>/<run folder name>``. Default: ``<run>/<name>``.
        name: the sub-folder of the run folder when ``save_dir`` is not set.
        flush_secs: how often the writer's thread flushes to disk.
    """

    display_name = "tensorboard"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        save_dir: str | None = None,
        name: str = "tensorboard",
        flush_secs: int = 30,
    ) -> None:
        tensorboard = require("torch.utils.tensorboard", "tensorboard", what="logger 'tensorboard'")
        run = Path(run_dir)
        self.log_dir = Path(save_dir) / run.name if save_dir is not None else run / name
        self.writer = tensorboard.SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.writer.add_hparams(dict(params), {}, run_name=".")  # "." : into this run's folder, not a sub-folder
        table = "\n".join(["| key | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in params.items())])
        self.writer.add_text("config", table, 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self.writer.add_image(key, image, step, dataformats="HWC")

    def save(self) -> None:
        self.writer.flush()

    def finalize(self, status: str) -> None:
        self.writer.close()


_MLFLOW_STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call (params: 100)
_MLFLOW_BUFFER = 100_000  # scalars kept for a retry while the store fails


class MLflowLogger:
    """An MLflow run, written with ``mlflow.tracking.MlflowClient`` (``pip install "omlcore[mlflow]"``): params,
    metrics, the retrieval grids under ``retrieval/`` and the best checkpoint under ``checkpoints/``.

    Scalars are buffered and written in batches after every epoch (one ``log_batch`` per 1000 values), so that a
    database store costs no time per step; a batch that fails stays buffered and is written with the next one.

    Args:
        run_dir: the run folder (passed by the pipeline); its name is the MLflow run's name by default.
        tracking_uri: the store or server (``sqlite:///mlflow.db``, ``http://...``); default: ``MLFLOW_TRACKING_URI``,
            else ``sqlite:///<output_dir>/mlflow.db`` with the artifacts in ``<output_dir>/mlartifacts``.
        experiment_name: created if it does not exist.
        run_name: default: the run folder's name.
        tags: run tags.
        artifact_location: where a new experiment keeps its artifacts (default: the store's, see ``tracking_uri``).
        log_checkpoints: upload the best checkpoint.
    """

    display_name = "mlflow"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        tracking_uri: str | None = None,
        experiment_name: str = "omlcore",
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        artifact_location: str | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        tracking = require("mlflow.tracking", "mlflow", what="logger 'mlflow'")
        run = Path(run_dir).resolve()
        if tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
            tracking_uri = f"sqlite:///{run.parent / 'mlflow.db'}"
            artifact_location = artifact_location or (run.parent / "mlartifacts").as_uri()
        self.tracking_uri: str = tracking_uri or tracking.get_tracking_uri()
        self.client = tracking.MlflowClient(self.tracking_uri)
        self.experiment_name = experiment_name
        self.experiment_id = self._experiment(experiment_name, artifact_location)
        run_tags = {"omlcore.run_dir": str(run), **(tags or {})}
        self.run_id: str = self.client.create_run(
            self.experiment_id, run_name=run_name or run.name, tags=run_tags
        ).info.run_id
        self.log_checkpoints = log_checkpoints
        self._metrics: list[Any] = []

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=artifact_location))
        except Exception:  # another process created it in the meantime
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(str(key), str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(entries), 100):
            self.client.log_batch(self.run_id, params=entries[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics += [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        if len(self._metrics) >= 10 * _MLFLOW_BATCH:
            self.save()

    def save(self) -> None:
        """Write the buffered scalars; what a failing store refuses stays buffered (up to 100,000 values)."""
        while self._metrics:
            batch = self._metrics[:_MLFLOW_BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception:
                del self._metrics[:-_MLFLOW_BUFFER]
                raise
            del self._metrics[: len(batch)]

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self.client.log_image(self.run_id, image, artifact_file=f"retrieval/{_slug(key)}.png")

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        if self.log_checkpoints:
            self.client.log_artifact(self.run_id, str(path), artifact_path="checkpoints")

    def finalize(self, status: str) -> None:
        try:
            self.save()
        finally:
            self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FINISHED"))


#: The step axis of every W&B chart, as Lightning's ``WandbLogger`` defines it.
WANDB_STEP = "trainer/global_step"


class WandbLogger:
    """A Weights & Biases run, written with ``wandb`` (``pip install "omlcore[wandb]"``): the config, scalars against
    ``trainer/global_step`` (as Lightning's ``WandbLogger``), the retrieval grids as images and the best checkpoint as
    a model artifact.

    Args:
        run_dir: the run folder (passed by the pipeline); its name is the W&B run's name by default, and W&B's own
            ``wandb/`` folder is written into it unless ``save_dir`` is set.
        project, entity, name, tags, group: as ``wandb.init``.
        mode: ``online``, ``offline`` (sync later with ``wandb sync``) or ``disabled``; default: ``WANDB_MODE``, else
            W&B's own default.
        save_dir: the folder of W&B's local files.
        log_checkpoints: upload the best checkpoint as an artifact.
    """

    display_name = "wandb"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        project: str = "omlcore",
        entity: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        group: str | None = None,
        mode: str | None = None,
        save_dir: str | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        self.wandb = require("wandb", "wandb", what="logger 'wandb'")
        folder = Path(save_dir if save_dir is not None else run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=project,
            entity=entity,
            name=name or Path(run_dir).name,
            tags=tags,
            group=group,
            mode=mode,
            dir=str(folder),
        )
        self.run.define_metric(WANDB_STEP)
        self.run.define_metric("*", step_metric=WANDB_STEP, step_sync=True)
        self.log_checkpoints = log_checkpoints

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log({**metrics, WANDB_STEP: step or 0})

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self.run.log({key: self.wandb.Image(image), WANDB_STEP: step or 0})

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        if not self.log_checkpoints:
            return
        artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["best"])

    def finalize(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "success" else 1)


class NeptuneLogger:
    """A Neptune run, written with ``neptune`` (``pip install "omlcore[neptune]"``): ``parameters``, scalar series,
    image series under ``retrieval/`` and the best checkpoint under ``checkpoints/best``.

    Args:
        run_dir: the run folder (passed by the pipeline); its name is the run's name by default.
        project, api_token: default: ``NEPTUNE_PROJECT`` / ``NEPTUNE_API_TOKEN``.
        name, tags: of the run. mode: ``async``, ``sync``, ``offline``, ``debug`` ... (``neptune.init_run``).
        log_checkpoints: upload the best checkpoint.
    """

    display_name = "neptune"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        project: str | None = None,
        api_token: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        mode: str | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        neptune = require("neptune", "neptune", what="logger 'neptune'")
        options = {"mode": mode} if mode is not None else {}
        self.run = neptune.init_run(
            project=project, api_token=api_token, name=name or Path(run_dir).name, tags=tags or [], **options
        )
        self.log_checkpoints = log_checkpoints

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.run["parameters"] = {key.replace(".", "/"): value for key, value in params.items()}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.run[key].append(value, step=step)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        from neptune.types import File

        self.run[f"retrieval/{key}"].append(File.as_image(image.astype(np.float32) / 255.0), step=step)

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        if self.log_checkpoints:
            self.run["checkpoints/best"].upload(str(path))

    def finalize(self, status: str) -> None:
        if status != "success":
            self.run["sys/failed"] = True
        self.run.stop()


class CometLogger:
    """A Comet experiment, written with ``comet_ml`` (``pip install "omlcore[comet]"``): parameters, metrics, images
    and the best checkpoint as a model.

    Args:
        run_dir: the run folder (passed by the pipeline); its name is the experiment's name by default.
        project, workspace, api_key: default: Comet's configuration (``COMET_API_KEY`` ...).
        name: of the experiment. offline_directory: write an offline archive there instead (upload it later).
        log_checkpoints: upload the best checkpoint.
    """

    display_name = "comet"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        project: str | None = None,
        workspace: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        offline_directory: str | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        comet_ml = require("comet_ml", "comet", what="logger 'comet'")
        common = {"project_name": project, "workspace": workspace, "auto_output_logging": False}
        if offline_directory is not None:
            self.experiment = comet_ml.OfflineExperiment(offline_directory=offline_directory, **common)
        else:
            self.experiment = comet_ml.Experiment(api_key=api_key, **common)
        self.experiment.set_name(name or Path(run_dir).name)
        self.log_checkpoints = log_checkpoints

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.experiment.log_parameters(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.experiment.log_metrics(dict(metrics), step=step)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        from PIL import Image

        self.experiment.log_image(Image.fromarray(image), name=key, step=step)  # (an array would be rescaled)

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        if self.log_checkpoints:
            self.experiment.log_model("best", str(path))

    def finalize(self, status: str) -> None:
        self.experiment.end()


class ClearMLLogger:
    """A ClearML task, written with ``clearml`` (``pip install "omlcore[clearml]"``): the config as connected
    parameters, scalars (title = the key's first part), images, the best checkpoint as an artifact.

    Args:
        run_dir: the run folder (passed by the pipeline); its name is the task's name by default.
        project: the ClearML project. name: of the task. tags: of the task.
        log_checkpoints: upload the best checkpoint.
    """

    display_name = "clearml"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        project: str = "omlcore",
        name: str | None = None,
        tags: Sequence[str] | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        clearml = require("clearml", "clearml", what="logger 'clearml'")
        self.task = clearml.Task.init(
            project_name=project,
            task_name=name or Path(run_dir).name,
            tags=list(tags or []),
            auto_connect_frameworks=False,
            auto_connect_arg_parser=False,
            reuse_last_task_id=False,
        )
        self.logger = self.task.get_logger()
        self.log_checkpoints = log_checkpoints

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.task.connect(dict(params), name="config")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            title, _, series = key.partition("/")
            self.logger.report_scalar(title, series or title, value, iteration=step or 0)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self.logger.report_image("retrieval", key, iteration=step or 0, image=image)

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        if self.log_checkpoints:
            self.task.upload_artifact("best", artifact_object=str(path))

    def finalize(self, status: str) -> None:
        if status != "success":
            self.task.mark_failed(status_reason=status)
        self.task.close()
