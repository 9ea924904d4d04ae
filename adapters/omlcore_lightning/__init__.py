"""omlcore's PyTorch Lightning adapter.

- :class:`RetrievalModule`: an extractor trained with any omlcore loss (optimizer / scheduler as objects, factories
  or registry configs), logging the loss and its statistics; ``trainer.validate`` / ``test`` / ``predict`` work.
- :class:`MetricValCallback`: feeds any metric accumulator and logs its flat keys, merged exactly across DDP ranks.
- DDP: ``trainer.fit(module, train_loader, val_loader)`` with ``strategy="ddp"`` works with omlcore's batch samplers
  as they are (:mod:`omlcore_lightning.sampling`); :func:`gather_predictions` collects ``trainer.predict`` across
  ranks.
- :class:`LightningRunner`: the config pipelines' ``lightning`` runner (a ``Trainer`` per call).

Its plugin, :mod:`omlcore_lightning.plugin` (entry point ``lightning``), registers these, the runner and
Lightning's callbacks and loggers by name without importing Lightning; they need ``pip install "omlcore[lightning]"``,
and importing one of the names above without Lightning raises :class:`~omlcore.errors.MissingDependencyError` with
that hint.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omlcore_lightning.callback import MetricValCallback
    from omlcore_lightning.module import RetrievalModule
    from omlcore_lightning.runner import LightningRunner
    from omlcore_lightning.sampling import gather_predictions, install_sampling

__all__ = ["LightningRunner", "MetricValCallback", "RetrievalModule", "gather_predictions", "install_sampling"]

_HOMES = {
    "MetricValCallback": "omlcore_lightning.callback",
    "RetrievalModule": "omlcore_lightning.module",
    "LightningRunner": "omlcore_lightning.runner",
    "gather_predictions": "omlcore_lightning.sampling",
    "install_sampling": "omlcore_lightning.sampling",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
