"""``omlcore train CONFIG``: train an extractor, validating after every epoch, in its own run folder.

The run folder gets ``config.yaml`` (resolved), ``log.txt``, ``metrics.csv`` / ``metrics.json`` (one record per
epoch, rewritten as each epoch ends), ``validation.json`` (the untrained and the trained model's metrics),
``checkpoints/`` (the runner's resumable checkpoint, ``extractor.pt``, the trained weights, and ``best.pt``, the
weights after the best epoch by ``metric_for_checkpointing``) and ``retrieval/`` (grids of the worst validation
queries). ``resume: <run folder>`` continues an interrupted run in its folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from omlcore.config import Config, ConfigError, accepts, build_component
from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.errors import DataValidationError, RunInterrupted
from omlcore.keys import SPLIT_COLUMN, SPLIT_VALIDATION
from omlcore.pipelines.common import (
    BEST_CHECKPOINT,
    CHECKPOINTS,
    EXTRACTOR_CHECKPOINT,
    ConfigSource,
    RunFolder,
    build_metric,
    dataset_csv,
    flat_scalars,
    format_table,
    load_extractor,
    prepare,
    seed_everything,
)
from omlcore.pipelines.resume import find_resume
from omlcore.pipelines.tracking import build_callbacks, finalizing, open_tracker
from omlcore.pipelines.visuals import save_visualisations, worst_query_grids
from omlcore.protocols import FitJob

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        history: one record per epoch (``epoch``, ``loss``, loss statistics, flat validation metrics).
        untrained, trained: the flat validation metrics before and after training (empty without validation
            rows; ``untrained`` also when it was skipped).
    """

    run_dir: Path
    history: list[dict[str, float]]
    untrained: dict[str, float]
    trained: dict[str, float]


def train(config: ConfigSource, overrides: Sequence[str] = ()) -> TrainResult:
    """Run the training pipeline of ``config`` (a YAML file, a shipped config name, a mapping or a Config).

    Everything is checked before the run folder is created or changed (the config, the resume target, the data,
    the model, the optimizer and scheduler arguments); see the module docstring for what the run writes.

    Raises:
        RunInterrupted: Ctrl-C during training (a ``KeyboardInterrupt``), after the last epoch's checkpoint.
    """
    config, runner = prepare(config, overrides, "train")
    source = str(config.source) if config.source else None
    resume = find_resume(config, runner)
    csv_path, root = dataset_csv(config)

    seed_everything(config["seed"])
    batch_size, num_workers = config["dataset.batch_size"], config["dataset.num_workers"]
    train_transform = build_component("transform", config["transforms_train"], "transforms_train", source=source)
    val_transform = build_component("transform", config["transforms_val"], "transforms_val", source=source)
    check = config["dataset.check_images"]
    train_set = ImageLabeledDataset(csv_path, root, train_transform, check_images=check)
    val_set = (
        ImageQueryGalleryDataset(csv_path, root, val_transform, check_images=check)
        if _has_validation_rows(csv_path)
        else None
    )
    sampler_args: dict[str, Any] = {}
    if accepts("sampler", config["sampler.name"], "label2category"):
        sampler_args["label2category"] = _label2category(train_set, config["sampler.name"], source)
    if accepts("sampler", config["sampler.name"], "seed") and "seed" not in (config["sampler"].get("args") or {}):
        sampler_args["seed"] = config["seed"]  # the config's seed draws the batches unless the sampler sets its own
    sampler = build_component(
        "sampler", config["sampler"], "sampler", train_set.get_labels(), source=source, **sampler_args
    )
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=num_workers)
    model = load_extractor(config, runner)
    if resume is not None:
        resume.check_fits(model, source)
    loss = build_component("loss", config["loss"], "loss", source=source)
    metric = build_metric(config, val_set) if val_set is not None else None
    job = FitJob(
        model=model,
        loss=loss,
        build_optimizer=_builder("optimizer", config["optimizer"], source),
        build_scheduler=_builder("scheduler", config["scheduler"], source) if config["scheduler"] else None,
        train_loader=loader,
        val_dataset=val_set,
        metric=metric,
        batch_size=batch_size,
        num_workers=num_workers,
        checkpoint_dir=Path(),  # set below, in the run folder
        resume=resume.checkpoint if resume is not None else None,
        on_epoch=lambda record: None,
    )
    _try_optimizer(job)
    job.callbacks = build_callbacks(config, runner)
    if val_set is not None:
        _check_declared_metric(config, metric, val_set, source)

    if resume is not None and resume.folder is not None:
        run = RunFolder.resume(resume.folder, config, "train", runner)
        run.log(
            f"\nomlcore train: {config.source or config.name} -> {run.path} (resumed after {resume.epochs_done} epochs)"
        )
    else:
        run = RunFolder.create(config, "train", runner)
        run.log(f"omlcore train: {config.source or config.name} -> {run.path}")
    run.log(f"data: {len(train_set)} training images, {len(val_set) if val_set else 0} validation images ({csv_path})")

    job.tracker = open_tracker(config, run)
    with finalizing(job.tracker) as tracker:

        def evaluate() -> dict[str, float]:
            assert val_set is not None and metric is not None
            return flat_scalars(runner.evaluate(model, val_set, metric, batch_size, num_workers))

        best = _BestEpoch(config, run, model, source) if val_set is not None else None
        untrained: dict[str, float] = {}
        if val_set is not None and config["validate_untrained"] and resume is None:
            untrained = evaluate()
            tracker.log_metrics({"epoch": -1, **untrained}, 0)
            run.log(f"\nValidation of the untrained model:\n{format_table({'untrained': untrained})}\n")
            if best is not None:
                best.check(untrained)  # an unknown metric name stops the run before training

        previous = _previous_history(run.path, source) if resume is not None and resume.folder is not None else []
        history: dict[int, dict[str, float]] = {int(record["epoch"]): record for record in previous}

        def on_epoch(record: dict[str, float]) -> None:
            epoch = int(record["epoch"])
            for stale in [e for e in history if e >= epoch]:
                del history[stale]
            history[epoch] = record
            run.write_records("metrics", [history[e] for e in sorted(history)])
            shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k in ("loss", "OVERALL/cmc/1"))
            run.log(f"epoch {epoch + 1}/{runner.epochs}: {shown}")
            if best is not None:
                best.update(record, [history[e] for e in sorted(history) if e < epoch])

        job.checkpoint_dir, job.on_epoch = run.checkpoints, on_epoch
        try:
            runner.fit(job)
        except KeyboardInterrupt:
            done = max(history, default=-1) + 1
            message = (
                f"interrupted after {done} of {runner.epochs} epochs; the run is in {run.path}. Continue it with: "
                f"omlcore train {run.path / run.config_name} resume={run.path}"
            )
            run.log(f"\n{message}")
            raise RunInterrupted(message) from None
        run.save_weights(EXTRACTOR_CHECKPOINT, model)

        trained: dict[str, float] = {}
        if val_set is not None and metric is not None:
            trained = evaluate()
            columns = {"untrained": untrained, "trained": trained} if untrained else {"trained": trained}
            run.log(f"\nValidation ({len(val_set)} images, every one a query and / or gallery item):")
            run.log(format_table(columns))
            run.write_json("validation.json", columns)
            written = save_visualisations(config, metric, val_set, run.path / "retrieval") if run.primary else []
            if written:
                run.log(f"\nworst queries: {', '.join(str(p.relative_to(run.path)) for p in written)}")
            if tracker:
                tracker.log_images(worst_query_grids(config, metric, val_set), len(history))
        if tracker and (run.checkpoints / BEST_CHECKPOINT).is_file():
            tracker.log_artifact(run.checkpoints / BEST_CHECKPOINT)
        run.log(f"\nrun folder: {run.path}")
        return TrainResult(run.path, [history[e] for e in sorted(history)], untrained, trained)


def _builder(kind: str, spec: Mapping[str, Any], source: str | None) -> Callable[[Any], Any]:
    """``first -> build_component(kind, spec, kind, first)``: the optimizer's and the scheduler's factories."""
    return lambda first: build_component(kind, spec, kind, first, source=source)


def _try_optimizer(job: FitJob) -> None:
    """Build the optimizer and scheduler once on throwaway copies, so that a bad argument value (``lr: -1``) stops
    the run before its folder exists. The runner builds the ones it trains with."""
    optimizer = job.build_optimizer(job.trainable_parameters())
    if job.build_scheduler is not None:
        job.build_scheduler(optimizer)


class _BestEpoch:
    """Saves the extractor to ``checkpoints/best.pt`` after each epoch that is the best so far by a metric."""

    def __init__(self, config: Config, run: RunFolder, model: torch.nn.Module, source: str | None) -> None:
        self.key: str | None = config["metric_for_checkpointing"]
        self.larger_is_better = config["mode_for_checkpointing"] == "max"
        self.source = source
        self.run = run
        self.model = model

    def check(self, metrics: Mapping[str, float]) -> None:
        """A clear error if the validation does not report the metric (it names the ones it does report)."""
        _check_reported(self.key, metrics, self.source)

    def update(self, record: Mapping[str, float], earlier: Sequence[Mapping[str, float]]) -> None:
        """Save the weights if ``record`` beats every ``earlier`` epoch (NaN never does)."""
        if self.key is None:
            return
        self.check(record)  # in every process that has the record, so that a distributed run stops as one
        if not self.run.primary:
            return
        value = float(record[self.key])
        previous = [float(r[self.key]) for r in earlier if self.key in r and r[self.key] == r[self.key]]
        best_before = (max if self.larger_is_better else min)(previous, default=None)
        if value != value or (
            best_before is not None and (value <= best_before if self.larger_is_better else value >= best_before)
        ):
            return
        self.run.save_weights(BEST_CHECKPOINT, self.model)
        epoch = int(record["epoch"]) + 1
        self.run.log(f"best {self.key} so far ({value:.4f}, epoch {epoch}): {CHECKPOINTS}/{BEST_CHECKPOINT}")


def _check_reported(key: str | None, metrics: Mapping[str, Any], source: str | None) -> None:
    if key is not None and key not in metrics:
        names = ", ".join(name for name in metrics if name not in ("epoch", "loss") and "/" in name)
        raise ConfigError(
            "metric_for_checkpointing",
            f"the validation reports no metric '{key}'; it reports: {names}; or set it to null",
            source,
        )


def _check_declared_metric(config: Config, metric: Any, dataset: ImageQueryGalleryDataset, source: str | None) -> None:
    """``metric_for_checkpointing`` against the names the metric declares (``metric_names``), before training."""
    names = getattr(metric, "metric_names", None)
    if callable(names):
        categories = [] if dataset.categories is None else [str(c) for c in dataset.categories.tolist()]
        _check_reported(config["metric_for_checkpointing"], dict.fromkeys(names(categories)), source)


def _previous_history(folder: Path, source: str | None) -> list[dict[str, Any]]:
    """The epoch records of the run being resumed (``metrics.json``; none if it has none yet)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return []
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            "resume",
            f"'{path}' is not valid JSON ({error}); it holds the records of the epochs done: restore it, or move it "
            "away to resume without the earlier epochs' records",
            source,
        ) from None
    if not isinstance(loaded, list):
        raise ConfigError(
            "resume", f"'{path}' does not hold a list of epoch records; restore it or move it away", source
        )
    return [dict(record) for record in loaded if isinstance(record, Mapping)]


def _has_validation_rows(csv_path: Path) -> bool:
    """Whether the (already validated) dataset CSV has rows of the validation split."""
    split = pd.read_csv(csv_path, dtype=str, keep_default_na=False, usecols=[SPLIT_COLUMN])[SPLIT_COLUMN]
    return bool(split.eq(SPLIT_VALIDATION).any())


def _label2category(dataset: ImageLabeledDataset, sampler: str, source: str | None) -> dict[int, str]:
    """label -> category of the training rows, for category-balanced samplers (one category per label)."""
    if dataset.categories is None:
        raise ConfigError("sampler.name", "this sampler needs the CSV's 'category' column, which is missing", source)
    try:
        return dataset.get_label2category(f"the sampler '{sampler}'")
    except DataValidationError as error:
        raise ConfigError("sampler.name", str(error), source) from None
