"""A run's experiment loggers (the config's ``logger``) and training callbacks (``callbacks``), built for the runner."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from omlcore.config import Config, ConfigError, build_component
from omlcore.pipelines.common import RunFolder
from omlcore.protocols import Runner
from omlcore.tracking import Tracker, TrackingWarning, flatten_params

__all__ = ["build_callbacks", "finalizing", "open_tracker"]


def _specs(config: Config, key: str) -> list[tuple[str, dict[str, Any]]]:
    """``(config path, spec)`` of each component of a key that holds one, a list, or null."""
    value = config[key]
    if value is None:
        return []
    if isinstance(value, dict):
        return [(key, value)]
    return [(f"{key}[{position}]", spec) for position, spec in enumerate(value)]


def _source(config: Config) -> str | None:
    return str(config.source) if config.source is not None else None


def build_callbacks(config: Config, runner: Runner) -> list[Any]:
    """The config's ``callbacks``, checked against the runner (``check_callbacks``) before any run folder exists."""
    source = _source(config)
    callbacks = [build_component("callback", spec, path, source=source) for path, spec in _specs(config, "callbacks")]
    check = getattr(runner, "check_callbacks", None)
    if callable(check):
        try:
            check(callbacks)
        except TypeError as error:
            raise ConfigError("callbacks", str(error), source) from None
    return callbacks


def open_tracker(config: Config, run: RunFolder) -> Tracker:
    """The config's loggers, built in the primary process only (the others get an empty tracker), each given the run
    folder; the resolved config is logged as hyperparameters. A logger that cannot start (its server cannot be
    reached ...) is a :class:`~omlcore.tracking.TrackingWarning`, and the run goes on without it."""
    if not run.primary:
        return Tracker()
    loggers = []
    for path, spec in _specs(config, "logger"):
        try:
            loggers.append(build_component("logger", spec, path, run.path, source=_source(config)))
        except Exception as error:  # whatever a tool raises when it cannot start: the run itself goes on
            warnings.warn(
                f"{path}: the logger '{spec['name']}' could not start ({error}); the run goes on without it",
                TrackingWarning,
                stacklevel=2,
            )
    tracker = Tracker(loggers)
    tracker.log_hyperparams(flatten_params(config.data))
    return tracker


@contextlib.contextmanager
def finalizing(tracker: Tracker) -> Iterator[Tracker]:
    """Finalize the loggers when the block ends: ``success``, ``interrupted`` (Ctrl-C) or ``failed``."""
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.finalize("interrupted")
        raise
    except BaseException:
        tracker.finalize("failed")
        raise
    tracker.finalize("success")
