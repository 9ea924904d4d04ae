"""The config's experiment loggers and callbacks for the Lightning runner: Lightning's own, built from the same entries.

- Loggers (:func:`lightning_loggers`): the pipeline has opened each run with :mod:`omlcore_torch.loggers` (and logs
  the config, the grids and the best checkpoint into it); the ``Trainer`` gets Lightning's logger attached to the same
  run: ``TensorBoardLogger`` writing into the same folder, ``MLFlowLogger`` with the same ``run_id``, ``WandbLogger``
  with the same run object. Loggers without a Lightning counterpart (``csv``, whose files already have the layout of
  Lightning's ``CSVLogger``, ``neptune``, ``comet``, ``clearml``, a plugin's) reach the ``Trainer`` through
  :class:`TrackerBridge`, and a Lightning logger (``lightning.TensorBoardLogger`` ...) as it is. Every one is wrapped
  in :class:`GuardedLogger`: a failure warns once (through the run's :class:`~omlcore.tracking.Tracker`) and training
  goes on.
- Callbacks (:func:`lightning_callbacks`): ``early_stopping`` -> ``EarlyStopping``, ``top_k_checkpoints`` ->
  ``ModelCheckpoint`` (``checkpoints/top_k/epoch=NNN.ckpt``), ``lr_monitor`` -> ``LearningRateMonitor``,
  ``freeze_backbone`` -> :class:`FreezeSchedule`; Lightning callbacks pass as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from omlcore.tracking import Tracker
from omlcore.utils.optional import require
from omlcore_torch.callbacks import EarlyStopping, FreezeBackbone, LearningRateMonitor, TopKCheckpoints
from omlcore_torch.loggers import MLflowLogger, TensorBoardLogger, WandbLogger

if TYPE_CHECKING:
    import lightning.pytorch as pl
else:  # the framework is imported when this module is, with the install hint if it is missing
    pl = require("lightning.pytorch", "lightning", what="omlcore_lightning.tracking")

__all__ = [
    "FreezeSchedule",
    "GuardedLogger",
    "TrackerBridge",
    "has_checkpointing",
    "lightning_callbacks",
    "lightning_loggers",
]

#: omlcore_torch's epoch record key -> what the Lightning runner logs for it.
_RENAMED = {"loss": "train/loss_epoch"}


class GuardedLogger(pl.loggers.Logger):
    """Lightning's logger ``inner``, each call made through ``tracker.call``: a failure warns once, training goes on.

    Args:
        inner: the Lightning logger.
        tracker: the run's tracker (which counts the failures of the omlcore logger ``owner``).
        owner: the omlcore logger whose run ``inner`` writes to (warnings name it); default ``inner``.
    """

    def __init__(self, inner: Any, tracker: Tracker, owner: Any = None) -> None:
        super().__init__()
        self.inner = inner
        self.tracker = tracker
        self.owner = owner if owner is not None else inner

    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def version(self) -> int | str | None:
        return self.inner.version

    @property
    def save_dir(self) -> str | None:
        return self.inner.save_dir

    @property
    def log_dir(self) -> str | None:
        return getattr(self.inner, "log_dir", None)

    @property
    def experiment(self) -> Any:
        return self.inner.experiment

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.tracker.call(self.owner, self.inner.log_metrics, metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.tracker.call(self.owner, self.inner.log_hyperparams, params, *args, **kwargs)

    def log_graph(self, model: nn.Module, input_array: Any = None) -> None:
        self.tracker.call(self.owner, self.inner.log_graph, model, input_array)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.tracker.call(self.owner, self.inner.after_save_checkpoint, checkpoint_callback)

    def save(self) -> None:
        self.tracker.call(self.owner, self.inner.save)

    def finalize(self, status: str) -> None:
        self.tracker.call(self.owner, self.inner.finalize, status)


class TrackerBridge(pl.loggers.Logger):
    """An :class:`~omlcore.tracking.ExperimentLogger` as a Lightning logger: the ``Trainer``'s scalars go to it.

    Hyperparameters and finalizing stay with the pipeline, which logged the resolved config and finalizes the run
    once its grids and checkpoint are logged (the ``Trainer``'s own hyperparameters, the module's, are empty).
    """

    def __init__(self, logger: Any) -> None:
        super().__init__()
        self.logger = logger

    @property
    def name(self) -> str:
        return str(getattr(self.logger, "display_name", type(self.logger).__name__))

    @property
    def version(self) -> str:
        return ""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logger.log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if params:
            self.logger.log_hyperparams(dict(params))

    def save(self) -> None:
        save = getattr(self.logger, "save", None)
        if callable(save):
            save()


def _lightning_logger(logger: Any) -> Any:
    """Lightning's logger attached to ``logger``'s run, a Lightning logger as it is, or a :class:`TrackerBridge`."""
    if isinstance(logger, pl.loggers.Logger):
        return logger
    if isinstance(logger, TensorBoardLogger):
        return pl.loggers.TensorBoardLogger(str(logger.log_dir), name="", version="", default_hp_metric=False)
    if isinstance(logger, MLflowLogger):
        return pl.loggers.MLFlowLogger(
            experiment_name=logger.experiment_name, tracking_uri=logger.tracking_uri, run_id=logger.run_id
        )
    if isinstance(logger, WandbLogger):
        return pl.loggers.WandbLogger(experiment=logger.run)
    return TrackerBridge(logger)


def lightning_loggers(tracker: Tracker) -> list[Any]:
    """The ``Trainer``'s loggers for the run's loggers (none in the processes that do not log), each guarded."""
    return [GuardedLogger(_lightning_logger(logger), tracker, owner=logger) for logger in tracker.loggers]


def _monitor(name: str) -> str:
    return _RENAMED.get(name, name)


class FreezeSchedule(pl.Callback):
    """:class:`~omlcore_torch.callbacks.FreezeBackbone` in Lightning: the backbone of the module's ``extractor`` is
    frozen at the start of each epoch before ``schedule.epochs`` (by ``trainer.current_epoch``, so a resumed run
    freezes as the uninterrupted one did) and unfrozen from then on. The optimizer holds every parameter (it is built
    before the first epoch starts); the frozen ones get no gradient. Under ``ddp`` use
    ``strategy: ddp_find_unused_parameters_true``: DDP must accept parameters without gradients."""

    def __init__(self, schedule: FreezeBackbone) -> None:
        self.schedule = schedule

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.schedule.start(pl_module.extractor, pl_module.loss)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.schedule.apply(pl_module.extractor, int(trainer.current_epoch))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.schedule.apply(pl_module.extractor, self.schedule.epochs)


def lightning_callbacks(callbacks: Sequence[Any], checkpoint_dir: Path, primary: bool) -> list[Any]:
    """Lightning's callbacks for the config's: see the module docstring. ``lr_monitor`` is left out of the processes
    that do not log (``primary`` False), whose ``Trainer`` has no logger. Raises TypeError for any other object."""
    built: list[Any] = []
    for callback in callbacks:
        if isinstance(callback, pl.Callback):
            built.append(callback)
        elif isinstance(callback, EarlyStopping):
            built.append(
                pl.callbacks.EarlyStopping(
                    monitor=_monitor(callback.monitor),
                    mode=callback.mode,
                    patience=callback.patience,
                    min_delta=callback.min_delta,
                )
            )
        elif isinstance(callback, TopKCheckpoints):
            built.append(
                pl.callbacks.ModelCheckpoint(
                    dirpath=checkpoint_dir / TopKCheckpoints.folder,
                    filename="epoch={epoch:03d}",
                    auto_insert_metric_name=False,
                    monitor=_monitor(callback.monitor),
                    mode=callback.mode,
                    save_top_k=callback.k,
                    enable_version_counter=False,
                )
            )
        elif isinstance(callback, LearningRateMonitor):
            if primary:
                built.append(pl.callbacks.LearningRateMonitor(logging_interval=callback.logging_interval))
        elif isinstance(callback, FreezeBackbone):
            built.append(FreezeSchedule(callback))
        else:
            raise TypeError(
                f"the lightning runner takes Lightning's callbacks (lightning.EarlyStopping ...) or omlcore's "
                f"(early_stopping, top_k_checkpoints, lr_monitor, freeze_backbone), not {type(callback).__name__}"
            )
    return built


def has_checkpointing(callbacks: Sequence[Any]) -> bool:
    """Whether a ``ModelCheckpoint`` is among ``callbacks`` (``Trainer(enable_checkpointing=...)`` must say so)."""
    return any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
