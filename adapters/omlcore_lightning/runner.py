"""``runner: {name: lightning, args: {...}}``: the pipelines' loops in a PyTorch Lightning ``Trainer``.

Training uses :class:`omlcore_lightning.RetrievalModule` and :class:`omlcore_lightning.MetricValCallback`; Lightning
is imported when a runner is built, with the install hint if it is missing (``pip install "omlcore[lightning]"``).
Under Lightning's ``ddp`` launcher, which starts the other processes of a node by running the same command again,
those processes find the primary one's run folder through :data:`RUN_DIR_ENV`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from omlcore.keys import EMBEDDINGS, IMAGES
from omlcore.protocols import FitJob, MetricAccumulator
from omlcore.utils.optional import require

__all__ = ["RUN_DIR_ENV", "LightningRunner"]

#: Set by the primary process to its run folder, so that the processes Lightning's launcher starts later (which run
#: the same pipeline) find it.
RUN_DIR_ENV = "OMLCORE_RUN_DIR"


def _records(trainer: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in trainer.callback_metrics.items()}


class LightningRunner:
    """A Lightning ``Trainer`` per call, configured by these arguments (Lightning's own names and values).

    Args:
        epochs: training epochs in total (``max_epochs``; a resumed run counts the epochs done).
        accelerator: ``auto``, ``cpu``, ``gpu`` ...; devices: a count or a list of device ids;
            strategy: ``auto``, ``ddp``, ``ddp_spawn`` ...; precision: ``32-true``, ``16-mixed``, ``bf16-mixed`` ...
        grad_clip_norm: clip the gradients' global norm (``gradient_clip_val``).
        scheduler_interval: step the scheduler every ``epoch`` or every ``step``.
        val_every_n_epochs: validate every this many epochs (``check_val_every_n_epoch``).
        log_every_n_steps: how often the loss and its statistics go to the experiment loggers.
        progress: Lightning's progress bar.
    """

    checkpoint_name = "last.ckpt"

    def __init__(
        self,
        epochs: int = 1,
        accelerator: str = "auto",
        devices: int | str | list[int] = 1,
        strategy: str = "auto",
        precision: str = "32-true",
        grad_clip_norm: float | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        val_every_n_epochs: int = 1,
        log_every_n_steps: int = 10,
        progress: bool = True,
    ) -> None:
        self.pl = require("lightning.pytorch", "lightning", what="runner 'lightning'")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        self.epochs = epochs
        self.trainer_args: dict[str, Any] = {
            "accelerator": accelerator,
            "devices": devices,
            "strategy": strategy,
            "precision": precision,
            "enable_progress_bar": progress,
            "enable_model_summary": False,
        }
        self.grad_clip_norm = grad_clip_norm
        self.scheduler_interval = scheduler_interval
        self.log_every_n_steps = log_every_n_steps
        self.val_every_n_epochs = val_every_n_epochs

    def _trainer(self, **args: Any) -> Any:
        return self.pl.Trainer(**{**self.trainer_args, **args})

    def fit(self, job: FitJob) -> None:
        """``trainer.fit`` with validation every epoch, ``checkpoints/last.ckpt`` after every epoch, the job's
        callbacks and loggers as Lightning's (:mod:`omlcore_lightning.tracking`). Ctrl-C (which Lightning turns into
        ``SystemExit``) is raised as ``KeyboardInterrupt``."""
        from omlcore_lightning import MetricValCallback, RetrievalModule
        from omlcore_lightning.tracking import has_checkpointing, lightning_callbacks, lightning_loggers

        pl = self.pl
        on_epoch = job.on_epoch
        last = job.checkpoint_dir / self.checkpoint_name

        class EpochCheckpoint(pl.Callback):  # type: ignore[name-defined]
            """After every epoch: ``last.ckpt`` (written atomically), then the epoch's record for the pipeline: the
            0-based ``epoch``, the mean loss and loss statistics, the validation metrics and ``epoch_time_s``
            (training and validation, without the checkpoint), as in omlcore_torch.fit's records."""

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.sums: dict[str, float] = {}
                self.steps = 0
                self.started = time.perf_counter()

            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
                loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
                values = {"loss": float(loss), **getattr(pl_module.loss, "last_logs", {})}
                for name, value in values.items():
                    self.sums[name] = self.sums.get(name, 0.0) + float(value)
                self.steps += 1

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                elapsed = time.perf_counter() - self.started  # Lightning has validated the epoch by now
                temporary = last.with_name(last.name + ".tmp")
                trainer.save_checkpoint(temporary)  # every process takes part; process 0 writes
                if trainer.is_global_zero:
                    os.replace(temporary, last)
                trainer.strategy.barrier("omlcore last.ckpt")
                means = {name: total / max(self.steps, 1) for name, total in self.sums.items()}
                metrics = {k: v for k, v in _records(trainer).items() if not k.startswith("train/")}
                on_epoch({"epoch": trainer.current_epoch, **means, **metrics, "epoch_time_s": elapsed})

        module = RetrievalModule(
            job.model,
            job.loss,
            optimizer=job.build_optimizer,
            scheduler=job.build_scheduler,
            scheduler_interval=self.scheduler_interval,
        )
        callbacks: list[Any] = []
        val_loader = None
        if job.val_dataset is not None and job.metric is not None:
            callbacks.append(MetricValCallback(job.metric))
            val_loader = DataLoader(job.val_dataset, batch_size=job.batch_size, num_workers=job.num_workers)
        # the config's callbacks first: their epoch-end state (early stopping's) goes into the epoch's last.ckpt
        callbacks += lightning_callbacks(job.callbacks, job.checkpoint_dir, self.is_primary())
        callbacks.append(EpochCheckpoint())
        trainer = self._trainer(
            max_epochs=self.epochs,
            callbacks=callbacks,
            enable_checkpointing=has_checkpointing(callbacks),  # EpochCheckpoint writes last.ckpt in any case
            logger=lightning_loggers(job.tracker) or False,
            gradient_clip_val=self.grad_clip_norm,
            log_every_n_steps=self.log_every_n_steps,
            check_val_every_n_epoch=self.val_every_n_epochs,
            num_sanity_val_steps=0,
        )
        job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        try:
            trainer.fit(module, job.train_loader, val_loader, ckpt_path=job.resume)
        except SystemExit:
            if trainer.interrupted:  # Lightning caught Ctrl-C, shut down gracefully and exited
                raise KeyboardInterrupt from None
            raise

    def check_callbacks(self, callbacks: Sequence[object]) -> None:
        """A TypeError for a callback that is neither Lightning's nor one of omlcore's that have a Lightning form."""
        from omlcore_lightning.tracking import lightning_callbacks

        lightning_callbacks(callbacks, Path(), primary=True)

    def evaluate(
        self, model: nn.Module, dataset: Dataset[Any], metric: MetricAccumulator, batch_size: int, num_workers: int
    ) -> dict[str, Any]:
        """``trainer.validate`` feeding ``metric`` through :class:`~omlcore_lightning.MetricValCallback`."""
        from omlcore_lightning import MetricValCallback

        callback = MetricValCallback(metric)
        trainer = self._trainer(callbacks=[callback], logger=False)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
        trainer.validate(_embedder(self.pl, model), loader, verbose=False)  # the pipelines print their own tables
        return callback.metrics

    def inference(self, model: nn.Module, dataset: Dataset[Any], batch_size: int, num_workers: int) -> Tensor:
        """``trainer.predict``, gathered across processes in dataset order."""
        from omlcore_lightning import gather_predictions

        trainer = self._trainer(logger=False)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
        predictions = trainer.predict(_embedder(self.pl, model), loader)
        return gather_predictions(predictions or [])

    def is_primary(self) -> bool:
        """Read from the launchers' environment before any process group exists, when ``WORLD_SIZE > 1``:
        ``RANK`` (torchrun), else ``NODE_RANK`` and ``LOCAL_RANK`` (Lightning's ``ddp`` launcher)."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return True
        if "RANK" in os.environ:
            return os.environ["RANK"] == "0"
        return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"

    def share_run_dir(self, path: Path) -> Path:
        """The primary process publishes ``path`` in :data:`RUN_DIR_ENV`; the processes launched later read it."""
        if self.is_primary():
            os.environ[RUN_DIR_ENV] = str(path)
            return path
        return Path(os.environ.get(RUN_DIR_ENV, path))

    def trained_epochs(self, checkpoint: Mapping[str, Any]) -> int | None:
        """The epochs a ``last.ckpt`` has trained (Lightning's fit-loop progress: epochs processed)."""
        if self.extractor_weights(checkpoint) is None:
            return None
        try:
            return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError, ValueError):
            return int(checkpoint["epoch"]) + 1 if isinstance(checkpoint.get("epoch"), int) else None

    def extractor_weights(self, checkpoint: Mapping[str, Any]) -> Mapping[str, Tensor] | None:
        """The ``extractor.*`` entries of a checkpoint of :class:`~omlcore_lightning.RetrievalModule`."""
        state = checkpoint.get("state_dict")
        if not isinstance(state, Mapping) or "pytorch-lightning_version" not in checkpoint:
            return None
        return {k.removeprefix("extractor."): v for k, v in state.items() if k.startswith("extractor.")}


def _embedder(pl: Any, model: nn.Module) -> Any:
    """A LightningModule that only embeds (validation / prediction), with omlcore's evaluation sharding."""
    from omlcore_lightning import install_sampling

    class Embedder(pl.LightningModule):
        def __init__(self, extractor: nn.Module) -> None:
            super().__init__()
            self.extractor = extractor

        def setup(self, stage: str) -> None:
            install_sampling(self.trainer)

        def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
            return {**{k: v for k, v in batch.items() if k != IMAGES}, EMBEDDINGS: self.extractor(batch[IMAGES])}

        def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
            embeddings: Tensor = self.extractor(batch[IMAGES])
            return embeddings

    return Embedder(model)
