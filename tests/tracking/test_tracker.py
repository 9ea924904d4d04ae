"""The Tracker: a failing logger warns once and the others get everything; optional methods are optional."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from omlcore.tracking import ExperimentLogger, Tracker, TrackingWarning, flatten_params


class Recorder:
    """Every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self.calls.append(("hyperparams", dict(params)))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.calls.append(("metrics", dict(metrics), step))

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self.calls.append(("image", key, image.shape, step))

    def finalize(self, status: str) -> None:
        self.calls.append(("finalize", status))


class BreaksAfter(Recorder):
    """Raises from the ``n``-th metrics call on, as a store that became unwritable."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if sum(call[0] == "metrics" for call in self.calls) >= self.n:
            raise OSError("[Errno 30] Read-only file system: 'store'")
        super().log_metrics(metrics, step)


def test_flatten_params_gives_dotted_keys_and_plain_values() -> None:
    config = {"seed": 0, "loss": {"name": "arcface", "args": {"m": 0.5, "miner": None}}, "k": [1, 5], "e": {}}
    assert flatten_params(config) == {
        "seed": 0,
        "loss.name": "arcface",
        "loss.args.m": 0.5,
        "loss.args.miner": "null",
        "k": "[1, 5]",
        "e": "{}",
    }


def test_a_failing_logger_warns_once_and_the_others_get_everything(caplog: pytest.LogCaptureFixture) -> None:
    good, broken = Recorder(), BreaksAfter(2)
    tracker = Tracker([broken, good])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    [warning] = caught
    assert warning.category is TrackingWarning
    assert "experiment logger BreaksAfter failed in log_metrics: OSError" in str(warning.message)
    assert "Training goes on" in str(warning.message)
    assert [call[2] for call in good.calls] == [0, 1, 2, 3, 4]
    assert [call[2] for call in broken.calls] == [0, 1]
    with caplog.at_level(logging.WARNING, logger="omlcore"):
        tracker.finalize("success")
    assert "experiment logger BreaksAfter: 3 call(s) failed during this run" in caplog.text
    assert good.calls[-1] == ("finalize", "success") == broken.calls[-1]


def test_optional_methods_and_non_finite_values() -> None:
    class LightningShaped:  # only the three required methods, as Lightning's loggers
        def __init__(self) -> None:
            self.metrics: list[dict[str, float]] = []

        def log_hyperparams(self, params: Mapping[str, Any]) -> None: ...

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            self.metrics.append(dict(metrics))

        def finalize(self, status: str) -> None: ...

    plain, recorder = LightningShaped(), Recorder()
    assert isinstance(plain, ExperimentLogger) and isinstance(recorder, ExperimentLogger)
    tracker = Tracker([plain, recorder])
    tracker.log_images({"worst_OVERALL_cmc_1": np.zeros((4, 6, 3), np.uint8)}, 2)
    tracker.log_artifact("best.pt")
    tracker.save()
    tracker.log_metrics({"train/loss": float("nan"), "OVERALL/cmc/1": 0.5}, 3)
    tracker.log_metrics({"train/loss": float("inf")}, 4)
    assert plain.metrics == [{"OVERALL/cmc/1": 0.5}]
    assert recorder.calls == [("image", "worst_OVERALL_cmc_1", (4, 6, 3), 2), ("metrics", {"OVERALL/cmc/1": 0.5}, 3)]
    assert not Tracker() and Tracker([plain])
