"""Callbacks of :func:`omlcore_torch.fit`: code that runs at fixed points of training, without editing the loop.

Subclass :class:`Callback` and override the hooks you need; every hook receives the :class:`FitState` (the objects
being trained and where training stands). Hooks run in every process of a distributed run, in the order the
callbacks were given; a hook that writes files should check ``state.rank == 0``. The order within an epoch::

    on_epoch_start -> (training steps, each followed by on_step_end) -> on_validation_end (when validating)
    -> scheduler step -> on_checkpoint (when checkpointing) -> on_epoch_end

:func:`~omlcore_torch.fit` calls ``on_fit_start`` after a resumed checkpoint is restored (``state.epoch`` is the
first epoch still to train) and ``on_fit_end`` when the last epoch has ended, also when none was left to train.
With ``validate_untrained=True`` the untrained model is validated after ``on_fit_start``, before the first epoch:
``on_validation_end`` with ``state.epoch == -1``. Epochs are 0-based indices throughout, as in the history's records.
A callback that sets ``state.should_stop`` ends training after the current epoch (every process must decide alike:
decide from the epoch's record, which is equal in every process).

The callbacks here (registered as kind ``callback``; the Lightning runner turns each into its Lightning equivalent):
:class:`EarlyStopping`, :class:`TopKCheckpoints`, :class:`LearningRateMonitor` and :class:`FreezeBackbone`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn
from torch.optim import Optimizer

from omlcore.protocols import Loss
from omlcore.tracking import Tracker

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitState",
    "FreezeBackbone",
    "LearningRateMonitor",
    "TopKCheckpoints",
    "run_callbacks",
]

_log = logging.getLogger("omlcore.torch")

Mode = Literal["max", "min"]


@dataclass
class FitState:
    """Where :func:`~omlcore_torch.fit` stands, shared by every hook.

    Attributes:
        model, loss, optimizer, scheduler: the objects being trained (the model unwrapped, never the DDP wrapper).
        epochs: the total number of epochs; epoch: the current one (0-based; -1 while the untrained model is
            validated; after the loop, ``epochs``).
        history: the records of the epochs done, the current one last once it has ended.
        rank, world_size: this process in a distributed run (0 and 1 otherwise).
        global_step: the optimizer steps done (over every epoch, resumed ones included); log_step: the step the
            loggers get, the 0-based index of the last optimizer step (as Lightning logs).
        should_stop: set it to end training after the current epoch (early stopping).
        tracker: the experiment loggers (empty in the processes that do not log); log_every_n_steps: how often the
            step scalars are logged.
    """

    model: nn.Module
    loss: Loss
    optimizer: Optimizer
    scheduler: Any
    epochs: int
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    global_step: int = 0
    should_stop: bool = False
    tracker: Tracker = field(default_factory=Tracker)
    log_every_n_steps: int = 50

    @property
    def log_step(self) -> int:
        return max(self.global_step - 1, 0)


class Callback:
    """Hooks of :func:`~omlcore_torch.fit`; each does nothing unless overridden."""

    def on_fit_start(self, state: FitState) -> None:
        """Before the first epoch to train (after a resumed checkpoint is restored)."""

    def on_epoch_start(self, state: FitState) -> None:
        """Before the epoch's first training step."""

    def on_step_end(self, state: FitState, values: dict[str, float]) -> None:
        """After each optimizer step (``state.global_step`` counts it), with the step's ``loss`` and loss statistics."""

    def on_validation_end(self, state: FitState, metrics: dict[str, float]) -> None:
        """After the epoch's validation (or the untrained model's), with its flat metrics (``"OVERALL/cmc/1"`` ...)."""

    def on_checkpoint(self, state: FitState, path: Path) -> None:
        """After the epoch's checkpoint is written to ``path`` (by process 0; every process is called)."""

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        """After the epoch (and its checkpoint), with its record, which is also ``state.history[-1]``."""

    def on_fit_end(self, state: FitState) -> None:
        """After the last epoch."""


def run_callbacks(callbacks: Sequence[Callback], hook: str, state: FitState, *args: Any) -> None:
    """Call ``hook`` of every callback, in order."""
    for callback in callbacks:
        getattr(callback, hook)(state, *args)


def _check_mode(mode: str) -> Mode:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    return mode  # type: ignore[return-value]


def _monitored(monitor: str, record: dict[str, float], who: str) -> float:
    """``record[monitor]``, or an error that lists what the record has."""
    if monitor not in record:
        names = ", ".join(k for k in record if k not in ("epoch", "epoch_time_s"))
        raise ValueError(f"{who}: the epoch's record has no {monitor!r}; it has: {names}")
    return float(record[monitor])


def _better(value: float, than: float, mode: Mode, min_delta: float = 0.0) -> bool:
    """Whether ``value`` improves on ``than`` by more than ``min_delta`` (NaN never does)."""
    if math.isnan(value):
        return False
    if math.isnan(than):
        return True
    return value > than + min_delta if mode == "max" else value < than - min_delta


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    Decided from the epochs' records in ``state.history`` (so a resumed run decides as the uninterrupted one would,
    and every process alike); the untrained model's record does not count.

    Args:
        monitor: a key of the epoch records: a flat validation metric (``OVERALL/cmc/1``) or ``loss``.
        mode: ``max`` if larger values are better, ``min`` if smaller ones are.
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
    """

    def __init__(self, monitor: str = "OVERALL/cmc/1", mode: Mode = "max", patience: int = 3, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.mode = _check_mode(mode)
        self.patience = patience
        self.min_delta = min_delta

    def epochs_without_improvement(self, history: Sequence[dict[str, float]]) -> int:
        """How many of the last epochs did not improve on the best before them."""
        best, waited = math.nan, 0
        for record in history:
            if record.get("epoch", 0) < 0 or self.monitor not in record:
                continue
            value = float(record[self.monitor])
            if _better(value, best, self.mode, self.min_delta):
                best, waited = value, 0
            else:
                waited += 1
        return waited

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        _monitored(self.monitor, record, "early_stopping")
        waited = self.epochs_without_improvement(state.history)
        if waited >= self.patience:
            state.should_stop = True
            if state.rank == 0:
                _log.info(
                    "early stopping after epoch %d: %s has not improved for %d epochs",
                    state.epoch + 1,
                    self.monitor,
                    waited,
                )


class TopKCheckpoints(Callback):
    """Keep the resumable checkpoints of the ``k`` best epochs by ``monitor`` in ``<checkpoint_dir>/top_k/``, as
    ``epoch=<NNN>.pt`` (the 0-based epoch); a worse one is deleted as a better one arrives.

    Args:
        k: how many to keep.
        monitor, mode: as :class:`EarlyStopping`.
    """

    folder = "top_k"

    def __init__(self, k: int = 3, monitor: str = "OVERALL/cmc/1", mode: Mode = "max") -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self.monitor = monitor
        self.mode = _check_mode(mode)

    def kept(self, history: Sequence[dict[str, float]]) -> list[int]:
        """The epochs of ``history`` to keep, best first (ties: the earlier epoch)."""
        scored = [
            (float(r[self.monitor]), int(r["epoch"]))
            for r in history
            if r.get("epoch", 0) >= 0 and self.monitor in r and not math.isnan(float(r[self.monitor]))
        ]
        sign = -1.0 if self.mode == "max" else 1.0
        return [epoch for _, epoch in sorted(scored, key=lambda item: (sign * item[0], item[1]))[: self.k]]

    def on_checkpoint(self, state: FitState, path: Path) -> None:
        _monitored(self.monitor, state.history[-1], "top_k_checkpoints")
        if state.rank != 0:
            return
        folder = path.parent / self.folder
        folder.mkdir(parents=True, exist_ok=True)
        keep = self.kept(state.history)
        if state.epoch in keep:
            target = folder / f"epoch={state.epoch:03d}{path.suffix}"
            temporary = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, temporary)
            os.replace(temporary, target)
        for old in folder.glob(f"epoch=*{path.suffix}"):
            epoch = old.name[len("epoch=") : -len(path.suffix)]
            if epoch.isdigit() and int(epoch) not in keep:
                old.unlink()


class LearningRateMonitor(Callback):
    """Log each parameter group's learning rate to the experiment loggers, named as Lightning's
    ``LearningRateMonitor`` names them: ``lr-<Optimizer>``, ``lr-<Optimizer>/pg<i>`` with several groups.

    Args:
        logging_interval: ``epoch`` (after each epoch) or ``step`` (on the steps the loggers write).
    """

    def __init__(self, logging_interval: Literal["epoch", "step"] = "epoch") -> None:
        if logging_interval not in ("epoch", "step"):
            raise ValueError(f"logging_interval must be 'epoch' or 'step', got {logging_interval!r}")
        self.logging_interval = logging_interval

    @staticmethod
    def rates(optimizer: Optimizer) -> dict[str, float]:
        name = f"lr-{type(optimizer).__name__}"
        groups = optimizer.param_groups
        if len(groups) == 1:
            return {name: float(groups[0]["lr"])}
        return {f"{name}/pg{i + 1}": float(group["lr"]) for i, group in enumerate(groups)}

    def on_step_end(self, state: FitState, values: dict[str, float]) -> None:
        if self.logging_interval == "step" and state.global_step % state.log_every_n_steps == 0:
            state.tracker.log_metrics(self.rates(state.optimizer), state.log_step)

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        if self.logging_interval == "epoch":
            state.tracker.log_metrics(self.rates(state.optimizer), state.log_step)


class FreezeBackbone(Callback):
    """Train the head with the backbone frozen for the first ``epochs`` epochs, then train everything.

    Frozen means ``requires_grad=False`` (no gradient, no optimizer update; BatchNorm statistics still follow the
    data, as Lightning's ``BaseFinetuning`` with ``train_bn=True``). The head is whatever stays trainable: the
    projection of an ``extractor_with_mlp``, a trainable loss's weights (ArcFace). Decided from the epoch, so a resumed
    run freezes as the uninterrupted one did; parameters frozen before training stay frozen.

    Args:
        epochs: how many epochs (from the first) the backbone is frozen.
        module: the backbone's attribute path in the model (``extractor``, ``backbone.layer1`` ...); default: the
            model's ``extractor`` if it has one (the backbone of ``extractor_with_mlp``), else the whole model.
    """

    def __init__(self, epochs: int = 1, module: str | None = None) -> None:
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.epochs = epochs
        self.module = module
        self._trainable: dict[int, bool] = {}

    def backbone(self, model: nn.Module) -> nn.Module:
        """The part of ``model`` that is frozen."""
        path = self.module if self.module is not None else "extractor" if hasattr(model, "extractor") else ""
        part = model
        for name in filter(None, path.split(".")):
            child = getattr(part, name, None)
            if not isinstance(child, nn.Module):
                children = ", ".join(n for n, _ in part.named_children()) or "(none)"
                raise ValueError(f"freeze_backbone: the model has no module {path!r}; its children are: {children}")
            part = child
        return part

    def _parameters(self, model: nn.Module) -> Iterator[nn.Parameter]:
        return (p for p in self.backbone(model).parameters() if self._trainable.get(id(p), False))

    def start(self, model: nn.Module, loss: Any) -> None:
        """Remember which backbone parameters train; an error if freezing them would leave nothing to train."""
        backbone = list(self.backbone(model).parameters())
        self._trainable = {id(p): p.requires_grad for p in backbone}
        frozen = {id(p) for p in backbone}
        modules = [model, loss] if isinstance(loss, nn.Module) else [model]
        if self.epochs and not any(p.requires_grad and id(p) not in frozen for m in modules for p in m.parameters()):
            raise ValueError(
                "freeze_backbone: with the backbone frozen nothing trains (the model has no head outside it and the "
                "loss has no trainable weights); name the backbone with 'module', or use extractor_with_mlp"
            )

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Freeze the backbone before epoch ``epochs``, unfreeze it from then on."""
        for parameter in self._parameters(model):
            parameter.requires_grad_(epoch >= self.epochs)

    def on_fit_start(self, state: FitState) -> None:
        self.start(state.model, state.loss)

    def on_epoch_start(self, state: FitState) -> None:
        self.apply(state.model, state.epoch)

    def on_fit_end(self, state: FitState) -> None:
        self.apply(state.model, self.epochs)
