"""Plugin ``lightning``: registers Lightning callbacks (kind ``callback``) and loggers (kind ``logger``), plus omlcore's
own callback ``lightning.MetricValCallback`` (:class:`omlcore_lightning.MetricValCallback`) and the pipelines'
``lightning`` runner (kind ``runner``, :class:`omlcore_lightning.runner.LightningRunner`).

Names are ``lightning.<ClassName>`` with targets in ``lightning.pytorch.callbacks`` / ``lightning.pytorch.loggers``,
registered as import strings: listing them never imports Lightning. Without Lightning (or a component's own
extra package) installed they are listed as unavailable, with ``pip install "omlcore[lightning]"`` as the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["CALLBACKS", "EXTRA", "LOGGERS", "register_callbacks", "register_loggers", "register_runners"]

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
    registry.register(
        "lightning.MetricValCallback",
        "omlcore_lightning.callback:MetricValCallback",
        requires=("lightning",),
        extra=EXTRA,
        summary="feed a metric accumulator during validation / test, log its flat keys, exact under DDP",
    )


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
    registry.register(
        "lightning",
        "omlcore_lightning.runner:LightningRunner",
        # No `requires`: configs naming it stay valid without Lightning; building the runner says what to install.
        summary='pipelines in a Lightning Trainer (devices, strategy, precision); needs "omlcore[lightning]"',
    )
