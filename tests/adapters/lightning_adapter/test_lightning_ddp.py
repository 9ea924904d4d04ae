"""``trainer.fit(module, train_loader, val_loader)`` with ``strategy="ddp"``, 2 CPU processes, omlcore's batch sampler:
validation metrics and predictions equal the one-process ones exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from omlcore.datasets import ImageQueryGalleryDataset
from omlcore.metrics import EmbeddingMetrics
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_torch import evaluate, inference

pytest.importorskip("lightning")

SCRIPT = Path(__file__).with_name("lightning_ddp_script.py")
TRANSFORM = {"name": "resize_normalize", "args": {"size": 32}}


@pytest.fixture(scope="module")
def ddp(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("lightning_ddp")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(toy_root), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=out,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Lightning can't inject" not in done.stderr
    ranks = [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    return {"out": out, "ranks": ranks}


def one_process(root: Path, state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, Any], torch.Tensor]:
    """The trained extractor's metrics and embeddings, computed by omlcore_torch in this (single) process."""
    val = ImageQueryGalleryDataset(pd.read_csv(root / "df.csv"), dataset_root=root, transform=TRANSFORM)
    model = SmallCNN(feat_dim=16, widths=(8, 16))
    model.load_state_dict(state_dict)
    metrics = evaluate(model, val, EmbeddingMetrics(cmc_top_k=(1, 3), map_top_k=(3,)), batch_size=5, progress=False)
    return metrics, inference(model, val, batch_size=5, progress=False)


def test_validation_metrics_equal_the_one_process_metrics(ddp: dict[str, Any], toy_root: Path) -> None:
    rank0, rank1 = ddp["ranks"]
    assert rank0["world_size"] == rank1["world_size"] == 2
    for name, tensor in rank0["state_dict"].items():
        assert torch.equal(tensor, rank1["state_dict"][name])  # DDP kept the replicas identical
    expected, _ = one_process(toy_root, rank0["state_dict"])
    assert 0 < expected["OVERALL/cmc/1"] < 1 and {"cold", "warm"} <= set(expected)
    for rank in (rank0, rank1):
        assert rank["val_metrics"] == expected  # every number, per category too
        assert rank["fit_metrics"] == expected  # the last validation of fit ran on the final weights
        assert rank["logged"]["OVERALL/cmc/1"] == pytest.approx(expected["OVERALL/cmc/1"])


def test_predictions_are_sharded_without_padding_and_gather_exactly(ddp: dict[str, Any], toy_root: Path) -> None:
    rank0, rank1 = ddp["ranks"]
    _, expected = one_process(toy_root, rank0["state_dict"])
    assert [len(rank["local_predictions"]) for rank in (rank0, rank1)] == [10, 14]  # contiguous blocks, no padding
    for rank in (rank0, rank1):
        assert torch.equal(rank["predictions"], expected)


def test_the_batch_sampler_shards_itself_epoch_by_epoch(ddp: dict[str, Any], toy_root: Path) -> None:
    rank0, rank1 = ddp["ranks"]
    labels = pd.read_csv(toy_root / "df.csv").query("split == 'train'")["label"].to_numpy()
    sampler = BalanceSampler(labels, n_labels=2, n_instances=4)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)  # the whole epoch, as one process would draw it
        assert rank0["seen"][epoch] == [i for b in batches[0::2] for i in b]
        assert rank1["seen"][epoch] == [i for b in batches[1::2] for i in b]


def test_logs_and_checkpoints_are_written(ddp: dict[str, Any]) -> None:
    (metrics_csv,) = (ddp["out"] / "logs").glob("version_*/metrics.csv")
    header = metrics_csv.read_text().splitlines()[0].split(",")
    assert {"OVERALL/cmc/1", "train/loss", "train/loss_epoch"} <= set(header)
    assert list((ddp["out"] / "ckpt").glob("*.ckpt"))
