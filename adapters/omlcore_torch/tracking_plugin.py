"""Plugin ``tracking``: registers the experiment loggers (kind ``logger``) of :mod:`omlcore_torch.loggers`, each
built on its tool's own client library.

A logger whose client library is missing is listed as unavailable with the ``pip install "omlcore[<extra>]"`` that
installs it (so this plugin is "partly available" until every tool is installed), and a config that names it stops
before the run starts. Targets are import strings: registering imports nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["LOGGERS", "register_loggers"]

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


@hookimpl
def register_loggers(registry: Registrar) -> None:
    for name, (class_name, requires, extra, summary) in LOGGERS.items():
        registry.register(name, f"omlcore_torch.loggers:{class_name}", requires=requires, extra=extra, summary=summary)
