"""omlcore_torch.fit's callbacks (early stopping, top-k checkpoints, learning-rate monitor, freeze schedule) and its
logging, on a tiny linear model; a logger whose store fails mid-run warns once and training goes on."""

from __future__ import annotations

import shutil
import sqlite3
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from omlcore.losses import TripletLossWithMiner
from omlcore.miners import AllTripletsMiner
from omlcore.samplers import BalanceSampler
from omlcore.tracking import TrackingWarning
from omlcore_torch import fit, load_checkpoint
from omlcore_torch.callbacks import (
    Callback,
    EarlyStopping,
    FitState,
    FreezeBackbone,
    LearningRateMonitor,
    TopKCheckpoints,
)

from .test_tracker import Recorder


class Tiny(nn.Module):
    """A backbone (``extractor``) and a head (``mlp``)."""

    def __init__(self) -> None:
        super().__init__()
        self.extractor = nn.Linear(6, 8)
        self.mlp = nn.Linear(8, 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.relu(self.extractor(images)))  # type: ignore[no-any-return]


def setup(model: nn.Module | None = None) -> dict[str, Any]:
    """3 steps per epoch over 6 labels of 4 random vectors."""
    torch.manual_seed(0)
    labels = [label for label in range(6) for _ in range(4)]
    data = [{"images": torch.randn(6), "labels": label} for label in labels]
    model = model if model is not None else Tiny()
    return {
        "model": model,
        "loss": TripletLossWithMiner(margin=0.5, miner=AllTripletsMiner()),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "train_loader": DataLoader(data, batch_sampler=BalanceSampler(labels, 2, 4, seed=1)),  # type: ignore[arg-type]
        "progress": False,
    }


class Scripted:
    """A metric accumulator whose validation ``score`` follows a script, one value per validation."""

    def __init__(self, scores: Sequence[float]) -> None:
        self.state_reductions: dict[str, str] = {}
        self.scores = list(scores)
        self.validations = 0

    def update(self, batch: Mapping[str, Any]) -> None: ...

    def reset(self) -> None: ...

    def get_state(self) -> dict[str, torch.Tensor]:
        return {}

    def merge_state(self, states: Sequence[Mapping[str, torch.Tensor]]) -> None: ...

    def compute(self) -> dict[str, Any]:
        self.validations += 1
        return {"score": self.scores[self.validations - 1]}


def scored(scores: Sequence[float], start: int = 0) -> dict[str, Any]:
    """``fit`` arguments that validate with :class:`Scripted` (from epoch ``start``: a resumed run)."""
    items = [{"images": torch.randn(6), "labels": 0, "is_query": True, "is_gallery": True} for _ in range(2)]
    return {"val_dataset": items, "metrics": Scripted(scores[start:])}


class Keep(Callback):
    """Copies ``last.pt`` after epoch ``epoch`` (a run to resume from)."""

    def __init__(self, epoch: int, to: Path) -> None:
        self.epoch, self.to = epoch, to

    def on_checkpoint(self, state: FitState, path: Path) -> None:
        if state.epoch == self.epoch:
            shutil.copyfile(path, self.to)


def test_early_stopping_after_patience_epochs_also_when_resumed(tmp_path: Path) -> None:
    scores = [0.1, 0.5, 0.4, 0.45, 0.9, 0.9, 0.9, 0.9]  # best at epoch 1; 2 and 3 do not improve on it
    cut = tmp_path / "cut.pt"
    history = fit(
        **setup(),
        **scored(scores),
        epochs=8,
        checkpoint_dir=tmp_path,
        callbacks=[EarlyStopping("score", patience=2), Keep(2, cut)],
    )
    assert [record["epoch"] for record in history] == [0, 1, 2, 3]
    resumed = fit(**setup(), **scored(scores, 3), epochs=8, resume=cut, callbacks=[EarlyStopping("score", patience=2)])
    assert [record["epoch"] for record in resumed] == [0, 1, 2, 3]
    assert (
        EarlyStopping("score", mode="min", patience=1, min_delta=0.2).epochs_without_improvement(
            [
                {"epoch": -1, "score": 0.0},
                {"epoch": 0, "score": 1.0},
                {"epoch": 1, "score": 0.85},
                {"epoch": 2, "score": 0.7},
                {"epoch": 3, "score": 0.6},
            ]
        )
        == 1
    )  # 0.85 is no improvement by more than 0.2 on 1.0, 0.7 is, 0.6 is not; the untrained record does not count


def test_a_missing_monitor_names_what_the_records_have() -> None:
    with pytest.raises(ValueError, match=r"early_stopping: the epoch's record has no 'OVERALL/cmc/1'; it has: loss"):
        fit(**setup(), epochs=1, callbacks=[EarlyStopping()])


def test_top_k_checkpoints_keep_the_best_epochs(tmp_path: Path) -> None:
    scores = [0.2, 0.8, 0.5, 0.9, 0.1]
    fit(**setup(), **scored(scores), epochs=5, checkpoint_dir=tmp_path, callbacks=[TopKCheckpoints(2, "score")])
    kept = sorted(p.name for p in (tmp_path / "top_k").iterdir())
    assert kept == ["epoch=001.pt", "epoch=003.pt"]
    for name, epoch in zip(kept, (1, 3), strict=True):
        checkpoint = load_checkpoint(tmp_path / "top_k" / name)
        assert checkpoint["epoch"] == epoch + 1 and checkpoint["history"][-1]["score"] == scores[epoch]
    fit(
        **setup(),
        **scored(scores),
        epochs=2,
        checkpoint_dir=tmp_path / "min",
        callbacks=[TopKCheckpoints(1, "score", "min")],
    )
    assert [p.name for p in (tmp_path / "min" / "top_k").iterdir()] == ["epoch=000.pt"]


def test_freeze_backbone_trains_the_head_first_then_everything() -> None:
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshot(Callback):
        def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
            snapshots.append({k: v.clone() for k, v in state.model.state_dict().items()})

    args = setup()
    before = {k: v.clone() for k, v in args["model"].state_dict().items()}
    fit(**args, epochs=2, callbacks=[FreezeBackbone(epochs=1), Snapshot()])
    frozen, free = snapshots
    for key in ("extractor.weight", "extractor.bias"):
        assert torch.equal(frozen[key], before[key]) and not torch.equal(free[key], frozen[key])
    assert not torch.equal(frozen["mlp.weight"], before["mlp.weight"])  # (a last bias gets no gradient: distances)
    assert all(p.requires_grad for p in args["model"].parameters())  # unfrozen after training

    plain = setup(nn.Linear(6, 4))  # no head outside the backbone, a loss without weights
    with pytest.raises(ValueError, match="freeze_backbone: with the backbone frozen nothing trains"):
        fit(**plain, epochs=1, callbacks=[FreezeBackbone()])
    with pytest.raises(
        ValueError, match="freeze_backbone: the model has no module 'trunk'; its children are: extractor"
    ):
        fit(**setup(), epochs=1, callbacks=[FreezeBackbone(module="trunk")])


def test_fit_logs_steps_epochs_and_learning_rates() -> None:
    recorder = Recorder()
    fit(**setup(), epochs=2, loggers=[recorder], log_every_n_steps=2, callbacks=[LearningRateMonitor("step")])
    kinds = {"train/loss": "step", "lr-SGD": "lr", "epoch": "epoch"}
    logged = [(call[2], next(kind for key, kind in kinds.items() if key in call[1])) for call in recorder.calls]
    assert logged == [
        (1, "step"),
        (1, "lr"),
        (2, "epoch"),
        (3, "step"),
        (3, "lr"),
        (5, "step"),
        (5, "lr"),
        (5, "epoch"),
    ]
    statistics = {f"train/{name}" for name in ("pos_dist", "neg_dist", "active_tri", "num_triplets")}
    assert set(recorder.calls[0][1]) == {"train/loss", *statistics}
    assert set(recorder.calls[2][1]) == {"epoch", "train/loss_epoch"}
    assert recorder.calls[1][1] == {"lr-SGD": 0.1}
    epochs = LearningRateMonitor("epoch")
    recorder = Recorder()
    fit(**setup(), epochs=1, loggers=[recorder], callbacks=[epochs])
    assert [call[1] for call in recorder.calls] == [
        {"epoch": 0, "train/loss_epoch": pytest.approx(0.5, abs=0.5)},
        {"lr-SGD": 0.1},
    ]


def test_a_store_that_fails_mid_run_warns_once_and_training_goes_on(
    tmp_path: Path, mlflow_store: Mapping[str, str]
) -> None:
    """The CSV logger's folder becomes a file after epoch 0; the MLflow database is locked by another process for
    epoch 1 and released after it: one warning each, every epoch trained, and MLflow's buffered scalars of epoch 1 are
    written with epoch 2's."""
    from mlflow.tracking import MlflowClient

    from omlcore_torch.loggers import CSVLogger, MLflowLogger

    csv_logger = CSVLogger(tmp_path)
    mlflow = MLflowLogger(tmp_path / "failing", experiment_name="failing", **mlflow_store)
    database = mlflow_store["tracking_uri"].removeprefix("sqlite:///")
    lock: list[sqlite3.Connection] = []

    class BreakStores(Callback):
        def on_epoch_start(self, state: FitState) -> None:
            if state.epoch == 1:
                shutil.rmtree(csv_logger.folder)
                csv_logger.folder.write_text("not a folder any more")
                lock.append(sqlite3.connect(database, timeout=0, isolation_level=None))
                lock[0].execute("BEGIN EXCLUSIVE")
            if state.epoch == 2:
                lock[0].execute("ROLLBACK")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(**setup(), epochs=3, loggers=[csv_logger, mlflow], callbacks=[BreakStores()])
        mlflow.finalize("success")
    assert [record["epoch"] for record in history] == [0, 1, 2]
    tracking = [str(w.message) for w in caught if w.category is TrackingWarning]
    assert len(tracking) == 2, tracking
    assert "experiment logger csv failed in save: NotADirectoryError" in tracking[0]
    assert "experiment logger mlflow failed in save" in tracking[1] and "locked" in tracking[1]
    epochs = MlflowClient(mlflow_store["tracking_uri"]).get_metric_history(mlflow.run_id, "epoch")
    assert sorted(m.value for m in epochs) == [0, 1, 2]  # nothing lost
