"""``resume: <run folder or checkpoint>``: what a training run continues from, checked before anything changes.

A resumed run continues with the settings it was trained with: the keys in :data:`FIXED_ON_RESUME` (and the
runner's arguments except :data:`RUNNER_ARGS_FREE_ON_RESUME`) must equal those of the run's ``config.yaml``. To
train with other settings from a run's weights, start a fresh run with ``checkpoint=<run folder>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor, nn

from omlcore.config import Config, ConfigError
from omlcore.errors import OmlcoreError
from omlcore.models.base import load_state_dict_strictly
from omlcore.pipelines.common import CHECKPOINTS, config_files, read_checkpoint
from omlcore.protocols import Runner

__all__ = ["FIXED_ON_RESUME", "RUNNER_ARGS_FREE_ON_RESUME", "Resume", "find_resume"]

#: Config keys that shape training and so cannot change when a run is resumed.
FIXED_ON_RESUME: tuple[str, ...] = (
    "seed",
    "checkpoint",
    "dataset.builtin",
    "dataset.csv",
    "dataset.root",
    "transforms_train",
    "extractor",
    "sampler",
    "loss",
    "optimizer",
    "scheduler",
    "runner.name",
)
#: The runner's arguments that may change when a run is resumed (more epochs, progress bars, logging).
RUNNER_ARGS_FREE_ON_RESUME: tuple[str, ...] = ("epochs", "progress", "log_every_n_steps")


@dataclass
class Resume:
    """A checked resume target.

    Attributes:
        folder: the run folder to continue in (None when ``resume`` names a checkpoint file: a new folder).
        checkpoint: the runner's resumable checkpoint; weights: the extractor's state dict inside it.
        epochs_done: the epochs it has trained.
    """

    folder: Path | None
    checkpoint: Path
    weights: Mapping[str, Tensor]
    epochs_done: int

    def check_fits(self, model: nn.Module, source: str | None) -> None:
        """Load the checkpoint's weights into ``model``, or say why the config's extractor does not fit them."""
        try:
            load_state_dict_strictly(model, self.weights, f"'{self.checkpoint}'")
        except OmlcoreError as error:
            fix = (
                f"resume with the run's own config: omlcore train {config_files(self.folder)[-1]} resume={self.folder}"
                if self.folder is not None
                else "use the extractor the checkpoint was trained with"
            )
            raise ConfigError(
                "resume",
                f"{error}. The config's extractor is not the one the run trained (e.g. another feat_dim); {fix}",
                source,
            ) from None


def find_resume(config: Config, runner: Runner) -> Resume | None:
    """The checked target of ``config["resume"]`` (None without one).

    Raises:
        ConfigError: no such folder or file; a folder without the runner's checkpoint; a file that is not a
            checkpoint of the runner (empty, truncated, of another runner); a run that has already trained
            ``runner.epochs`` epochs or more; settings that differ from the run's.
    """
    resume = config["resume"]
    if resume is None:
        return None
    source = str(config.source) if config.source else None
    path = Path(resume)
    folder: Path | None = None
    if path.is_dir():
        folder, path = path, path / CHECKPOINTS / runner.checkpoint_name
        if not path.is_file():
            raise ConfigError(
                "resume", f"the run folder '{folder}' has no '{CHECKPOINTS}/{runner.checkpoint_name}' to resume", source
            )
    elif not path.is_file():
        raise ConfigError("resume", f"'{path}' is neither a run folder nor a checkpoint file", source)
    state = read_checkpoint(path, "resume", source)
    weights, done = runner.extractor_weights(state), runner.trained_epochs(state)
    if weights is None or done is None:
        raise ConfigError(
            "resume",
            f"'{path}' is not a resumable checkpoint of runner '{config['runner.name']}' "
            f"({runner.checkpoint_name}); resume with the runner that wrote it",
            source,
        )
    if done >= runner.epochs:
        raise ConfigError(
            "runner.args.epochs",
            f"the run in '{folder or path}' has trained {done} epoch(s), so epochs={runner.epochs} leaves nothing to "
            f"train (resuming would only overwrite its results); set runner.args.epochs above {done} to train "
            f"further, or validate it: omlcore validate CONFIG checkpoint={folder or path}",
            source,
        )
    if folder is not None:
        _check_unchanged(config, folder, source)
    return Resume(folder, path, weights, done)


def _check_unchanged(config: Config, folder: Path, source: str | None) -> None:
    recorded = config_files(folder)[-1] if config_files(folder) else None
    if recorded is None:
        raise ConfigError("resume", f"the run folder '{folder}' has no config.yaml: is it a run folder?", source)
    try:
        before = yaml.safe_load(recorded.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError("resume", f"'{recorded}' is not valid YAML ({error}); restore it", source) from None
    if not isinstance(before, Mapping):
        raise ConfigError("resume", f"'{recorded}' does not hold a config; restore it", source)
    runner_args_before, runner_args_now = dict(_get(before, "runner.args") or {}), dict(config["runner.args"] or {})
    for free in RUNNER_ARGS_FREE_ON_RESUME:
        runner_args_before.pop(free, None)
        runner_args_now.pop(free, None)
    pairs = [(key, _get(before, key), config[key]) for key in FIXED_ON_RESUME]
    pairs.append(("runner.args", runner_args_before, runner_args_now))
    for key, then, now in pairs:
        difference = _first_difference(key, then, now)
        if difference is not None:
            where, old, new = difference
            raise ConfigError(
                where,
                f"the run in '{folder}' was trained with {where}={_show(old)}, the config asks {_show(new)}; a resumed "
                f"run continues with its own settings: resume with them (omlcore train {recorded} resume={folder}), "
                f"or start a fresh run from its weights with the new settings (checkpoint={folder}, no resume)",
                source,
            )


def _get(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _first_difference(path: str, then: Any, now: Any) -> tuple[str, Any, Any] | None:
    """The first dotted path where two YAML values differ, with both values (None: equal)."""
    if isinstance(then, Mapping) and isinstance(now, Mapping):
        for key in dict.fromkeys([*then, *now]):
            found = _first_difference(f"{path}.{key}", then.get(key), now.get(key))
            if found is not None:
                return found
        return None
    if isinstance(then, list | tuple) and isinstance(now, list | tuple) and len(then) == len(now):
        for index, (a, b) in enumerate(zip(then, now, strict=True)):
            found = _first_difference(f"{path}[{index}]", a, b)
            if found is not None:
                return found
        return None
    same = (then == now and type(then) is type(now)) or (_is_number(then) and _is_number(now) and then == now)
    return None if same else (path, then, now)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if value is None:
        return "(not set)"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
