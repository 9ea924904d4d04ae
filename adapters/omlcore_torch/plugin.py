"""Plugin ``torch``: registers the pipelines' ``torch`` runner (kind ``runner``,
:class:`omlcore_torch.runner.TorchRunner`) and the training callbacks (kind ``callback``,
:mod:`omlcore_torch.callbacks`); the experiment loggers come with plugin ``tracking``
(:mod:`omlcore_torch.tracking_plugin`).

Targets are import strings, so registering imports nothing. torch.optim's optimizers and schedulers come
with omlcore's core plugin, so disabling this plugin (``OMLCORE_DISABLE_PLUGINS=torch``) leaves them to the other
runners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["CALLBACKS", "register_callbacks", "register_runners"]

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
def register_callbacks(registry: Registrar) -> None:
    for name, (class_name, summary) in CALLBACKS.items():
        registry.register(name, f"omlcore_torch.callbacks:{class_name}", summary=summary)
