"""Run by test_lightning_ddp.py as ``python lightning_ddp_script.py DATA_ROOT OUT``: the standard Lightning idiom
under ``strategy="ddp"`` with 2 CPU processes (Lightning's launcher re-executes this script for rank 1). Each rank
saves what it saw and computed for the test to compare with a one-process run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from omlcore.datasets import ImageLabeledDataset, ImageQueryGalleryDataset
from omlcore.losses import TripletLossWithMiner
from omlcore.metrics import EmbeddingMetrics
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_lightning import MetricValCallback, RetrievalModule, gather_predictions

TRANSFORM = {"name": "resize_normalize", "args": {"size": 32}}


class Recorder(Callback):
    """The dataset indices of every training batch this rank trained on, per epoch."""

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, []).extend(batch["idx"].tolist())


def main(root: Path, out: Path) -> None:
    df = pd.read_csv(root / "df.csv")
    train = ImageLabeledDataset(df, dataset_root=root, transform=TRANSFORM)
    val = ImageQueryGalleryDataset(df, dataset_root=root, transform=TRANSFORM)
    torch.manual_seed(0)
    module = RetrievalModule(
        SmallCNN(feat_dim=16, widths=(8, 16)), TripletLossWithMiner(margin=0.5), {"name": "sgd", "args": {"lr": 0.05}}
    )
    metrics = MetricValCallback(EmbeddingMetrics(cmc_top_k=(1, 3), map_top_k=(3,)))
    recorder = Recorder()
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        callbacks=[metrics, recorder, ModelCheckpoint(out / "ckpt", monitor="OVERALL/cmc/1", mode="max")],
        logger=CSVLogger(out, name="logs"),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train_loader = DataLoader(train, batch_sampler=BalanceSampler(train.get_labels(), n_labels=2, n_instances=4))
    val_loader = DataLoader(val, batch_size=5)  # 24 items: 5 batches, ranks get 2 and 3 (10 and 14 items)
    trainer.fit(module, train_loader, val_loader)  # the standard idiom: no DDP module, no sampler flags
    fitted = metrics.metrics
    (validated,) = trainer.validate(module, val_loader, verbose=False)
    predictions = trainer.predict(module, val_loader)
    torch.save(
        {
            "world_size": trainer.world_size,
            "fit_metrics": fitted,
            "val_metrics": metrics.metrics,
            "logged": validated,
            "local_predictions": torch.cat(predictions),
            "predictions": gather_predictions(predictions),
            "seen": recorder.seen,
            "state_dict": module.extractor.state_dict(),
        },
        out / f"rank{trainer.global_rank}.pt",
    )
    torch.distributed.barrier()  # both ranks are done: close the gloo group before the interpreter exits
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
