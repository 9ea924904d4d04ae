"""omlcore_torch.fit / inference / evaluate on a tiny generated image dataset with SmallCNN, in one process."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import omlcore_torch.training as training
from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.keys import EMBEDDINGS, IS_GALLERY, IS_QUERY, LABELS
from omlcore.losses import ArcFaceLoss, TripletLossWithMiner
from omlcore.metrics import EmbeddingMetrics
from omlcore.miners import AllTripletsMiner
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_torch import IncompatibleComponentError, evaluate, fit, inference, load_checkpoint
from omlcore_torch.callbacks import Callback, FitState

TRANSFORM = {"name": "resize_normalize", "args": {"size": 32}}
AUGMENT = {"name": "train_augmentations", "args": {"size": 32, "scale": (0.5, 1.0)}}


def datasets(root: Path, train_transform: Any = TRANSFORM) -> tuple[ImageLabeledDataset, ImageQueryGalleryDataset]:
    df = pd.read_csv(root / "df.csv")
    return (
        ImageLabeledDataset(df, dataset_root=root, transform=train_transform),
        ImageQueryGalleryDataset(df, dataset_root=root, transform=TRANSFORM),
    )


def setup(train: ImageLabeledDataset, seed: int = 0) -> dict[str, Any]:
    """A model, a loss whose miner samples (torch RNG), Adam, a scheduler and a loader over omlcore's sampler."""
    torch.manual_seed(seed)
    model = SmallCNN(feat_dim=16, widths=(8, 16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return {
        "model": model,
        "loss": TripletLossWithMiner(margin=0.5, miner=AllTripletsMiner(max_output_triplets=40)),
        "optimizer": optimizer,
        "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5),
        "train_loader": DataLoader(train, batch_sampler=BalanceSampler(train.get_labels(), 2, 4, seed=3)),
    }


def metrics() -> EmbeddingMetrics:
    return EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(3,), map_top_k=(3,))


def timeless(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The records without ``epoch_time_s``, the wall time, which differs between equal runs."""
    return [{k: v for k, v in record.items() if k != "epoch_time_s"} for record in history]


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in model.state_dict().values()])


def test_a_resumed_run_reproduces_the_uninterrupted_one(toy_root: Path, tmp_path: Path) -> None:
    train, val = datasets(toy_root, AUGMENT)  # random crops, flips and jitter: the RNG streams matter
    common = {"val_dataset": val, "metrics": metrics(), "val_batch_size": 8, "progress": False}
    straight = setup(train)
    expected = fit(**straight, epochs=3, checkpoint_dir=tmp_path / "straight", **common)

    first = setup(train)
    fit(**first, epochs=2, checkpoint_dir=tmp_path / "resumed", **common)
    torch.manual_seed(1234)  # whatever happens between the runs
    random.seed(5)
    np.random.seed(5)
    resumed = setup(train, seed=99)  # fresh objects, other weights: everything comes from the checkpoint
    history = fit(**resumed, epochs=3, resume=tmp_path / "resumed" / "last.pt", **common)

    assert timeless(history) == timeless(expected)  # losses, statistics, learning rates, metrics: to the last bit
    assert torch.equal(weights(resumed["model"]), weights(straight["model"]))
    assert resumed["scheduler"].get_last_lr() == straight["scheduler"].get_last_lr() == [1e-2 / 8]
    state, reference = resumed["optimizer"].state_dict()["state"], straight["optimizer"].state_dict()["state"]
    assert all(torch.equal(state[k]["exp_avg_sq"], reference[k]["exp_avg_sq"]) for k in reference)
    assert len({round(r["loss"], 6) for r in expected}) == 3 and 0 < expected[-1]["OVERALL/cmc/1"] <= 1

    checkpoint = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert checkpoint["epoch"] == 3 and len(checkpoint["rng"]) == 1 and checkpoint["history"] == expected
    assert set(checkpoint) == {"epoch", "model", "loss", "optimizer", "scheduler", "scaler", "history", "rng"}


def test_the_resume_test_would_notice_unrestored_random_streams(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, _ = datasets(toy_root, AUGMENT)
    expected = fit(**setup(train), epochs=2, progress=False)
    fit(**setup(train), epochs=1, checkpoint_dir=tmp_path, progress=False)
    torch.manual_seed(1234)
    monkeypatch.setattr(training, "set_rng_state", lambda state: None)
    history = fit(**setup(train), epochs=2, resume=tmp_path / "last.pt", progress=False)
    assert timeless(history)[0] == timeless(expected)[0] and timeless(history)[1] != timeless(expected)[1]


def test_history_and_progress_bar_show_the_loss_and_the_metrics(
    toy_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, val = datasets(toy_root)
    history = fit(**setup(train), epochs=2, val_dataset=val, metrics=metrics(), progress=True)
    assert [r["epoch"] for r in history] == [0, 1] and [r["lr"] for r in history] == [1e-2, 5e-3]
    assert {"loss", "num_triplets", "active_tri", "pos_dist", "neg_dist", "OVERALL/cmc/1", "cold/map/3"} <= set(
        history[0]
    )
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err and "OVERALL/cmc/1=" in err


SLOW = 0.2  # seconds


class SlowMetrics(EmbeddingMetrics):
    """A validation that takes at least ``SLOW`` seconds."""

    def compute(self) -> dict[str, Any]:
        time.sleep(SLOW)
        return super().compute()


class SlowEpochStart(Callback):
    def on_epoch_start(self, state: FitState) -> None:
        time.sleep(SLOW)


def test_each_record_has_the_wall_time_of_the_epochs_training_and_validation(toy_root: Path) -> None:
    train, val = datasets(toy_root)
    slow = SlowMetrics(cmc_top_k=(1,))
    began = time.perf_counter()
    history = fit(**setup(train), epochs=2, val_dataset=val, metrics=slow, callbacks=[SlowEpochStart()], progress=False)
    total = time.perf_counter() - began
    assert all(record["epoch_time_s"] >= SLOW for record in history)  # the validation is counted
    assert sum(record["epoch_time_s"] for record in history) <= total - 2 * SLOW  # on_epoch_start is not


def test_the_untrained_model_is_validated_first_when_asked_and_not_again_on_resume(
    toy_root: Path, tmp_path: Path
) -> None:
    train, val = datasets(toy_root)
    parts = setup(train)
    untrained = evaluate(parts["model"], val, metrics(), batch_size=8, progress=False)
    recorder = Recorder()
    common = {"val_dataset": val, "metrics": metrics(), "val_batch_size": 8, "progress": False}
    history = fit(**parts, epochs=1, validate_untrained=True, checkpoint_dir=tmp_path, callbacks=[recorder], **common)
    assert history[0] == {"epoch": -1, **{k: v for k, v in untrained.items() if "/" in k}}
    assert [r["epoch"] for r in history] == [-1, 0] and "epoch_time_s" in history[1]
    cmc = [r["OVERALL/cmc/1"] for r in history]
    assert recorder.calls[:3] == [("fit_start", 0, 0), ("validation_end", -1, cmc[0]), ("epoch_start", 0, None)]

    resumed = fit(**setup(train), epochs=2, validate_untrained=True, resume=tmp_path / "last.pt", **common)
    assert [r["epoch"] for r in resumed] == [-1, 0, 1] and resumed[:2] == history
    with pytest.raises(ValueError, match="validate_untrained needs val_dataset and metrics"):
        fit(**setup(train), validate_untrained=True, progress=False)


def test_gradient_clipping_bounds_the_update(toy_root: Path) -> None:
    train, _ = datasets(toy_root)
    torch.manual_seed(0)
    model = SmallCNN(feat_dim=16, widths=(8, 16))
    before = [p.detach().clone() for p in model.parameters()]
    one_batch = DataLoader(train, batch_sampler=[list(range(8))])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(model, TripletLossWithMiner(margin=5.0), optimizer, one_batch, grad_clip_norm=1e-3, progress=False)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert 0 < float(step.norm()) <= 1e-3 * (1 + 1e-4)


def test_mixed_precision_on_the_cpu_and_plateau_scheduler(toy_root: Path) -> None:
    train, _ = datasets(toy_root)
    parts = setup(train)
    parts["scheduler"] = torch.optim.lr_scheduler.ReduceLROnPlateau(parts["optimizer"], mode="min", patience=0)
    history = fit(**parts, epochs=2, amp=True, monitor="epoch", progress=False)  # bf16 autocast on the CPU
    assert all(np.isfinite(r["loss"]) for r in history)
    assert all(p.dtype == torch.float32 for p in parts["model"].parameters())
    assert parts["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-3)  # "epoch" rose once: lr * 0.1


def test_inference_is_in_dataset_order_and_evaluate_feeds_the_metric(toy_root: Path) -> None:
    _, val = datasets(toy_root)
    torch.manual_seed(0)
    model = SmallCNN(feat_dim=16, widths=(8, 16)).train()
    embeddings = inference(model, val, batch_size=5, progress=False)
    assert model.training  # the mode is restored
    expected = model.extract(torch.stack([val[i]["images"] for i in range(len(val))]))
    torch.testing.assert_close(embeddings, expected, rtol=1e-4, atol=1e-5)

    results = evaluate(model, val, metrics(), batch_size=5, progress=False)
    reference = metrics()
    reference.update(
        {
            EMBEDDINGS: embeddings,
            LABELS: torch.tensor(val.get_labels()),
            IS_QUERY: torch.tensor(val.is_query),
            IS_GALLERY: torch.tensor(val.is_gallery),
            "categories": [val[i]["categories"] for i in range(len(val))],
        }
    )
    assert results == reference.compute()
    with pytest.raises(KeyError, match="under 'pixels'"):
        inference(model, val, input_key="pixels", progress=False)


def test_setup_errors_come_before_training(toy_root: Path) -> None:
    train, val = datasets(toy_root)
    parts = setup(train)
    arcface = ArcFaceLoss(in_features=16, num_classes=8)
    with pytest.raises(IncompatibleComponentError, match=r"ArcFaceLoss has trainable parameters .*weight \(8, 16\)"):
        fit(parts["model"], arcface, parts["optimizer"], parts["train_loader"], progress=False)
    with pytest.raises(ValueError, match="pass both val_dataset and metrics"):
        fit(**parts, val_dataset=val, progress=False)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(parts["optimizer"])
        fit(**{**parts, "scheduler": plateau}, scheduler_interval="step", progress=False)

    optimizer = torch.optim.Adam([*parts["model"].parameters(), *arcface.parameters()], lr=1e-2)
    before = arcface.weight.detach().clone()
    fit(parts["model"], arcface, optimizer, parts["train_loader"], progress=False)
    assert not torch.equal(arcface.weight, before)  # the loss's parameters were trained


class Recorder(Callback):
    """Writes down every hook call: (hook, epoch, what it was given)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []

    def on_fit_start(self, state: FitState) -> None:
        self.calls.append(("fit_start", state.epoch, len(state.history)))

    def on_epoch_start(self, state: FitState) -> None:
        self.calls.append(("epoch_start", state.epoch, None))

    def on_validation_end(self, state: FitState, metrics: dict[str, float]) -> None:
        self.calls.append(("validation_end", state.epoch, metrics["OVERALL/cmc/1"]))

    def on_checkpoint(self, state: FitState, path: Path) -> None:
        self.calls.append(("checkpoint", state.epoch, load_checkpoint(path)["epoch"]))

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        assert state.history[-1] is record
        self.calls.append(("epoch_end", state.epoch, record["epoch"]))

    def on_fit_end(self, state: FitState) -> None:
        self.calls.append(("fit_end", state.epoch, len(state.history)))


def test_callbacks_see_each_epoch_in_order_and_a_resumed_run_starts_where_it_stopped(
    toy_root: Path, tmp_path: Path
) -> None:
    train, val = datasets(toy_root)
    recorder = Recorder()
    parts = setup(train)
    fit(**parts, epochs=2, val_dataset=val, metrics=metrics(), checkpoint_dir=tmp_path, progress=False,
        callbacks=[recorder])  # fmt: skip
    cmc = [record["OVERALL/cmc/1"] for record in load_checkpoint(tmp_path / "last.pt")["history"]]
    per_epoch = [
        [("epoch_start", e, None), ("validation_end", e, cmc[e]), ("checkpoint", e, e + 1), ("epoch_end", e, e)]
        for e in (0, 1)
    ]
    assert recorder.calls == [("fit_start", 0, 0), *per_epoch[0], *per_epoch[1], ("fit_end", 2, 2)]

    resumed = Recorder()
    fit(**setup(train), epochs=2, resume=tmp_path / "last.pt", progress=False, callbacks=[resumed])
    assert resumed.calls == [("fit_start", 2, 2), ("fit_end", 2, 2)]  # nothing left to train: only the edges
    with pytest.raises(TypeError, match=r"subclass omlcore_torch\.callbacks\.Callback; got int"):
        fit(**setup(train), epochs=1, progress=False, callbacks=[3])  # type: ignore[list-item]


def test_a_resumed_run_with_no_epoch_left_has_the_trained_weights(toy_root: Path, tmp_path: Path) -> None:
    train, _ = datasets(toy_root)
    trained = setup(train)
    fit(**trained, epochs=1, checkpoint_dir=tmp_path, progress=False)
    resumed = setup(train, seed=7)
    history = fit(**resumed, epochs=1, resume=tmp_path / "last.pt", progress=False)
    assert len(history) == 1
    assert torch.equal(weights(resumed["model"]), weights(trained["model"]))
