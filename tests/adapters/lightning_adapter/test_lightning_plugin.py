"""The ``lightning`` plugin registers Lightning callbacks and loggers that work in a real Trainer, and the runner."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import omlcore_lightning.plugin as lightning_plugin
from omlcore.config import resolve
from omlcore.errors import MissingDependencyError
from omlcore.plugins import registry_of
from omlcore.registry import Registry
from omlcore.utils.optional import is_available

lightning = pytest.importorskip("lightning")
from lightning.pytorch import callbacks as pl_callbacks  # noqa: E402
from lightning.pytorch import loggers as pl_loggers  # noqa: E402

CALLBACKS = ["EarlyStopping", "LearningRateMonitor", "ModelCheckpoint", "RichProgressBar", "TQDMProgressBar"]
LOGGERS = ["CSVLogger", "TensorBoardLogger"]
OWN = {
    "lightning.MetricValCallback": ("callback", "omlcore_lightning.callback:MetricValCallback"),
    "lightning": ("runner", "omlcore_lightning.runner:LightningRunner"),
}
HINT = 'pip install "omlcore[lightning]"'


def plugin_registry() -> Registry:
    return registry_of([("lightning", lightning_plugin)])


def test_hookimpls_match_the_hookspecs(hookimpl_counts: Callable[[object, str], dict[str, int]]) -> None:
    hooks = {"register_callbacks": 1, "register_loggers": 1, "register_runners": 1}
    assert hookimpl_counts(lightning_plugin, "lightning") == hooks


def test_registers_callbacks_and_loggers() -> None:
    registry = plugin_registry()
    assert registry.names("callback") == sorted(
        [f"lightning.{name}" for name in CALLBACKS] + ["lightning.MetricValCallback"]
    )
    assert registry.names("logger") == [f"lightning.{name}" for name in LOGGERS]
    assert registry.get("callback", "lightning.MetricValCallback").load().__name__ == "MetricValCallback"
    assert registry.names("runner") == ["lightning"]
    assert registry.get("runner", "lightning").load().__name__ == "LightningRunner"
    assert len(registry) == len(CALLBACKS) + len(LOGGERS) + len(OWN)
    for entry in registry:
        if entry.name in OWN:
            assert (entry.kind, entry.target) == OWN[entry.name]
        else:
            module = "callbacks" if entry.kind == "callback" else "loggers"
            assert entry.target == f"lightning.pytorch.{module}:{entry.name.removeprefix('lightning.')}"
        if entry.kind == "runner":  # no requires: configs naming it stay valid; building it names the extra
            assert entry.requires == () and HINT.split()[-1].strip('"') in entry.summary
            continue
        assert entry.requires[0] == "lightning"
        assert entry.extra == "lightning"
        assert entry.plugin == "lightning"
        assert entry.summary and "\n" not in entry.summary


@pytest.mark.parametrize("name", CALLBACKS + LOGGERS)
def test_targets_are_the_lightning_classes(name: str) -> None:
    entry = plugin_registry().get("callback" if name in CALLBACKS else "logger", f"lightning.{name}")
    expected = getattr(pl_callbacks if name in CALLBACKS else pl_loggers, name)
    if entry.available:
        assert entry.load() is expected
    else:
        with pytest.raises(MissingDependencyError, match=HINT.replace("[", r"\[").replace("]", r"\]")):
            entry.load()


def test_extra_requirements_follow_lightning() -> None:
    """RichProgressBar needs rich, TensorBoardLogger tensorboardX: both raise in Lightning itself when missing."""
    registry = plugin_registry()
    rich = registry.get("callback", "lightning.RichProgressBar")
    tensorboard = registry.get("logger", "lightning.TensorBoardLogger")
    assert rich.requires == ("lightning", "rich")
    assert tensorboard.requires == ("lightning", "tensorboardX")
    assert rich.available == is_available("rich")
    assert tensorboard.available == is_available("tensorboardX")
    if not is_available("rich"):  # Lightning's own class refuses to work without it
        with pytest.raises(ModuleNotFoundError, match="rich"):
            pl_callbacks.RichProgressBar()
        assert rich.unavailable_reason == f"needs rich, not installed: {HINT}"
    if not is_available("tensorboardX") and not is_available("tensorboard"):
        with pytest.raises(ModuleNotFoundError, match="tensorboardX"):
            pl_loggers.TensorBoardLogger(save_dir=".")
    if not tensorboard.available:
        assert tensorboard.unavailable_reason == f"needs tensorboardX, not installed: {HINT}"


def test_tensorboard_logger_and_rich_progress_bar_when_installed(tmp_path: Path) -> None:
    registry = plugin_registry()
    tensorboard = registry.get("logger", "lightning.TensorBoardLogger")
    rich = registry.get("callback", "lightning.RichProgressBar")
    if not (tensorboard.available and rich.available):
        pytest.skip("needs tensorboardX and rich")
    logger = tensorboard.build(save_dir=tmp_path, name="toy")
    assert type(logger) is pl_loggers.TensorBoardLogger
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert type(rich.build(refresh_rate=2)) is pl_callbacks.RichProgressBar


def test_builds_other_callbacks() -> None:
    registry = plugin_registry()
    early = registry.build("callback", "lightning.EarlyStopping", monitor="val_loss", patience=2)
    assert type(early) is pl_callbacks.EarlyStopping and early.patience == 2
    assert type(registry.build("callback", "lightning.LearningRateMonitor")) is pl_callbacks.LearningRateMonitor
    bar = resolve("callback", {"name": "lightning.TQDMProgressBar", "args": {"refresh_rate": 5}})
    assert type(bar) is pl_callbacks.TQDMProgressBar and bar.refresh_rate == 5
    with pytest.raises(TypeError, match="patiense") as error:
        registry.build("callback", "lightning.EarlyStopping", monitor="val_loss", patiense=2)
    accepted = ", ".join(inspect.signature(pl_callbacks.EarlyStopping).parameters)
    assert f"Accepted arguments: {accepted}" in str(error.value)


class ToyModule(lightning.pytorch.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader[tuple[torch.Tensor, ...]]:
        generator = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(
            torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)
        )
        return torch.utils.data.DataLoader(data, batch_size=4)


def test_csv_logger_and_checkpoint_in_a_real_trainer(tmp_path: Path) -> None:
    registry = plugin_registry()
    logger = registry.build("logger", "lightning.CSVLogger", save_dir=tmp_path, name="toy")
    checkpoint = registry.build(
        "callback", "lightning.ModelCheckpoint", dirpath=tmp_path / "checkpoints", save_last=True
    )
    assert type(logger) is pl_loggers.CSVLogger
    assert type(checkpoint) is pl_callbacks.ModelCheckpoint

    trainer = lightning.pytorch.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[checkpoint],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(ToyModule())

    assert trainer.global_step == 3
    metrics = Path(logger.log_dir) / "metrics.csv"
    assert metrics.is_file()
    header, *rows = metrics.read_text().splitlines()
    assert "train_loss" in header.split(",") and len(rows) == 3
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert checkpoint.best_model_path and Path(checkpoint.best_model_path).is_file()
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    assert state["global_step"] == 3 and "layer.weight" in state["state_dict"]


def test_registering_and_listing_imports_no_framework(plugin_entries: Callable[..., Any]) -> None:
    result = plugin_entries("omlcore_lightning.plugin", "lightning")
    assert len(result["entries"]) == len(CALLBACKS) + len(LOGGERS) + len(OWN) and result["heavy"] == []


def test_without_lightning_entries_are_unavailable_with_the_install_hint(plugin_entries: Callable[..., Any]) -> None:
    result = plugin_entries("omlcore_lightning.plugin", "lightning", hidden=("lightning",), build=True)["entries"]
    assert sorted(result) == sorted([f"lightning.{name}" for name in CALLBACKS + LOGGERS] + list(OWN))
    runner = result.pop("lightning")
    assert runner["available"] is True and HINT in runner["error"]  # listed, and building it names the extra
    for name, entry in result.items():
        assert entry["available"] is False, name
        assert HINT in entry["reason"] and "lightning" in entry["reason"]
        assert entry["error"] is not None and HINT in entry["error"] and name in entry["error"]
