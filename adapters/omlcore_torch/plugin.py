"""Plugin ``torch``: registers the pipelines' ``torch`` runner (kind ``runner``,
:class:`omlcore_torch.runner.TorchRunner`), the experiment loggers (kind ``logger``, :mod:`omlcore_torch.loggers`) and
the training callbacks (kind ``callback``, :mod:`omlcore_torch.callbacks`).

Targets are import strings, so registering imports nothing. A logger whose client library is missing is listed as
unavailable with the ``pip install "omlcore[<extra>]"`` that installs it. torch.optim's optimizers and schedulers come
with omlcore's core plugin, so disabling this plugin (``OMLCORE_DISABLE_PLUGINS=torch``) leaves them to the other
runners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["CALLBACKS", "LOGGERS", "register_callbacks", "register_loggers", "register_runners"]

#: name -> (class in omlcore_torch.loggers, import names it needs, omlcore extra, summary)
LOGGERS: dict[str, tuple[str, tuple[str, ...], str | None, str]] = {
    "csv": ("CSVLogger", (), None, "metrics.csv and hparams.yaml in <run>/logs (Lightning's CSVLogger layout)"),
    "tensorboard": (
        "TensorBoardLogger",
        ("tensorboard",),
        "tensorboard",
        "TensorBoard event files in <run>/tensorboard",
    ),
    "mlflow": (
        "MLflowLogger",
        ("mlflow", "sqlalchemy", "alembic"),
        "mlflow",
        "an MLflow run (default store: sqlite:///<output_dir>/mlflow.db)",
    ),
    "wandb": ("WandbLogger", ("wandb",), "wandb", "a Weights & Biases run (mode: online / offline)"),
    "neptune": ("NeptuneLogger", ("neptune",), "neptune", "a Neptune run"),
    "comet": ("CometLogger", ("comet_ml",), "comet", "a Comet experiment (online or offline)"),
    "clearml": ("ClearMLLogger", ("clearml",), "clearml", "a ClearML task"),
}

#: name -> (class in omlcore_torch.callbacks, summary)
CALLBACKS: dict[str, tuple[str, str]] = {
    "early_stopping": ("EarlyStopping", "stop when a metric of the epoch records stops improving (patience)"),
    "top_k_checkpoints": ("TopKCheckpoints", "keep the checkpoints of the k best epochs by a metric"),
    "lr_monitor": ("LearningRateMonitor", "log the learning rates to the experiment loggers"),
    "freeze_backbone": ("FreezeBackbone", "train the head with the backbone frozen for N epochs, then everything"),
}


@hookimpl
def register_runners(registry: Registrar) -> None:
    registry.register(
        "torch",
        "omlcore_torch.runner:TorchRunner",
        summary="pipelines in plain PyTorch (omlcore_torch.fit / evaluate / inference); DDP under torchrun",
    )


@hookimpl
def register_loggers(registry: Registrar) -> None:
    for name, (class_name, requires, extra, summary) in LOGGERS.items():
        registry.register(name, f"omlcore_torch.loggers:{class_name}", requires=requires, extra=extra, summary=summary)


@hookimpl
def register_callbacks(registry: Registrar) -> None:
    for name, (class_name, summary) in CALLBACKS.items():
        registry.register(name, f"omlcore_torch.callbacks:{class_name}", summary=summary)
