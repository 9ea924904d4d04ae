"""``runner: {name: torch, args: {...}}``: the pipelines' loops in plain PyTorch, DDP under ``torchrun``.

:class:`TorchRunner` trains with one :func:`~omlcore_torch.fit` call, whose epoch hooks hand each epoch's record to
the pipeline once the epoch's checkpoint is written (so an interrupted run resumes exactly), and evaluates and embeds
with :func:`~omlcore_torch.evaluate` / :func:`~omlcore_torch.inference`. Under ``torchrun`` it joins the process
group when it is built (:func:`join_torchrun_group`) and every process runs the pipeline.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from omlcore.protocols import FitJob, MetricAccumulator
from omlcore_torch.callbacks import Callback, FitState
from omlcore_torch.evaluation import evaluate, inference
from omlcore_torch.training import CHECKPOINT_NAME, fit

__all__ = ["Precision", "TorchRunner", "join_torchrun_group", "resolve_device"]

Precision = Literal["32", "16-mixed", "bf16-mixed"]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_torchrun_group(device: torch.device) -> torch.device:
    """Under ``torchrun`` (``RANK`` and ``WORLD_SIZE > 1`` in the environment), join its process group.

    gloo on the CPU, nccl on CUDA, where a bare ``cuda`` device becomes this process's ``cuda:<LOCAL_RANK>``.
    Returns the device to use; outside ``torchrun`` (or when the group already exists) it only returns ``device``.
    """
    if not _launched_by_torchrun() or not dist.is_available():
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


class _EpochRecords(Callback):
    """Hands each epoch's record to the pipeline (``FitJob.on_epoch``) once its checkpoint is written."""

    def __init__(self, job: FitJob) -> None:
        self.job = job

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        self.job.on_epoch(record)


class TorchRunner:
    """Plain PyTorch loops (:mod:`omlcore_torch`); under ``torchrun`` they run distributed (DDP).

    Under ``torchrun`` every process runs the pipeline: the runner joins the process group when it is built,
    training is DDP with a disjoint share of the batches per process, and the validations and inference are
    sharded and merged, equal to one process's.

    Args:
        epochs: training epochs in total (a resumed run counts the epochs done).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1`` ...
        precision: ``32``, or mixed precision: ``16-mixed`` (CUDA) / ``bf16-mixed`` (CPU).
        grad_clip_norm: clip the gradients' global norm to this value.
        scheduler_interval: step the scheduler every ``epoch`` or every ``step``.
        log_every_n_steps: how often the loss is logged to the experiment loggers (the config's ``logger``).
        progress: progress bars.
    """

    checkpoint_name = CHECKPOINT_NAME

    def __init__(
        self,
        epochs: int = 1,
        device: str = "auto",
        precision: Precision = "32",
        grad_clip_norm: float | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        log_every_n_steps: int = 50,
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
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be a positive integer, got {log_every_n_steps!r}")
        self.scheduler_interval = scheduler_interval
        self.log_every_n_steps = log_every_n_steps
        self.progress = progress

    def fit(self, job: FitJob) -> None:
        """One :func:`~omlcore_torch.fit` call over every epoch left; ``checkpoints/last.pt`` after each."""
        job.model.to(self.device)
        optimizer = job.build_optimizer(job.trainable_parameters())
        scheduler = job.build_scheduler(optimizer) if job.build_scheduler is not None else None
        fit(
            job.model,
            job.loss,
            optimizer,
            job.train_loader,
            epochs=self.epochs,
            scheduler=scheduler,
            scheduler_interval=self.scheduler_interval,
            val_dataset=job.val_dataset,
            metrics=job.metric,
            val_batch_size=job.batch_size,
            val_num_workers=job.num_workers,
            amp=self.precision != "32",
            grad_clip_norm=self.grad_clip_norm,
            checkpoint_dir=job.checkpoint_dir,
            resume=job.resume,
            progress=self.progress,
            callbacks=[*job.callbacks, _EpochRecords(job)],
            loggers=job.tracker,
            log_every_n_steps=self.log_every_n_steps,
        )

    def check_callbacks(self, callbacks: Sequence[object]) -> None:
        """A TypeError for a callback that is not an :class:`omlcore_torch.callbacks.Callback` (a Lightning one)."""
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(
                    f"the torch runner takes omlcore's callbacks (early_stopping, top_k_checkpoints, lr_monitor, "
                    f"freeze_backbone, or an omlcore_torch.callbacks.Callback), not {type(callback).__name__}"
                )

    def evaluate(
        self, model: nn.Module, dataset: Dataset[Any], metric: MetricAccumulator, batch_size: int, num_workers: int
    ) -> dict[str, Any]:
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
        return inference(
            model, dataset, batch_size=batch_size, num_workers=num_workers, device=self.device, progress=self.progress
        )

    def is_primary(self) -> bool:
        """Rank 0 under ``torchrun``; the only process otherwise (a stray ``RANK`` without ``WORLD_SIZE > 1``)."""
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
        return not _launched_by_torchrun() or os.environ["RANK"] == "0"

    def share_run_dir(self, path: Path) -> Path:
        """Process 0's ``path``, broadcast to every process of the group."""
        if not (dist.is_available() and dist.is_initialized()):
            return path
        shared = [str(path)]
        dist.broadcast_object_list(shared, src=0)
        return Path(shared[0])

    def extractor_weights(self, checkpoint: Mapping[str, Any]) -> Mapping[str, Tensor] | None:
        """The ``model`` entry of a :func:`~omlcore_torch.fit` checkpoint."""
        model = checkpoint.get("model")
        return model if isinstance(model, Mapping) and "optimizer" in checkpoint else None

    def trained_epochs(self, checkpoint: Mapping[str, Any]) -> int | None:
        """The ``epoch`` entry of a :func:`~omlcore_torch.fit` checkpoint (the epochs done)."""
        epoch = checkpoint.get("epoch")
        return epoch if isinstance(epoch, int) and self.extractor_weights(checkpoint) is not None else None
