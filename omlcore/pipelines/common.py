"""What the three pipelines share: the run folder, seeding, data, the model and its weights, metric tables."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import pickle
import random
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from omlcore.config import Config, ConfigError, build_component, load_config
from omlcore.config.schema import Pipeline
from omlcore.postprocessing import build_postprocessor
from omlcore.protocols import Postprocessor, Runner

_log = logging.getLogger("omlcore.pipelines")

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINTS",
    "EXTRACTOR_CHECKPOINT",
    "RunFolder",
    "build_configured_postprocessor",
    "build_metric",
    "build_runner",
    "config_files",
    "dataset_csv",
    "flat_scalars",
    "format_table",
    "load_extractor",
    "prepare",
    "read_checkpoint",
    "seed_everything",
    "weights_sha256",
    "write_atomically",
]

#: The sub-folder of a run that holds its checkpoints.
CHECKPOINTS = "checkpoints"
#: The weights-only checkpoint of the trained extractor that every training run writes to ``checkpoints/``.
EXTRACTOR_CHECKPOINT = "extractor.pt"
#: The extractor's weights after the best epoch by ``metric_for_checkpointing`` (same format as ``extractor.pt``).
BEST_CHECKPOINT = "best.pt"
ConfigSource = Config | str | os.PathLike[str] | Mapping[str, Any]


def config_files(folder: Path) -> list[Path]:
    """A run folder's configs, oldest first: ``config.yaml``, then ``config.resume-1.yaml``, ... of its resumes."""
    resumes = {int(p.stem.rsplit("-", 1)[1]): p for p in folder.glob("config.resume-*.yaml") if p.stem[-1].isdigit()}
    first = folder / "config.yaml"
    return ([first] if first.is_file() else []) + [resumes[n] for n in sorted(resumes)]


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(temporary)`` next to ``path``, then rename it into place: a crash leaves the old file or the new one,
    never half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class RunFolder:
    """A run's own folder: ``config.yaml`` (resolved), ``log.txt`` (everything printed), metrics, checkpoints.

    Every file is written atomically (:func:`write_atomically`; ``log.txt`` is appended to). A resumed run keeps the
    run's ``config.yaml`` and records its own config as ``config.resume-<n>.yaml``. In a distributed run every
    process runs the pipeline (the collective steps must match), but only the primary one
    (:meth:`Runner.is_primary <omlcore.protocols.Runner.is_primary>`) creates the folder, prints and writes; the
    others learn its path from the runner (:meth:`~omlcore.protocols.Runner.share_run_dir`).
    """

    def __init__(self, path: Path, config: Config, pipeline: Pipeline, runner: Runner, *, resumed: bool) -> None:
        self.config = config
        self.primary = runner.is_primary()
        self.path = runner.share_run_dir(path)
        self.config_name = "config.yaml"
        if not self.primary:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                "output_dir", f"cannot create the run folder '{self.path}': {error.strerror or error}", _source(config)
            ) from None
        if resumed:
            self.config_name = f"config.resume-{len(config_files(self.path))}.yaml"
        header = f"# omlcore {pipeline}{' (resumed)' if resumed else ''}: the resolved config of this run\n"
        self.write_text(self.config_name, header + config.to_yaml())

    @classmethod
    def create(cls, config: Config, pipeline: Pipeline, runner: Runner) -> RunFolder:
        """``<output_dir>/<run_name>``, default ``<pipeline>-<config name>-<date-time>`` (made unique)."""
        output = Path(config["output_dir"])
        if output.exists() and not output.is_dir():
            raise ConfigError("output_dir", f"'{output}' is a file, not a folder; name a folder", _source(config))
        name = config["run_name"] or f"{pipeline}-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        base = output / name
        path, number = base, 1
        while path.exists():
            path, number = base.with_name(f"{base.name}-{number}"), number + 1
        return cls(path, config, pipeline, runner, resumed=False)

    @classmethod
    def resume(cls, path: Path, config: Config, pipeline: Pipeline, runner: Runner) -> RunFolder:
        """The existing run folder ``path``, continued (its files are kept; see :class:`RunFolder`)."""
        return cls(path, config, pipeline, runner, resumed=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def log(self, message: str = "") -> None:
        """Append ``message`` to ``log.txt`` and log it (logger ``omlcore.pipelines``, level INFO, which the CLI
        prints; quiet in a library), in the primary process only."""
        if not self.primary:
            return
        _log.info(message)
        with (self.path / "log.txt").open("a", encoding="utf-8") as log:
            log.write(message + "\n")

    def write_text(self, name: str, text: str) -> Path:
        """``<run>/<name>`` with ``text`` (the primary process only)."""
        path = self.path / name
        if self.primary:
            write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
        return path

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, default=_plain) + "\n")

    def write_csv(self, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        return self.write_text(name, buffer.getvalue())

    def save_weights(self, name: str, module: nn.Module) -> Path:
        """``checkpoints/<name>``: the state dict of ``module`` (the primary process only)."""
        path = self.checkpoints / name
        if self.primary:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda temporary: torch.save(module.state_dict(), temporary))
        return path

    def write_records(self, stem: str, records: Sequence[Mapping[str, Any]]) -> None:
        """``<stem>.json`` and ``<stem>.csv`` with one row per record (columns: every key seen, in order)."""
        self.write_json(f"{stem}.json", list(records))
        columns = list(dict.fromkeys(key for record in records for key in record))
        self.write_csv(f"{stem}.csv", columns, ([record.get(c, "") for c in columns] for record in records))


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


def build_metric(config: Config, dataset: Any = None) -> Any:
    """The config's ``metric``, with the config's ``postprocessor`` (if any) and the dataset it evaluates on (which
    learned postprocessors read)."""
    source = _source(config)
    metric = build_component("metric", config["metric"], "metric", source=source)
    postprocessor = build_configured_postprocessor(config)
    if postprocessor is not None:
        if not hasattr(metric, "postprocessor"):
            raise ConfigError(
                "postprocessor",
                f"the metric '{config['metric.name']}' takes no postprocessor; use embedding_metrics, or drop the key",
                source,
            )
        metric.postprocessor = postprocessor
    if hasattr(metric, "dataset") and dataset is not None:
        metric.dataset = dataset
    return metric


def build_configured_postprocessor(config: Config) -> Postprocessor | None:
    """The config's ``postprocessor`` (one, or a chain of a list), or None."""
    try:
        return build_postprocessor(config["postprocessor"])
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError("postprocessor", str(error), _source(config)) from None


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


def read_checkpoint(path: Path, what: str, source: str | None) -> Mapping[str, Any]:
    """``torch.load(path, weights_only=True)`` of a checkpoint, or a :class:`ConfigError` that names the file and
    what is wrong with it (empty, truncated, not a checkpoint)."""
    if path.stat().st_size == 0:
        raise ConfigError(what, f"'{path}' is empty (0 bytes): it is not a checkpoint", source)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            what, f"'{path}' cannot be read as a checkpoint (truncated or not a torch file: {reason})", source
        ) from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(what, f"'{path}' holds a {type(loaded).__name__}, not a checkpoint", source)
    return loaded


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
        loaded = read_checkpoint(path, "checkpoint", _source(config))
        state = runner.extractor_weights(loaded)
        if state is None:
            if not all(isinstance(v, Tensor) for v in loaded.values()):
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


def weights_sha256(model: nn.Module) -> str:
    """The SHA-256 of a model's weights: every entry of its state dict (name, shape, dtype, bytes), by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
