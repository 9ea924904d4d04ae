"""A small, readable training loop: epochs, AMP on CUDA, gradient clipping, validation, checkpoints, exact resume.

:func:`fit` trains ``model`` (an extractor) with a :class:`~omlcore.protocols.Loss` and validates it with any
:class:`~omlcore.protocols.MetricAccumulator`. A checkpoint is written after every epoch (model, loss, optimizer,
scheduler, AMP scaler, epoch, history and every rank's RNG states); resuming from it continues exactly where the
uninterrupted run would be: the sampler gets the same epoch (``set_epoch``), the random streams are restored, so
the resumed run reproduces the uninterrupted one. :mod:`omlcore_torch.callbacks` hook into the epochs. Under
``torch.distributed`` (e.g. ``torchrun``) the model and loss are wrapped in ``DistributedDataParallel`` and the
training loader is sharded unless it already is.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.utils.data import DataLoader, Dataset

from omlcore.keys import IMAGES, LABELS
from omlcore.protocols import Loss, MetricAccumulator
from omlcore.tracking import ExperimentLogger, Tracker, as_tracker
from omlcore_torch.callbacks import Callback, FitState, run_callbacks
from omlcore_torch.checks import check_loss, check_optimizer_covers
from omlcore_torch.distributed import rank_and_world_size, shard_train_loader
from omlcore_torch.evaluation import evaluate, model_device, progress_bar

__all__ = ["CHECKPOINT_NAME", "fit", "load_checkpoint", "rng_state", "set_rng_state"]

#: The file :func:`fit` writes into ``checkpoint_dir`` after every epoch.
CHECKPOINT_NAME = "last.pt"

Scheduler = LRScheduler | ReduceLROnPlateau


class _ModelWithLoss(nn.Module):
    """The model and the loss as one module, so that DDP also averages the gradients of a trainable loss."""

    def __init__(self, model: nn.Module, loss: Loss) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, images: Tensor, labels: Tensor, autocast: Callable[[], Any]) -> Tensor:
        with autocast():
            embeddings = self.model(images)
        return self.loss(embeddings.float(), labels)  # the loss in full precision


def rng_state() -> dict[str, Any]:
    """Python's, numpy's, torch's and (if initialised) CUDA's global random states, as plain tensors and tuples."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint written by :func:`fit` (tensors on the CPU; loaded with ``weights_only=True``)."""
    state: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=True)
    return state


def _set_epoch(loader: DataLoader[Any], epoch: int) -> None:
    """``set_epoch`` on the loader's batch sampler and sampler (omlcore's samplers, ``DistributedSampler``)."""
    for owner in {id(o): o for o in (loader.batch_sampler, loader.sampler) if o is not None}.values():
        set_epoch = getattr(owner, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def _gather_rng_states() -> list[dict[str, Any]]:
    state = rng_state()
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return [state]
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, state)
    return everyone


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over the ranks that have it (an epoch's loss and loss statistics)."""
    world_size = rank_and_world_size()[1]
    if world_size == 1:
        return values
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, values)
    names = dict.fromkeys(name for rank_values in everyone for name in rank_values)
    return {name: sum(v[name] for v in everyone if name in v) / sum(name in v for v in everyone) for name in names}


def _scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """The flat numeric entries of a metrics dict (``"OVERALL/cmc/1": 0.9``), as floats."""
    return {
        str(k): float(v)
        for k, v in results.items()
        if isinstance(v, int | float) or (isinstance(v, Tensor) and v.numel() == 1)
    }


def fit(
    model: nn.Module,
    loss: Loss,
    optimizer: Optimizer,
    train_loader: DataLoader[Any],
    *,
    epochs: int = 1,
    scheduler: Scheduler | None = None,
    scheduler_interval: Literal["epoch", "step"] = "epoch",
    monitor: str = "loss",
    val_dataset: Dataset[Any] | None = None,
    metrics: MetricAccumulator | None = None,
    val_batch_size: int = 64,
    val_num_workers: int = 0,
    validate_untrained: bool = False,
    device: torch.device | str | None = None,
    amp: bool | None = None,
    grad_clip_norm: float | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    loggers: Tracker | Sequence[ExperimentLogger] | None = None,
    log_every_n_steps: int = 50,
    input_key: str = IMAGES,
    labels_key: str = LABELS,
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs; returns the history, one record per epoch.

    A record holds ``epoch``, the epoch's 0-based index (the value its sampler's ``set_epoch`` gets, as
    ``FitState.epoch`` and Lightning's ``current_epoch``; the progress bar counts "epoch k/N" from 1, k = epoch + 1),
    ``loss`` and the mean of the loss's ``last_logs`` over the epoch's steps, ``lr`` after the epoch, the flat
    validation metrics, and ``epoch_time_s``: the wall time of the epoch's training and validation in this process
    (``time.perf_counter`` from after ``on_epoch_start`` to after ``on_validation_end``), the one field that
    differs between equal runs.
    With ``validate_untrained`` the history starts with the untrained model's record: ``epoch`` -1 and the flat
    validation metrics.

    Args:
        model: the extractor: ``batch[input_key]`` -> ``(B, D)`` embeddings.
        loss: ``loss(embeddings, labels)``; an ``nn.Module`` loss is moved to the device and checkpointed, and its
            trainable parameters (ArcFace, proxies ...) must be in ``optimizer``.
        optimizer, scheduler: torch objects; the scheduler steps every epoch or every step (``scheduler_interval``);
            ``ReduceLROnPlateau`` gets the epoch record's ``monitor`` value.
        train_loader: yields dicts with ``input_key`` and ``labels_key``, e.g. over an omlcore sampler:
            ``DataLoader(dataset, batch_sampler=BalanceSampler(...))``. ``set_epoch(epoch)`` is called on its
            sampler every epoch.
        val_dataset, metrics: validated after every epoch with :func:`~omlcore_torch.evaluate` when both are given.
        validate_untrained: validate before the first epoch too (the baseline; not when resuming, whose history
            has that record already); needs ``val_dataset`` and ``metrics``.
        device: default: the model's device. amp: mixed precision (fp16 with a gradient scaler on CUDA, bf16 on the
            CPU); default: on for CUDA. grad_clip_norm: clip the gradients' global norm.
        checkpoint_dir: write ``checkpoint_dir/last.pt`` after every epoch (rank 0).
        resume: a checkpoint of :func:`fit` to continue from; ``epochs`` is the total, including the epochs done.
        progress: a progress bar per epoch with the running loss and the last metrics (rank 0 only).
        callbacks: :class:`~omlcore_torch.callbacks.Callback` objects, called at the start and end of training and
            of each epoch, after each step, after validation and after each checkpoint.
        loggers: :class:`~omlcore.tracking.ExperimentLogger` objects (or a :class:`~omlcore.tracking.Tracker`),
            written by process 0 only: ``train/loss`` and ``train/<statistic>`` every ``log_every_n_steps`` steps,
            and after each epoch ``epoch``, ``train/loss_epoch`` and the flat validation metrics, at the 0-based index
            of the last optimizer step (as Lightning logs them). A logger that fails warns once and training goes on.
            ``fit`` flushes them (``save``) after every epoch but does not finalize them: the caller does, once the run
            is over.
    """
    check_loss(loss)
    check_optimizer_covers(loss, optimizer)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if isinstance(scheduler, ReduceLROnPlateau) and scheduler_interval != "epoch":
        raise ValueError("ReduceLROnPlateau steps on an epoch's record: use scheduler_interval='epoch'")
    if (val_dataset is None) != (metrics is None):
        raise ValueError("pass both val_dataset and metrics to validate, or neither")
    if validate_untrained and val_dataset is None:
        raise ValueError("validate_untrained needs val_dataset and metrics")
    if log_every_n_steps < 1:
        raise ValueError(f"log_every_n_steps must be at least 1, got {log_every_n_steps}")
    foreign = [type(c).__name__ for c in callbacks if not isinstance(c, Callback)]
    if foreign:
        raise TypeError(f"callbacks must subclass omlcore_torch.callbacks.Callback; got {', '.join(foreign)}")
    target = torch.device(device) if device is not None else model_device(model)
    use_amp = target.type == "cuda" if amp is None else amp
    amp_dtype = torch.float16 if target.type == "cuda" else torch.bfloat16
    scaler = _grad_scaler(target.type, enabled=use_amp and amp_dtype == torch.float16)

    def autocast() -> Any:
        return torch.autocast(target.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()

    rank, world_size = rank_and_world_size()
    trainable = _ModelWithLoss(model, loss).to(target)

    def wrap() -> nn.Module:
        """DDP over the parameters that require gradients now (built again when a callback freezes or unfreezes)."""
        if world_size == 1:
            return trainable
        device_ids = None
        if target.type == "cuda":
            device_ids = [target.index if target.index is not None else torch.cuda.current_device()]
        return DistributedDataParallel(trainable, device_ids=device_ids)

    step_module, wrapped_for = wrap(), _requires_grad(trainable)
    if world_size > 1:
        train_loader = shard_train_loader(train_loader)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume is not None:
        start_epoch, history = _restore(resume, model, loss, optimizer, scheduler, scaler, rank)
    tracker = as_tracker(loggers) if rank == 0 else Tracker()
    state = FitState(
        model,
        loss,
        optimizer,
        scheduler,
        epochs,
        start_epoch,
        history,
        rank,
        world_size,
        global_step=start_epoch * len(train_loader),
        tracker=tracker,
        log_every_n_steps=log_every_n_steps,
    )
    run_callbacks(callbacks, "on_fit_start", state)

    def validate() -> dict[str, float]:
        """The flat validation metrics of the model as it is now, handed to the callbacks too."""
        assert val_dataset is not None and metrics is not None
        results = evaluate(
            model,
            val_dataset,
            metrics,
            batch_size=val_batch_size,
            num_workers=val_num_workers,
            device=target,
            input_key=input_key,
            progress=False,
        )
        flat = _scalars(results)
        run_callbacks(callbacks, "on_validation_end", state, flat)
        return flat

    last_metrics: dict[str, float] = {}
    if validate_untrained and resume is None:
        state.epoch = -1
        last_metrics = validate()
        history.append({"epoch": -1, **last_metrics})
        tracker.log_metrics({"epoch": -1, **last_metrics}, state.log_step)
    for epoch in range(start_epoch, epochs):
        state.epoch = epoch
        run_callbacks(callbacks, "on_epoch_start", state)
        if world_size > 1 and _requires_grad(trainable) != wrapped_for:
            step_module, wrapped_for = wrap(), _requires_grad(trainable)
        started = time.perf_counter()
        _set_epoch(train_loader, epoch)
        trainable.train()
        total, steps, logs = 0.0, 0, dict[str, float]()
        with progress_bar(train_loader, f"epoch {epoch + 1}/{epochs}", progress and rank == 0) as bar:
            for batch in train_loader:
                images = batch[input_key].to(target, non_blocking=True)
                labels = batch[labels_key].to(target, non_blocking=True)
                value = step_module(images, labels, autocast)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(value).backward()
                if grad_clip_norm is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                if scheduler is not None and scheduler_interval == "step":
                    scheduler.step()
                step_values = {"loss": float(value.detach())}
                for name, stat in getattr(loss, "last_logs", {}).items():
                    step_values[name] = float(stat)
                    logs[name] = logs.get(name, 0.0) + step_values[name]
                total, steps = total + step_values["loss"], steps + 1
                state.global_step += 1
                if tracker and state.global_step % log_every_n_steps == 0:
                    tracker.log_metrics({f"train/{k}": v for k, v in step_values.items()}, state.log_step)
                run_callbacks(callbacks, "on_step_end", state, step_values)
                if not bar.disable:
                    bar.set_postfix({"loss": total / steps, **last_metrics}, refresh=False)
                bar.update()
        if world_size > 1:  # DDP keeps the parameters equal, but each rank's last forward updated its own buffers
            for buffer in trainable.buffers():  # (BatchNorm statistics): rank 0's, as DDP itself before each forward
                dist.broadcast(buffer, src=0)
        record = {"loss": total / steps if steps else math.nan, **{k: v / max(steps, 1) for k, v in logs.items()}}
        record = {"epoch": epoch, **_mean_over_ranks(record), "lr": float(optimizer.param_groups[0]["lr"])}
        if val_dataset is not None and metrics is not None:
            last_metrics = validate()
            record.update(last_metrics)
        record["epoch_time_s"] = time.perf_counter() - started
        if scheduler is not None and scheduler_interval == "epoch":
            if isinstance(scheduler, ReduceLROnPlateau):
                scheduler.step(record[monitor])
            else:
                scheduler.step()
        history.append(record)
        if checkpoint_dir is not None:
            checkpoint = {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "loss": loss.state_dict() if isinstance(loss, nn.Module) else {},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(),
                "history": history,
                "rng": _gather_rng_states(),  # every rank's, taken last: the next epoch starts from them
            }
            path = Path(checkpoint_dir) / CHECKPOINT_NAME
            _save(path, checkpoint, rank)
            if world_size > 1:
                dist.barrier()  # every process's hook sees the written file
            run_callbacks(callbacks, "on_checkpoint", state, path)
        tracker.log_metrics({"epoch": epoch, "train/loss_epoch": record["loss"], **last_metrics}, state.log_step)
        run_callbacks(callbacks, "on_epoch_end", state, record)
        tracker.save()
        if state.should_stop:
            break
    state.epoch = len([record for record in history if record["epoch"] >= 0])
    run_callbacks(callbacks, "on_fit_end", state)
    return history


def _requires_grad(module: nn.Module) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in module.parameters())


def _grad_scaler(device_type: str, enabled: bool) -> Any:
    """``torch.amp.GradScaler`` (torch >= 2.3), or the CUDA one of older torch."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def _restore(
    path: str | os.PathLike[str],
    model: nn.Module,
    loss: Loss,
    optimizer: Optimizer,
    scheduler: Scheduler | None,
    scaler: Any,
    rank: int,
) -> tuple[int, list[dict[str, float]]]:
    """Load a checkpoint of :func:`fit` into the objects and this rank's RNG states; the epochs done and history."""
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    if isinstance(loss, nn.Module):
        loss.load_state_dict(state["loss"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state.get("scheduler") is None:
            raise ValueError(f"the checkpoint {path} was saved without a scheduler; resume without one")
        scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rng_states = state["rng"]  # one per rank; a run resumed on more processes gives the extra ones rank 0's
    set_rng_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
    return int(state["epoch"]), list(state["history"])


def _save(path: Path, state: dict[str, Any], rank: int) -> None:
    """Write ``state`` atomically (a temporary file, then a rename), on rank 0 only."""
    if rank != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)
