"""``omlcore train CONFIG``: train an extractor, validating after every epoch, in its own run folder.

The run folder gets ``config.yaml`` (resolved), ``log.txt``, ``metrics.csv`` / ``metrics.json`` (one record per
epoch, rewritten as each epoch ends), ``validation.json`` (the untrained and the trained model's metrics),
``checkpoints/`` (the runner's resumable checkpoint, ``extractor.pt``, the trained weights, and ``best.pt``, the
weights after the best epoch by ``metric_for_checkpointing``) and ``retrieval/`` (grids of the worst validation
queries). ``resume: <run folder>`` continues an interrupted run in its folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from omlcore.config import ConfigError, accepts, build_component
from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.errors import DataValidationError, RunInterrupted
from omlcore.pipelines.common import (
    BEST_CHECKPOINT,
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
from omlcore.pipelines.epochs import (
    BestEpoch,
    check_declared_metric,
    component_factory,
    has_validation_rows,
    previous_history,
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
        if has_validation_rows(csv_path)
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
        build_optimizer=component_factory("optimizer", config["optimizer"], source),
        build_scheduler=component_factory("scheduler", config["scheduler"], source) if config["scheduler"] else None,
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
        check_declared_metric(config, metric, val_set, source)

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

        best = BestEpoch(config, run, model, source) if val_set is not None else None
        untrained: dict[str, float] = {}
        if val_set is not None and config["validate_untrained"] and resume is None:
            untrained = evaluate()
            tracker.log_metrics({"epoch": -1, **untrained}, 0)
            run.log(f"\nValidation of the untrained model:\n{format_table({'untrained': untrained})}\n")
            if best is not None:
                best.check(untrained)  # an unknown metric name stops the run before training

        previous = previous_history(run.path, source) if resume is not None and resume.folder is not None else []
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


def _try_optimizer(job: FitJob) -> None:
    """Build the optimizer and scheduler once on throwaway copies, so that a bad argument value (``lr: -1``) stops
    the run before its folder exists. The runner builds the ones it trains with."""
    optimizer = job.build_optimizer(job.trainable_parameters())
    if job.build_scheduler is not None:
        job.build_scheduler(optimizer)


def _label2category(dataset: ImageLabeledDataset, sampler: str, source: str | None) -> dict[int, str]:
    """label -> category of the training rows, for category-balanced samplers (one category per label)."""
    if dataset.categories is None:
        raise ConfigError("sampler.name", "this sampler needs the CSV's 'category' column, which is missing", source)
    try:
        return dataset.get_label2category(f"the sampler '{sampler}'")
    except DataValidationError as error:
        raise ConfigError("sampler.name", str(error), source) from None
