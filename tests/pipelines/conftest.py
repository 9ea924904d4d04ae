"""A tiny dataset in OML's CSV format and a tiny config that trains on it in a second or two."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

TRAIN_LABELS, VAL_LABELS, PER_LABEL, SIZE = 6, 4, 4, 16


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 labels of 4 noisy colour patches: 6 labels train, 4 validate (every image query and gallery)."""
    root = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    rows = []
    for label in range(TRAIN_LABELS + VAL_LABELS):
        colour = rng.integers(40, 215, 3)
        split = "train" if label < TRAIN_LABELS else "validation"
        for k in range(PER_LABEL):
            pixels = np.clip(colour + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"{label}_{k}.png")
            flag = True if split == "validation" else None
            rows.append(
                {"label": label, "path": f"{label}_{k}.png", "split": split, "is_query": flag, "is_gallery": flag}
            )
    pd.DataFrame(rows).to_csv(root / "df.csv", index=False)
    return root / "df.csv"


@pytest.fixture
def tiny_config(tiny_csv: Path, tmp_path: Path) -> Path:
    """A config file training a 2-stage SmallCNN for 2 epochs of 3 batches, runs under ``tmp_path/runs``."""
    config = {
        "seed": 3,
        "output_dir": str(tmp_path / "runs"),
        "dataset": {"csv": str(tiny_csv), "batch_size": 5},
        "transforms_train": {"name": "resize_normalize", "args": {"size": SIZE}},
        "transforms_val": {"name": "resize_normalize", "args": {"size": SIZE}},
        "extractor": {"name": "small_cnn", "args": {"feat_dim": 8, "widths": [4, 8]}},
        "sampler": {"name": "balance", "args": {"n_labels": 2, "n_instances": 2}},
        "loss": {"name": "triplet_with_miner", "args": {"margin": 0.2, "miner": {"name": "all_triplets"}}},
        "optimizer": {"name": "sgd", "args": {"lr": 0.05, "momentum": 0.9}},
        "metric": {"name": "embedding_metrics", "args": {"cmc_top_k": [1, 2], "map_top_k": [2], "pcf_variance": []}},
        "runner": {"name": "torch", "args": {"epochs": 2, "progress": False}},
        "visualization": {"n_queries": 2, "top_k": 2, "formats": ["html"]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: a second thread only waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def timeless(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epoch records without ``epoch_time_s``, the wall time, which differs between equal runs."""
    return [{k: v for k, v in record.items() if k != "epoch_time_s"} for record in history]


def run_folders(config: Path) -> list[Path]:
    runs = config.parent / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []
