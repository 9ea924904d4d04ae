"""Overhead of the training adapters: steps/s of ``omlcore_torch.fit`` and of Lightning's ``RetrievalModule`` against
a hand-written PyTorch loop doing the same work, side by side in one process.

The same work: SmallCNN (tiny by default: 32 px inputs, widths 8 and 16), ``TripletLossWithMiner`` with the
batch-hard miner, Adam, one ``DataLoader`` over an in-memory dataset with omlcore's ``BalanceSampler``
(``--labels`` x ``--instances`` per batch); every loop reads the loss value each step (for its running mean).
``fit`` runs without a progress bar, Lightning without logger, checkpoints or progress bar (its ``self.log`` calls
run). A bare ``LightningModule`` doing the same step without logging shows what Lightning's loop costs by itself.
Each measurement is a whole call (``fit(...)``, ``trainer.fit(...)``, the loop) over ``--epochs`` epochs from
fresh objects; the runners take turns (``--repeats`` rounds, order rotated) and the median steps/s is reported
with the min - max, so load from other processes hits all of them alike.

    python benchmarks/adapters.py                        # 1 torch thread, 4 epochs of 16 steps, 7 rounds
    python benchmarks/adapters.py --widths 32 64 128 --size 64 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from omlcore.keys import IMAGES, LABELS
from omlcore.losses import TripletLossWithMiner
from omlcore.miners import HardTripletsMiner
from omlcore.models import SmallCNN
from omlcore.samplers import BalanceSampler
from omlcore_torch import fit


class InMemoryImages(Dataset[dict[str, Any]]):
    """``n_labels * per_label`` random images, as omlcore's datasets return them (dicts)."""

    def __init__(self, n_labels: int, per_label: int, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(n_labels * per_label, 3, size, size, generator=generator)
        self.labels = [i // per_label for i in range(n_labels * per_label)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return {IMAGES: self.images[idx], LABELS: self.labels[idx]}


def parts(args: argparse.Namespace, dataset: InMemoryImages) -> tuple[SmallCNN, Any, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = SmallCNN(feat_dim=32, widths=tuple(args.widths))
    loss = TripletLossWithMiner(margin=0.2, miner=HardTripletsMiner())
    sampler = BalanceSampler(dataset.labels, n_labels=args.labels, n_instances=args.instances)
    return model, loss, torch.optim.Adam(model.parameters(), lr=1e-3), DataLoader(dataset, batch_sampler=sampler)


def hand_written(args: argparse.Namespace, dataset: InMemoryImages) -> Callable[[], None]:
    model, loss, optimizer, loader = parts(args, dataset)

    def run() -> None:
        model.train()
        for epoch in range(args.epochs):
            loader.batch_sampler.set_epoch(epoch)
            total = 0.0
            for batch in loader:
                value = loss(model(batch[IMAGES]), batch[LABELS])
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                total += float(value.detach())

    return run


def omlcore_fit(args: argparse.Namespace, dataset: InMemoryImages) -> Callable[[], None]:
    model, loss, optimizer, loader = parts(args, dataset)

    def run() -> None:
        fit(model, loss, optimizer, loader, epochs=args.epochs, progress=False)

    return run


def _trainer(args: argparse.Namespace) -> Any:
    import logging

    import lightning.pytorch as pl

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def lightning_module(args: argparse.Namespace, dataset: InMemoryImages) -> Callable[[], None]:
    from omlcore_lightning import RetrievalModule

    model, loss, optimizer, loader = parts(args, dataset)
    module, trainer = RetrievalModule(model, loss, optimizer=optimizer), _trainer(args)
    return lambda: trainer.fit(module, loader)


def bare_lightning(args: argparse.Namespace, dataset: InMemoryImages) -> Callable[[], None]:
    """Lightning's own cost: the smallest LightningModule doing the same step (no logging)."""
    import lightning.pytorch as pl

    model, loss, optimizer, loader = parts(args, dataset)

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.loss = model, loss

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            value: torch.Tensor = self.loss(self.model(batch[IMAGES]), batch[LABELS])
            return value

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return optimizer

    module, trainer = Bare(), _trainer(args)
    return lambda: trainer.fit(module, loader)


RUNNERS: dict[str, Callable[[argparse.Namespace, InMemoryImages], Callable[[], None]]] = {
    "hand-written loop": hand_written,
    "omlcore_torch.fit": omlcore_fit,
    "Lightning RetrievalModule": lightning_module,
    "bare LightningModule (Lightning's own loop)": bare_lightning,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16], help="SmallCNN stage widths")
    parser.add_argument("--labels", type=int, default=4, help="labels per batch")
    parser.add_argument("--instances", type=int, default=4, help="images per label in a batch")
    parser.add_argument("--n-labels", type=int, default=64, help="labels in the dataset (epoch = n_labels / labels)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = InMemoryImages(args.n_labels, args.instances * 2, args.size)
    steps = args.epochs * (args.n_labels // args.labels)
    names = list(RUNNERS)
    for name in names:  # warm-up: imports, oneDNN kernels for these shapes
        RUNNERS[name](args, dataset)()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            run = RUNNERS[name](args, dataset)
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}; SmallCNN widths {args.widths} "
        f"at {args.size} px, batch {args.labels}x{args.instances}, {steps} steps per run, {args.repeats} rounds\n"
    )
    reference = statistics.median(seconds[names[0]])
    print("| loop | steps/s (median) | min - max | ms/step | vs hand-written |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        rates = [steps / s for s in seconds[name]]
        median = statistics.median(seconds[name])
        print(
            f"| {name} | {steps / median:.1f} | {min(rates):.1f} - {max(rates):.1f} | {1000 * median / steps:.2f} "
            f"| {100 * (median / reference - 1):+.1f}% |"
        )


if __name__ == "__main__":
    main()
