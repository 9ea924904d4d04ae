"""``MetricValCallback``: feed any :class:`~omlcore.protocols.MetricAccumulator` during validation / test and log it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor

from omlcore.keys import EMBEDDINGS, IMAGES
from omlcore.postprocessing import build_postprocessor
from omlcore.protocols import MetricAccumulator
from omlcore.utils.optional import require
from omlcore_lightning.sampling import install_sampling
from omlcore_torch.distributed import sync_accumulator

if TYPE_CHECKING:
    from lightning.pytorch import Callback
else:  # the framework is imported when this module is, with the install hint if it is missing
    Callback = require("lightning.pytorch", "lightning", what="omlcore_lightning.MetricValCallback").Callback

__all__ = ["MetricValCallback", "scalar_metrics"]


def scalar_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """What loggers take from ``results``: the flat keys (``"OVERALL/cmc/1"``) whose value is a number or a
    one-element tensor."""
    return {
        str(key): float(value)
        for key, value in results.items()
        if (isinstance(value, Tensor) and value.numel() == 1)
        or (isinstance(value, int | float) and not isinstance(value, bool))
    }


class MetricValCallback(Callback):
    """Feeds ``metric`` the outputs of ``validation_step`` (and ``test_step``) and logs its flat keys every epoch.

    Each batch goes to ``metric.update`` as the loader's batch (labels, query / gallery flags, categories, ``idx``
    ...) without the images, updated with what the step returned: a dict with ``"embeddings"`` (as
    :class:`~omlcore_lightning.RetrievalModule` returns) or the embeddings tensor itself. At the end of the epoch
    the ranks' states are merged exactly (:func:`~omlcore_torch.distributed.sync_accumulator`; the evaluation
    loaders are sharded without padding, see :mod:`omlcore_lightning.sampling`), ``metric.compute()`` runs on every
    rank, the result is kept in :attr:`metrics` and its scalar flat keys are logged (``log_prefix`` + key), so
    ``ModelCheckpoint(monitor="OVERALL/cmc/1", mode="max")`` works. Sanity-check batches are not counted.

    Args:
        metric: the accumulator, e.g. :class:`omlcore.metrics.EmbeddingMetrics`.
        log_prefix: prepended to every logged key.
        dataloader_idx: with several evaluation loaders, the one whose batches are fed.
        prog_bar: keys (without the prefix) also shown in the progress bar.
        postprocessor: set on ``metric`` (a :class:`~omlcore.protocols.Postprocessor`, a registered name, a spec or a
            list), which then also reports the metrics after it (``"postprocessed/..."``). A metric that reads items
            (``metric.dataset``, for learned postprocessors) gets the evaluated loader's dataset.
    """

    def __init__(
        self,
        metric: MetricAccumulator,
        *,
        log_prefix: str = "",
        dataloader_idx: int = 0,
        prog_bar: tuple[str, ...] = (),
        postprocessor: Any = None,
    ) -> None:
        super().__init__()
        for member in ("update", "compute", "reset", "get_state", "merge_state", "state_reductions"):
            if not hasattr(metric, member):
                raise TypeError(
                    f"MetricValCallback needs a MetricAccumulator (update / compute / reset / get_state / merge_state "
                    f"/ state_reductions); {type(metric).__name__} has no '{member}'"
                )
        if postprocessor is not None:
            if not hasattr(metric, "postprocessor"):
                raise TypeError(f"{type(metric).__name__} takes no postprocessor; use omlcore's EmbeddingMetrics")
            metric.postprocessor = build_postprocessor(postprocessor)
        self.metric = metric
        self.log_prefix = log_prefix
        self.dataloader_idx = dataloader_idx
        self.prog_bar = prog_bar
        self.metrics: dict[str, Any] = {}

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        install_sampling(trainer)

    def _update(self, trainer: Any, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        if trainer.sanity_checking or dataloader_idx != self.dataloader_idx:
            return
        if isinstance(outputs, Tensor):
            outputs = {EMBEDDINGS: outputs}
        if not isinstance(outputs, Mapping) or EMBEDDINGS not in outputs:
            raise TypeError(
                "MetricValCallback: validation_step / test_step must return the embeddings (a tensor) or a dict with "
                f"'{EMBEDDINGS}'; got {type(outputs).__name__}"
            )
        if not isinstance(batch, Mapping):
            raise TypeError(
                "MetricValCallback: batches must be dicts (labels, is_query, is_gallery ...), as omlcore's datasets "
                f"give them; got {type(batch).__name__}"
            )
        self.metric.update({**{k: v for k, v in batch.items() if k != IMAGES}, **outputs})

    def _finish(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            self.metric.reset()
            return
        sync_accumulator(self.metric)
        if hasattr(self.metric, "dataset"):
            self.metric.dataset = _evaluated_dataset(trainer, self.dataloader_idx)
        self.metrics = self.metric.compute()
        self.metric.reset()
        for key, value in scalar_metrics(self.metrics).items():
            pl_module.log(
                f"{self.log_prefix}{key}", value, prog_bar=key in self.prog_bar, on_epoch=True, sync_dist=True
            )

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.metric.reset()

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(trainer, outputs, batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer, pl_module)

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.metric.reset()

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update(trainer, outputs, batch, dataloader_idx)

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer, pl_module)


def _evaluated_dataset(trainer: Any, dataloader_idx: int) -> Any:
    """The dataset of the loader being evaluated (validation or test), or None."""
    loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
    if isinstance(loaders, list | tuple):
        loaders = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
    return getattr(loaders, "dataset", None)
