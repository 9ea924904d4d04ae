"""The cost of experiment logging: ``omlcore_torch.fit`` with TensorBoard + MLflow against the same run without.

One process trains SmallCNN (32 x 32 images, batches of 64 = 16 labels x 4, triplet loss with all triplets) for
``--epochs`` epochs per run, in three settings taken in turns (a fresh order each round, seeded): no logger;
TensorBoard + MLflow (SQLite store) writing the loss and its 4 statistics every step (``log_every_n_steps=1``, the
worst case); the same every 50 steps (the torch runner's default). Each run's loggers are built (and the MLflow
database created) before the timer starts; the timer covers ``fit`` and the loggers' ``finalize``. The figure is
the median over ``--rounds`` rounds of the time per epoch; the overhead is its ratio to the no-logger median. On a
shared machine that ratio is noisy, so the time spent inside the loggers' methods (measured around every call) is
reported too, per epoch and as a share of the epoch: what the logging itself costs.

    python benchmarks/tracking.py                      # 5 rounds of 2 epochs of 20 steps
    python benchmarks/tracking.py --rounds 9 --steps 60
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from omlcore.losses import TripletLossWithMiner
from omlcore.miners import AllTripletsMiner
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_torch import fit
from omlcore_torch.loggers import MLflowLogger, TensorBoardLogger

SETTINGS = {"none": None, "tensorboard + mlflow, every step": 1, "tensorboard + mlflow, every 50 steps": 50}


class Timed:
    """A logger whose method calls are timed (seconds summed in ``spent``)."""

    def __init__(self, logger: Any, spent: list[float]) -> None:
        self.logger, self.spent = logger, spent

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.logger, name)

        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args)
            finally:
                self.spent[0] += time.perf_counter() - started

        return timed


def run(steps: int, epochs: int, every: int | None, folder: Path, uri: str) -> tuple[float, float]:
    """Seconds per epoch of one run, and of those the seconds spent in the loggers."""
    torch.manual_seed(0)
    n_labels = 16 * steps
    labels = [label for label in range(n_labels) for _ in range(4)]
    images = torch.randn(len(labels), 3, 32, 32)
    data = [{"images": image, "labels": label} for image, label in zip(images, labels, strict=True)]
    model = SmallCNN(feat_dim=64, widths=(16, 32, 64))
    loggers: list[Any] = []
    spent = [0.0]
    if every is not None:
        run_dir = Path(tempfile.mkdtemp(dir=folder))
        built = [TensorBoardLogger(run_dir), MLflowLogger(run_dir, tracking_uri=uri, experiment_name="bench")]
        loggers = [Timed(logger, spent) for logger in built]
    started = time.perf_counter()
    fit(
        model,
        TripletLossWithMiner(margin=0.1, miner=AllTripletsMiner()),
        torch.optim.Adam(model.parameters(), lr=1e-3),
        DataLoader(data, batch_sampler=BalanceSampler(labels, 16, 4, seed=0)),  # type: ignore[arg-type]
        epochs=epochs,
        progress=False,
        loggers=loggers,
        log_every_n_steps=every or 1,
    )
    for logger in loggers:
        logger.finalize("success")
    return (time.perf_counter() - started) / epochs, spent[0] / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    args = parser.parse_args()
    torch.set_num_threads(2)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    inside: dict[str, list[float]] = {name: [] for name in SETTINGS}
    order = list(SETTINGS)
    shuffle = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        run(2, 1, 1, folder, uri)  # warm-up: imports, the database's tables
        for _ in range(args.rounds):
            shuffle.shuffle(order)
            for name in order:
                epoch, logging = run(args.steps, args.epochs, SETTINGS[name], folder, uri)
                times[name].append(epoch)
                inside[name].append(logging / epoch)
    base = statistics.median(times["none"])
    print(f"{args.rounds} rounds of {args.epochs} epochs x {args.steps} steps; seconds per epoch (median, min - max):")
    print("| setting | s / epoch | min - max | overhead | in the loggers' calls |\n|---|---:|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        overhead = "" if name == "none" else f"{100 * (median / base - 1):+.1f}%"
        share = "" if name == "none" else f"{100 * statistics.median(inside[name]):.2f}%"
        print(f"| {name} | {median:.3f} | {min(values):.3f} - {max(values):.3f} | {overhead} | {share} |")


if __name__ == "__main__":
    main()
