"""What the training pipelines (``train`` and ``train-reranker``) share around their epochs: the optimizer and
scheduler factories, the best-epoch checkpoint, the resumed run's epoch records and the checks made before a run
starts (the checkpointing metric is reported, the CSV has validation rows)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from omlcore.config import Config, ConfigError, build_component
from omlcore.datasets import ImageQueryGalleryDataset
from omlcore.keys import SPLIT_COLUMN, SPLIT_VALIDATION
from omlcore.pipelines.common import BEST_CHECKPOINT, CHECKPOINTS, RunFolder

__all__ = ["BestEpoch", "check_declared_metric", "component_factory", "has_validation_rows", "previous_history"]


def component_factory(kind: str, spec: Mapping[str, Any], source: str | None) -> Callable[[Any], Any]:
    """``first -> build_component(kind, spec, kind, first)``: the optimizer's and the scheduler's factories."""
    return lambda first: build_component(kind, spec, kind, first, source=source)


class BestEpoch:
    """Saves the extractor to ``checkpoints/best.pt`` after each epoch that is the best so far by a metric."""

    def __init__(self, config: Config, run: RunFolder, model: torch.nn.Module, source: str | None) -> None:
        self.key: str | None = config["metric_for_checkpointing"]
        self.larger_is_better = config["mode_for_checkpointing"] == "max"
        self.source = source
        self.run = run
        self.model = model

    def check(self, metrics: Mapping[str, float]) -> None:
        """A clear error if the validation does not report the metric (it names the ones it does report)."""
        _check_reported(self.key, metrics, self.source)

    def update(self, record: Mapping[str, float], earlier: Sequence[Mapping[str, float]]) -> None:
        """Save the weights if ``record`` beats every ``earlier`` epoch (NaN never does)."""
        if self.key is None:
            return
        self.check(record)  # in every process that has the record, so that a distributed run stops as one
        if not self.run.primary:
            return
        value = float(record[self.key])
        previous = [float(r[self.key]) for r in earlier if self.key in r and r[self.key] == r[self.key]]
        best_before = (max if self.larger_is_better else min)(previous, default=None)
        if value != value or (
            best_before is not None and (value <= best_before if self.larger_is_better else value >= best_before)
        ):
            return
        self.run.save_weights(BEST_CHECKPOINT, self.model)
        epoch = int(record["epoch"]) + 1
        self.run.log(f"best {self.key} so far ({value:.4f}, epoch {epoch}): {CHECKPOINTS}/{BEST_CHECKPOINT}")


def _check_reported(key: str | None, metrics: Mapping[str, Any], source: str | None) -> None:
    if key is not None and key not in metrics:
        names = ", ".join(name for name in metrics if name not in ("epoch", "loss") and "/" in name)
        raise ConfigError(
            "metric_for_checkpointing",
            f"the validation reports no metric '{key}'; it reports: {names}; or set it to null",
            source,
        )


def check_declared_metric(config: Config, metric: Any, dataset: ImageQueryGalleryDataset, source: str | None) -> None:
    """``metric_for_checkpointing`` against the names the metric declares (``metric_names``), before training."""
    names = getattr(metric, "metric_names", None)
    if callable(names):
        categories = [] if dataset.categories is None else [str(c) for c in dataset.categories.tolist()]
        _check_reported(config["metric_for_checkpointing"], dict.fromkeys(names(categories)), source)


def previous_history(folder: Path, source: str | None) -> list[dict[str, Any]]:
    """The epoch records of the run being resumed (``metrics.json``; none if it has none yet)."""
    path = folder / "metrics.json"
    if not path.is_file():
        return []
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(
            "resume",
            f"'{path}' is not valid JSON ({error}); it holds the records of the epochs done: restore it, or move it "
            "away to resume without the earlier epochs' records",
            source,
        ) from None
    if not isinstance(loaded, list):
        raise ConfigError(
            "resume", f"'{path}' does not hold a list of epoch records; restore it or move it away", source
        )
    return [dict(record) for record in loaded if isinstance(record, Mapping)]


def has_validation_rows(csv_path: Path) -> bool:
    """Whether the (already validated) dataset CSV has rows of the validation split."""
    split = pd.read_csv(csv_path, dtype=str, keep_default_na=False, usecols=[SPLIT_COLUMN])[SPLIT_COLUMN]
    return bool(split.eq(SPLIT_VALIDATION).any())
