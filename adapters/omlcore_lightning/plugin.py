"""Plugin ``lightning``: registers Lightning callbacks (kind ``callback``), loggers (kind ``logger``) and omlcore's
Lightning components: ``lightning.MetricValCallback`` (callback) and ``lightning.RetrievalModule`` (runner).

Names are ``lightning.<ClassName>`` with targets in ``lightning.pytorch.callbacks`` / ``lightning.pytorch.loggers``,
registered as import strings: listing them never imports Lightning. Without Lightning (or a component's own
extra package) installed they are listed as unavailable, with ``pip install "omlcore[lightning]"`` as the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = [
    "CALLBACKS",
    "EXTRA",
    "LOGGERS",
    "OMLCORE_COMPONENTS",
    "register_callbacks",
    "register_loggers",
    "register_runners",
]

EXTRA = "lightning"

#: class name in lightning.pytorch.callbacks -> (import names it needs besides lightning, summary)
CALLBACKS: dict[str, tuple[tuple[str, ...], str]] = {
    "ModelCheckpoint": ((), "save checkpoints periodically or of the best model by a monitored metric"),
    "EarlyStopping": ((), "stop training when a monitored metric stops improving"),
    "LearningRateMonitor": ((), "log the learning rate of each optimizer"),
    "RichProgressBar": (("rich",), "a progress bar drawn with rich"),
    "TQDMProgressBar": ((), "a tqdm progress bar (Lightning's default)"),
}

#: class name in lightning.pytorch.loggers -> (import names it needs besides lightning, summary)
LOGGERS: dict[str, tuple[tuple[str, ...], str]] = {
    "CSVLogger": ((), "log metrics and hyperparameters to CSV / YAML files"),
    # Lightning 2.x writes with tensorboardX (its own 'extra' installs it); tensorboard alone works too.
    "TensorBoardLogger": (("tensorboardX",), "log to TensorBoard event files"),
}

#: omlcore's own Lightning components: name -> (kind, target, summary)
OMLCORE_COMPONENTS: dict[str, tuple[str, str, str]] = {
    "lightning.MetricValCallback": (
        "callback",
        "omlcore_lightning.callback:MetricValCallback",
        "feed a metric accumulator during validation / test, log its flat keys, exact under DDP",
    ),
    "lightning.RetrievalModule": (
        "runner",
        "omlcore_lightning.module:RetrievalModule",
        "LightningModule: an extractor trained with any omlcore loss; validate / predict give embeddings",
    ),
}


def _register_own(registry: Registrar, kind: str) -> None:
    for name, (entry_kind, target, summary) in OMLCORE_COMPONENTS.items():
        if entry_kind == kind:
            registry.register(name, target, requires=("lightning",), extra=EXTRA, summary=summary)


@hookimpl
def register_callbacks(registry: Registrar) -> None:
    for class_name, (requires, summary) in CALLBACKS.items():
        registry.register(
            f"lightning.{class_name}",
            f"lightning.pytorch.callbacks:{class_name}",
            requires=("lightning", *requires),
            extra=EXTRA,
            summary=summary,
        )
    _register_own(registry, "callback")


@hookimpl
def register_loggers(registry: Registrar) -> None:
    for class_name, (requires, summary) in LOGGERS.items():
        registry.register(
            f"lightning.{class_name}",
            f"lightning.pytorch.loggers:{class_name}",
            requires=("lightning", *requires),
            extra=EXTRA,
            summary=summary,
        )


@hookimpl
def register_runners(registry: Registrar) -> None:
    _register_own(registry, "runner")
