"""The ``torch`` runner trains in one ``fit`` call, with the results of the epoch-by-epoch resumes it replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omlcore.protocols import FitJob, Runner
from omlcore_torch import fit
from omlcore_torch.runner import TorchRunner

from .test_torch_fit import datasets, metrics, setup, timeless, weights


def job(parts: dict[str, Any], val: Any, checkpoint_dir: Path, records: list[dict[str, float]]) -> FitJob:
    optimizer, scheduler = parts["optimizer"], parts["scheduler"]
    return FitJob(
        model=parts["model"],
        loss=parts["loss"],
        build_optimizer=lambda params: optimizer,
        build_scheduler=lambda _: scheduler,
        train_loader=parts["train_loader"],
        val_dataset=val,
        metric=metrics(),
        batch_size=8,
        num_workers=0,
        checkpoint_dir=checkpoint_dir,
        resume=None,
        on_epoch=records.append,
    )


def test_three_epochs_in_one_call_equal_three_calls_that_resume_each_other(toy_root: Path, tmp_path: Path) -> None:
    """The runner used to call fit once per epoch, resuming the checkpoint it had just written."""
    train, val = datasets(toy_root, {"name": "train_augmentations", "args": {"size": 32, "scale": (0.5, 1.0)}})
    runner = TorchRunner(epochs=3, device="cpu", progress=False)
    assert isinstance(runner, Runner)
    records: list[dict[str, float]] = []
    parts = setup(train)
    runner.fit(job(parts, val, tmp_path / "one", records))

    stepwise = setup(train)
    history: list[dict[str, float]] = []
    for epoch in range(3):
        resume = tmp_path / "stepwise" / "last.pt" if epoch else None
        history = fit(**stepwise, epochs=epoch + 1, val_dataset=val, metrics=metrics(), val_batch_size=8,
                      checkpoint_dir=tmp_path / "stepwise", resume=resume, progress=False)  # fmt: skip

    assert timeless(records) == timeless(history)  # every loss, statistic, learning rate and metric, to the last bit
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert torch.equal(weights(parts["model"]), weights(stepwise["model"]))
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    assert runner.extractor_weights(one) is one["model"]
    assert runner.extractor_weights({"model": {}}) is None  # a state dict with a 'model' key is not a checkpoint
