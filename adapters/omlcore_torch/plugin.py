"""Plugin ``torch``: registers the pipelines' ``torch`` runner (kind ``runner``),
:class:`omlcore_torch.runner.TorchRunner`.

Its target is an import string, so registering imports nothing. torch.optim's optimizers and schedulers come with
omlcore's core plugin, so disabling this plugin (``OMLCORE_DISABLE_PLUGINS=torch``) leaves them to the other runners.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omlcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["register_runners"]


@hookimpl
def register_runners(registry: Registrar) -> None:
    registry.register(
        "torch",
        "omlcore_torch.runner:TorchRunner",
        summary="pipelines in plain PyTorch (omlcore_torch.fit / evaluate / inference); DDP under torchrun",
    )
