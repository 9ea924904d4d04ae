"""Experiment tracking: the :class:`ExperimentLogger` contract and the :class:`Tracker` that fans a run's events out.

A run's events, and who sends them:

- the resolved config as hyperparameters, the retrieval grids as images and the best checkpoint as an artifact: the
  pipelines (``omlcore train / validate``), through a :class:`Tracker`;
- the loss and its statistics per step and the metrics per epoch: the runner that trains (``omlcore_torch.fit`` logs
  into the tracker; the Lightning runner hands Lightning's own loggers, attached to the same runs, to its Trainer).

Loggers are registered as kind ``logger`` (``csv``, ``tensorboard``, ``mlflow``, ``wandb`` ...; ``omlcore plugins
--kind logger``) and chosen by the config's ``logger`` key. Only the primary process of a distributed run logs.
"""

from __future__ import annotations

from omlcore.tracking.protocol import ExperimentLogger, RunStatus
from omlcore.tracking.tracker import Tracker, TrackingWarning, as_tracker, flatten_params

__all__ = ["ExperimentLogger", "RunStatus", "Tracker", "TrackingWarning", "as_tracker", "flatten_params"]
