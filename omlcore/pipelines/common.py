"""What the three pipelines share: the run folder, seeding, data, the model and its weights, metric tables."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from omlcore.config import Config, ConfigError, build_component, load_config
from omlcore.config.schema import Pipeline
from omlcore.protocols import Runner

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINTS",
    "EXTRACTOR_CHECKPOINT",
    "RunFolder",
    "build_runner",
    "dataset_csv",
    "flat_scalars",
    "format_table",
    "load_extractor",
    "prepare",
    "seed_everything",
]

#: The sub-folder of a run that holds its checkpoints.
CHECKPOINTS = "checkpoints"
#: The weights-only checkpoint of the trained extractor that every training run writes to ``checkpoints/``.
EXTRACTOR_CHECKPOINT = "extractor.pt"
#: The extractor's weights after the best epoch by ``metric_for_checkpointing`` (same format as ``extractor.pt``).
BEST_CHECKPOINT = "best.pt"
ConfigSource = Config | str | os.PathLike[str] | Mapping[str, Any]


class RunFolder:
    """A run's own folder: ``config.yaml`` (resolved), ``log.txt`` (everything printed), metrics, checkpoints.

    In a distributed run every process runs the pipeline (the collective steps must match), but only the primary
    one (:meth:`Runner.is_primary <omlcore.protocols.Runner.is_primary>`) creates the folder, prints and writes;
    the others learn its path from the runner (:meth:`~omlcore.protocols.Runner.share_run_dir`).
    """

    def __init__(self, path: Path, config: Config, pipeline: Pipeline, runner: Runner) -> None:
        self.config = config
        self.primary = runner.is_primary()
        self.path = runner.share_run_dir(path)
        if self.primary:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.yaml").write_text(
                f"# omlcore {pipeline}: the resolved config of this run\n{config.to_yaml()}", encoding="utf-8"
            )

    @classmethod
    def create(cls, config: Config, pipeline: Pipeline, runner: Runner) -> RunFolder:
        """``<output_dir>/<run_name>``, default ``<pipeline>-<config name>-<date-time>`` (made unique)."""
        name = config["run_name"] or f"{pipeline}-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        base = Path(config["output_dir"]) / name
        path, number = base, 1
        while path.exists():
            path, number = base.with_name(f"{base.name}-{number}"), number + 1
        return cls(path, config, pipeline, runner)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def log(self, message: str = "") -> None:
        """Print ``message`` and append it to ``log.txt`` (the primary process only)."""
        if not self.primary:
            return
        tqdm.write(message)
        with (self.path / "log.txt").open("a", encoding="utf-8") as log:
            log.write(message + "\n")

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        if not self.primary:
            return path
        path.write_text(json.dumps(data, indent=2, default=_plain) + "\n", encoding="utf-8")
        return path

    def save_weights(self, name: str, module: nn.Module) -> Path:
        """``checkpoints/<name>``: the state dict of ``module`` (the primary process only)."""
        path = self.checkpoints / name
        if self.primary:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save(module.state_dict(), path)
        return path

    def write_records(self, stem: str, records: Sequence[Mapping[str, Any]]) -> None:
        """``<stem>.json`` and ``<stem>.csv`` with one row per record (columns: every key seen, in order)."""
        if not self.primary:
            return
        self.write_json(f"{stem}.json", list(records))
        columns = list(dict.fromkeys(key for record in records for key in record))
        with (self.path / f"{stem}.csv").open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)


def _plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def prepare(config: ConfigSource, overrides: Sequence[str], pipeline: Pipeline) -> tuple[Config, Runner]:
    """The validated config and its runner, before anything heavy (data, model) is touched."""
    if not isinstance(config, Config):
        config = load_config(config, overrides, pipeline=pipeline)
    elif overrides:
        config = load_config(config.data, overrides, pipeline=pipeline)
    return config, build_runner(config)


def build_runner(config: Config) -> Runner:
    runner = build_component("runner", config["runner"], "runner", source=_source(config))
    if not isinstance(runner, Runner):
        missing = [name for name in _RUNNER_METHODS if not callable(getattr(runner, name, None))]
        raise ConfigError(
            "runner.name",
            f"'{config['runner.name']}' is not a pipeline runner (omlcore.protocols.Runner): it lacks "
            f"{', '.join(missing) or 'epochs / checkpoint_name'}; use torch or lightning",
            _source(config),
        )
    return runner


_RUNNER_METHODS = ("fit", "evaluate", "inference", "is_primary", "share_run_dir", "extractor_weights")


def _source(config: Config) -> str | None:
    return str(config.source) if config.source is not None else None


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dataset_csv(config: Config) -> tuple[Path, Path | None]:
    """The dataset's CSV and root folder; a built-in dataset is materialised first."""
    if config["dataset.builtin"] == "glyphs":
        from omlcore.datasets import materialize_glyphs

        return materialize_glyphs() / "df.csv", None
    csv_path = Path(config["dataset.csv"])
    if not csv_path.is_file():
        raise ConfigError("dataset.csv", f"no such file: '{csv_path}'", _source(config))
    root = config["dataset.root"]
    return csv_path, Path(root) if root is not None else None


def load_extractor(config: Config, runner: Runner) -> nn.Module:
    """The extractor of the config, with the weights of ``checkpoint`` when set: a run folder (its
    ``checkpoints/extractor.pt``), a state dict file (``extractor.pt``, ``best.pt``) or a checkpoint of ``runner``."""
    model: nn.Module = build_component("extractor", config["extractor"], "extractor", source=_source(config))
    if config["checkpoint"] is not None:
        path = Path(config["checkpoint"])
        if path.is_dir():
            path = path / CHECKPOINTS / EXTRACTOR_CHECKPOINT
        if not path.is_file():
            raise ConfigError("checkpoint", f"no such file: '{path}'", _source(config))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = runner.extractor_weights(loaded) if isinstance(loaded, Mapping) else None
        if state is None:
            if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
                raise ConfigError(
                    "checkpoint",
                    f"'{path}' is neither a state dict nor a checkpoint of runner '{config['runner.name']}'; pass a "
                    f"run folder or its {CHECKPOINTS}/{EXTRACTOR_CHECKPOINT}, or the runner that wrote the file",
                    _source(config),
                )
            state = loaded
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ConfigError("checkpoint", f"'{path}' does not fit the extractor: {error}", _source(config)) from None
    return model


def flat_scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """The flat ``"OVERALL/cmc/1"``-style numbers of a metrics result."""
    scalars: dict[str, float] = {}
    for key, value in results.items():
        if "/" not in str(key):
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number or (isinstance(value, Tensor) and value.numel() == 1):
            scalars[str(key)] = float(value)
    return scalars


def format_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """A text table: one row per metric, one column per model (``{"untrained": {...}, "trained": {...}}``)."""
    names = list(dict.fromkeys(key for column in columns.values() for key in column))
    width = max([len("metric"), *map(len, names)])
    header = "metric".ljust(width) + "".join(f"  {title:>10}" for title in columns)
    lines = [header, "-" * len(header)]
    for name in names:
        cells = [column.get(name, math.nan) for column in columns.values()]
        lines.append(name.ljust(width) + "".join(f"  {value:>10.4f}" for value in cells))
    return "\n".join(lines)
