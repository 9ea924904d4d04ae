"""Callbacks of :func:`omlcore_torch.fit`: code that runs at fixed points of training, without editing the loop.

Subclass :class:`Callback` and override the hooks you need; every hook receives the :class:`FitState` (the objects
being trained and where training stands). Hooks run in every process of a distributed run, in the order the
callbacks were given; a hook that writes files should check ``state.rank == 0``. The order within an epoch::

    on_epoch_start -> (training steps) -> on_validation_end (when validating) -> scheduler step
    -> on_checkpoint (when checkpointing) -> on_epoch_end

:func:`~omlcore_torch.fit` calls ``on_fit_start`` after a resumed checkpoint is restored (``state.epoch`` is the
first epoch still to train) and ``on_fit_end`` when the last epoch has ended, also when none was left to train.
With ``validate_untrained=True`` the untrained model is validated after ``on_fit_start``, before the first epoch:
``on_validation_end`` with ``state.epoch == -1``. Epochs are 0-based indices throughout, as in the history's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim import Optimizer

from omlcore.protocols import Loss

__all__ = ["Callback", "FitState", "run_callbacks"]


@dataclass
class FitState:
    """Where :func:`~omlcore_torch.fit` stands, shared by every hook.

    Attributes:
        model, loss, optimizer, scheduler: the objects being trained (the model unwrapped, never the DDP wrapper).
        epochs: the total number of epochs; epoch: the current one (0-based; -1 while the untrained model is
            validated; after the loop, ``epochs``).
        history: the records of the epochs done, the current one last once it has ended.
        rank, world_size: this process in a distributed run (0 and 1 otherwise).
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


class Callback:
    """Hooks of :func:`~omlcore_torch.fit`; each does nothing unless overridden."""

    def on_fit_start(self, state: FitState) -> None:
        """Before the first epoch to train (after a resumed checkpoint is restored)."""

    def on_epoch_start(self, state: FitState) -> None:
        """Before the epoch's first training step."""

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
