"""Runners: what drives the loops of a pipeline in a framework. ``runner: {name: torch | lightning, args: {...}}``.

A runner trains (:meth:`Runner.fit`), evaluates and embeds. :class:`TorchRunner` uses :mod:`omlcore_torch`
(:func:`~omlcore_torch.fit`, one epoch per call, so that every epoch's record is written as it ends and an
interrupted run resumes exactly); :class:`~omlcore.pipelines.lightning_runner.LightningRunner` uses a Lightning
``Trainer``. Both are registered in the registry as kind ``runner``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from omlcore.protocols import Loss, MetricAccumulator

__all__ = [
    "BEST_CHECKPOINT",
    "EXTRACTOR_CHECKPOINT",
    "FitJob",
    "Precision",
    "Runner",
    "TorchRunner",
    "join_torchrun_group",
    "resolve_device",
]

#: The weights-only checkpoint of the trained extractor that every training run writes to ``checkpoints/``.
EXTRACTOR_CHECKPOINT = "extractor.pt"
#: The extractor's weights after the best epoch by ``metric_for_checkpointing`` (same format as ``extractor.pt``).
BEST_CHECKPOINT = "best.pt"
Precision = Literal["32", "16-mixed", "bf16-mixed"]


@dataclass
class FitJob:
    """Everything a runner needs to train.

    Attributes:
        model: the extractor; loss: the loss (trainable losses are optimised too).
        build_optimizer: trainable parameters -> optimizer; build_scheduler: optimizer -> scheduler (or None).
        train_loader: batches of the training split; val_dataset, metric: validation after every epoch.
        batch_size, num_workers: of the validation loader.
        checkpoint_dir: where the runner writes its resumable checkpoint.
        resume: a checkpoint of this runner to continue from (None: start fresh).
        on_epoch: called with each epoch's record (``epoch``, ``loss``, loss statistics, flat metrics).
    """

    model: nn.Module
    loss: Loss
    build_optimizer: Callable[[list[nn.Parameter]], Optimizer]
    build_scheduler: Callable[[Optimizer], Any] | None
    train_loader: DataLoader[Any]
    val_dataset: Dataset[Any] | None
    metric: MetricAccumulator | None
    batch_size: int
    num_workers: int
    checkpoint_dir: Path
    resume: Path | None
    on_epoch: Callable[[dict[str, float]], None]


class Runner(Protocol):
    """What the pipelines call; ``epochs`` is the total number of training epochs."""

    epochs: int
    #: The name of the resumable checkpoint in ``checkpoint_dir`` (``last.pt`` / ``last.ckpt``).
    checkpoint_name: str

    def fit(self, job: FitJob) -> None: ...

    def evaluate(
        self, model: nn.Module, dataset: Dataset[Any], metric: MetricAccumulator, batch_size: int, num_workers: int
    ) -> dict[str, Any]: ...

    def inference(self, model: nn.Module, dataset: Dataset[Any], batch_size: int, num_workers: int) -> Tensor: ...


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def trainable_parameters(model: nn.Module, loss: Loss) -> list[nn.Parameter]:
    """The parameters that need gradients: the model's and a trainable loss's."""
    modules = [model, loss] if isinstance(loss, nn.Module) else [model]
    return [p for module in modules for p in module.parameters() if p.requires_grad]


def join_torchrun_group(device: torch.device) -> torch.device:
    """Under ``torchrun`` (``RANK`` and ``WORLD_SIZE > 1`` in the environment), join its process group.

    gloo on the CPU, nccl on CUDA, where a bare ``cuda`` device becomes this process's ``cuda:<LOCAL_RANK>``.
    Returns the device to use; outside ``torchrun`` (or when the group already exists) it only returns ``device``.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)  # before the interpreter's teardown, which a live group can crash
    return device


def _leave_process_group() -> None:
    """All processes leave together: the primary one may still be writing files when the others are done."""
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a process is gone already (it failed, and says so): leave anyway
            dist.barrier()
        dist.destroy_process_group()


class TorchRunner:
    """Plain PyTorch loops (:mod:`omlcore_torch`); under ``torchrun`` they run distributed (DDP).

    Under ``torchrun`` every process runs the pipeline: the runner joins the process group when it is built
    (:func:`join_torchrun_group`), training is DDP with a disjoint share of the batches per process, and the
    validations and inference are sharded and merged, equal to one process's.

    Args:
        epochs: training epochs in total (a resumed run counts the epochs done).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1`` ...
        precision: ``32``, or mixed precision: ``16-mixed`` (CUDA) / ``bf16-mixed`` (CPU).
        grad_clip_norm: clip the gradients' global norm to this value.
        scheduler_interval: step the scheduler every ``epoch`` or every ``step``.
        progress: progress bars.
    """

    checkpoint_name = "last.pt"

    def __init__(
        self,
        epochs: int = 1,
        device: str = "auto",
        precision: Precision = "32",
        grad_clip_norm: float | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        progress: bool = True,
    ) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        if precision not in ("32", "16-mixed", "bf16-mixed"):
            raise ValueError(f"precision must be '32', '16-mixed' or 'bf16-mixed', got {precision!r}")
        self.epochs = epochs
        self.device = join_torchrun_group(resolve_device(device))
        self.precision = precision
        self.grad_clip_norm = grad_clip_norm
        self.scheduler_interval = scheduler_interval
        self.progress = progress

    def fit(self, job: FitJob) -> None:
        """Train epoch by epoch: each epoch is one :func:`~omlcore_torch.fit` call resuming the last checkpoint."""
        from omlcore_torch import fit, load_checkpoint

        job.model.to(self.device)
        optimizer = job.build_optimizer(trainable_parameters(job.model, job.loss))
        scheduler = job.build_scheduler(optimizer) if job.build_scheduler is not None else None
        last = job.checkpoint_dir / self.checkpoint_name
        resume: Path | None = job.resume
        start = int(load_checkpoint(resume)["epoch"]) if resume is not None else 0
        bar = tqdm(range(start, self.epochs), initial=start, total=self.epochs, desc="train", disable=not self.progress)
        for epoch in bar:
            history = fit(
                job.model,
                job.loss,
                optimizer,
                job.train_loader,
                epochs=epoch + 1,
                scheduler=scheduler,
                scheduler_interval=self.scheduler_interval,
                val_dataset=job.val_dataset,
                metrics=job.metric,
                val_batch_size=job.batch_size,
                val_num_workers=job.num_workers,
                amp=self.precision != "32",
                grad_clip_norm=self.grad_clip_norm,
                checkpoint_dir=job.checkpoint_dir,
                resume=resume,
                progress=False,
            )
            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # process 0 has written the checkpoint the next epoch resumes from
            resume = last
            record = history[-1]
            bar.set_postfix({k: v for k, v in record.items() if k in ("loss", "OVERALL/cmc/1")}, refresh=False)
            job.on_epoch(record)

    def evaluate(
        self, model: nn.Module, dataset: Dataset[Any], metric: MetricAccumulator, batch_size: int, num_workers: int
    ) -> dict[str, Any]:
        from omlcore_torch import evaluate

        return evaluate(
            model,
            dataset,
            metric,
            batch_size=batch_size,
            num_workers=num_workers,
            device=self.device,
            progress=self.progress,
        )

    def inference(self, model: nn.Module, dataset: Dataset[Any], batch_size: int, num_workers: int) -> Tensor:
        from omlcore_torch import inference

        return inference(
            model, dataset, batch_size=batch_size, num_workers=num_workers, device=self.device, progress=self.progress
        )
