"""``RetrievalModule``: an extractor trained with any omlcore :class:`~omlcore.protocols.Loss` in Lightning."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from omlcore.checks import check_loss, check_optimizer_covers
from omlcore.config import resolve
from omlcore.keys import EMBEDDINGS, IMAGES, LABELS
from omlcore.protocols import Loss
from omlcore.utils.optional import require
from omlcore_lightning.sampling import install_sampling

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule
else:  # the framework is imported when this module is, with the install hint if it is missing
    LightningModule = require(
        "lightning.pytorch", "lightning", what="omlcore_lightning.RetrievalModule"
    ).LightningModule

__all__ = ["DEFAULT_OPTIMIZER", "OptimizerSpec", "RetrievalModule", "SchedulerSpec"]

#: An optimizer, a factory ``params -> Optimizer`` (e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``), or a
#: registry config ``{"name": "adam", "args": {"lr": 1e-3}}``.
OptimizerSpec = Optimizer | Callable[[list[nn.Parameter]], Optimizer] | Mapping[str, Any]
#: The optimizer when none is given.
DEFAULT_OPTIMIZER: Mapping[str, Any] = {"name": "adam", "args": {"lr": 1e-3}}
#: A scheduler, a factory ``optimizer -> scheduler``, or a registry config ``{"name": "cosine", "args": {...}}``.
SchedulerSpec = Any | Callable[[Optimizer], Any] | Mapping[str, Any]


def _build(kind: str, spec: Any, first: Any) -> Any:
    """A ``{name, args}`` spec through the config layer's resolver, else a factory called with ``first``."""
    return resolve(kind, spec, first) if isinstance(spec, Mapping) else spec(first)


class RetrievalModule(LightningModule):
    """A ``LightningModule`` that trains ``extractor`` with ``loss`` on batches of omlcore's datasets.

    - ``training_step``: ``loss(extractor(batch["images"]), batch["labels"])``; logs ``train/loss`` and every
      entry of the loss's ``last_logs`` as ``train/<name>`` on the steps the loggers write (every
      ``log_every_n_steps``; the loss every step for the progress bar) and ``train/loss_epoch``, the mean over the
      epoch's steps and all ranks.
    - ``validation_step`` / ``test_step``: the batch without the images plus ``"embeddings"``, which
      :class:`~omlcore_lightning.MetricValCallback` feeds to a metric accumulator.
    - ``predict_step``: the embeddings (``trainer.predict`` returns one tensor per batch; see
      :func:`~omlcore_lightning.gather_predictions`).
    - Loaders: omlcore's batch samplers get the trainer's epoch (so a resumed run draws the batches of an
      uninterrupted one), and ``strategy="ddp"`` works with them as they are (see :mod:`omlcore_lightning.sampling`).

    Args:
        extractor: ``images -> (B, D)`` embeddings.
        loss: an omlcore :class:`~omlcore.protocols.Loss` (omlcore's, a PML loss, :class:`omlcore_pml.PMLLoss` ...);
            a trainable loss's parameters are optimised and checkpointed with the extractor's.
        optimizer: see :data:`OptimizerSpec`; a factory or config gets every trainable parameter (extractor and
            loss). Default: Adam with lr 1e-3.
        scheduler: see :data:`SchedulerSpec`, stepped every ``scheduler_interval``; ``scheduler_monitor`` names
            the logged value that ``ReduceLROnPlateau`` watches.
        input_key, labels_key: the batch keys of the images and labels.

    Raises:
        IncompatibleComponentError: the loss does not fit (e.g. a PML loss without labels), or an optimizer instance
            misses the loss's trainable parameters.
    """

    def __init__(
        self,
        extractor: nn.Module,
        loss: Loss,
        optimizer: OptimizerSpec | None = None,
        scheduler: SchedulerSpec | None = None,
        *,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        scheduler_monitor: str = "train/loss_epoch",
        input_key: str = IMAGES,
        labels_key: str = LABELS,
    ) -> None:
        super().__init__()
        check_loss(loss)
        if isinstance(optimizer, Optimizer):
            check_optimizer_covers(loss, optimizer)
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.extractor = extractor
        self.loss = loss
        self.optimizer_spec: OptimizerSpec = optimizer if optimizer is not None else DEFAULT_OPTIMIZER
        self.scheduler_spec = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.input_key = input_key
        self.labels_key = labels_key
        self._epoch_loss: list[Tensor] = []

    def forward(self, images: Tensor) -> Tensor:
        embeddings: Tensor = self.extractor(images)
        return embeddings

    def setup(self, stage: str) -> None:
        install_sampling(self.trainer)

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = []

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        images, labels = batch[self.input_key], batch[self.labels_key]
        value: Tensor = self.loss(self.extractor(images), labels)
        self._epoch_loss.append(value.detach())
        # Each self.log costs Lightning about half a millisecond, as much as a step of a tiny model: log on the steps
        # the loggers write (every log_every_n_steps), and every step only for a progress bar that shows the loss.
        writes = (self.global_step + 1) % getattr(self.trainer, "log_every_n_steps", 1) == 0
        if writes or self.trainer.progress_bar_callback is not None:
            self.log("train/loss", value, prog_bar=True, batch_size=len(images))
        logs = getattr(self.loss, "last_logs", None)
        if logs and writes:
            self.log_dict({f"train/{name}": float(v) for name, v in logs.items()}, batch_size=len(images))
        return value

    def on_train_epoch_end(self) -> None:
        if self._epoch_loss:  # the epoch's mean loss, synchronised across ranks once per epoch
            self.log("train/loss_epoch", torch.stack(self._epoch_loss).mean(), sync_dist=True)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        embeddings = self.extractor(batch[self.input_key])
        return {**{k: v for k, v in batch.items() if k != self.input_key}, EMBEDDINGS: embeddings}

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.validation_step(batch, batch_idx, dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        images = batch[self.input_key] if isinstance(batch, Mapping) else batch
        embeddings: Tensor = self.extractor(images)
        return embeddings

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter that requires a gradient: the extractor's and the loss's."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        spec = self.optimizer_spec
        optimizer = spec if isinstance(spec, Optimizer) else _build("optimizer", spec, self.trainable_parameters())
        if self.scheduler_spec is None:
            return optimizer
        scheduler = self.scheduler_spec
        if isinstance(scheduler, Mapping) or not hasattr(scheduler, "step"):
            scheduler = _build("scheduler", scheduler, optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": self.scheduler_monitor,
            },
        }
