"""The :class:`Tracker`: one run's loggers behind one object, each failure of a logger warned about once."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from omlcore.tracking.protocol import ExperimentLogger, RunStatus

__all__ = ["Tracker", "TrackingWarning", "as_tracker", "flatten_params"]

_log = logging.getLogger(__name__)


class TrackingWarning(UserWarning):
    """An experiment logger failed; training goes on, the run folder keeps everything."""


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; values that are not numbers, strings or booleans (lists, None)
    become their text: what every tracking tool accepts as a hyperparameter.

    >>> flatten_params({"loss": {"name": "arcface", "args": {"m": 0.5}}, "k": [1, 5], "x": None})
    {'loss.name': 'arcface', 'loss.args.m': 0.5, 'k': '[1, 5]', 'x': 'null'}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def _describe(logger: object) -> str:
    return getattr(logger, "display_name", None) or type(logger).__name__


class Tracker:
    """Calls every logger in turn; a call that raises is caught, so that one broken logger never stops a run.

    The first failure of each logger is a :class:`TrackingWarning` (shown when it happens); later failures of the same
    logger are counted, and :meth:`finalize` reports the count. A logger that fails keeps being called, so that it
    resumes if its store comes back. ``bool(tracker)`` says whether it has loggers.

    Args:
        loggers: :class:`~omlcore.tracking.ExperimentLogger` objects (empty in the processes that do not log).
    """

    def __init__(self, loggers: Iterable[ExperimentLogger] = ()) -> None:
        self.loggers: list[ExperimentLogger] = list(loggers)
        self.failures: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def call(self, logger: object, function: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """``function(*args, **kwargs)`` for ``logger``; False (and a warning the first time) when it raises."""
        try:
            function(*args, **kwargs)
        except Exception as error:  # a logger's failure must never end the run
            count = self.failures.get(id(logger), 0) + 1
            self.failures[id(logger)] = count
            name = getattr(function, "__name__", "a call")
            if count == 1:
                warnings.warn(
                    f"experiment logger {_describe(logger)} failed in {name}: {type(error).__name__}: {error}. "
                    "Training goes on (the run folder keeps every record); its later failures are counted, not shown.",
                    TrackingWarning,
                    stacklevel=3,
                )
            else:
                _log.debug("experiment logger %s failed again in %s: %s", _describe(logger), name, error)
            return False
        return True

    def _each(self, method: str, *args: Any) -> None:
        for logger in self.loggers:
            function = getattr(logger, method, None)
            if callable(function):
                self.call(logger, function, *args)

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._each("log_hyperparams", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Finite values only: a NaN or infinite loss (a batch without tuples) is left out."""
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if finite:
            self._each("log_metrics", finite, step)

    def log_images(self, images: Mapping[str, Any], step: int) -> None:
        """``key -> (H, W, 3)`` uint8 arrays, to the loggers that take images."""
        for key, image in images.items():
            self._each("log_image", key, image, step)

    def log_artifact(self, path: Any) -> None:
        self._each("log_artifact", path)

    def save(self) -> None:
        self._each("save")

    def finalize(self, status: RunStatus) -> None:
        """Finalize every logger; say how many calls of each failing logger failed."""
        self._each("finalize", status)
        for logger in self.loggers:
            count = self.failures.get(id(logger), 0)
            if count:
                _log.warning("experiment logger %s: %d call(s) failed during this run", _describe(logger), count)


def as_tracker(tracker: Tracker | Sequence[ExperimentLogger] | None) -> Tracker:
    """A :class:`Tracker` for what a caller passed: a tracker, loggers, or None."""
    if isinstance(tracker, Tracker):
        return tracker
    return Tracker(tracker or ())
