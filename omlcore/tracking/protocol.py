"""The contract of an experiment logger: what the pipelines and ``omlcore_torch.fit`` call.

Its three required methods have the shape of Lightning's ``Logger`` (``log_hyperparams``, ``log_metrics``,
``finalize``), so a Lightning logger qualifies as one too; images and artifacts are optional, used where a logger has
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["ExperimentLogger", "RunStatus"]

#: How a run ended, as :meth:`ExperimentLogger.finalize` hears it.
RunStatus = Literal["success", "failed", "interrupted"]


@runtime_checkable
class ExperimentLogger(Protocol):
    """Writes one run's events to a tracking tool; built (and so opened) by the primary process only.

    Required:

    - ``log_hyperparams(params)``: the run's settings; omlcore passes the resolved config flattened to
      ``{"loss.args.margin": 0.2, ...}`` (:func:`~omlcore.tracking.flatten_params`).
    - ``log_metrics(metrics, step)``: scalars at a step (the 0-based index of the last optimizer step, as
      Lightning logs them): ``train/loss`` and the loss's statistics (``train/<name>``) every few steps, and per
      epoch ``epoch``, ``train/loss_epoch`` and the flat validation metrics (``OVERALL/cmc/1`` ...).
    - ``finalize(status)``: the run ended (``"success"``, ``"failed"`` or ``"interrupted"``); write what is buffered,
      close the run.

    Optional (called where the logger has them):

    - ``log_image(key, image, step)``: an ``(H, W, 3)`` uint8 RGB array, e.g. a grid of the worst queries.
    - ``log_artifact(path)``: a file to keep with the run (the best checkpoint).
    - ``save()``: write what is buffered (called after every epoch).

    A method that raises does not stop training: the :class:`~omlcore.tracking.Tracker` warns once per logger.
    """

    def log_hyperparams(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def finalize(self, status: str) -> None: ...
