"""Plugin ``pml``: registers every pytorch-metric-learning loss (kind ``loss``) and miner (kind ``miner``), and the
check of PML objects (kind ``check``).

Names are ``pml.<ClassName>`` (the class names are in :mod:`omlcore_pml.names`). A loss's target is the PML
class itself; a miner's target is a lazy callable returning :func:`omlcore_pml.miners.miner_factory`, whose
products wrap the PML miner in :class:`omlcore_pml.miners.PMLMiner`. ``pml.PMLLoss`` is
:class:`omlcore_pml.losses.PMLLoss`, a PML loss fed by a miner, both given as configs, e.g. ``{"name": "pml.PMLLoss",
"args": {"loss": {"name": "pml.TripletMarginLoss"}, "miner": {"name": "pml.BatchHardMiner"}}}``. The check
``pml.objects`` is :func:`omlcore_pml.checks.check_pml_object`: omlcore's loops run it on their loss, so that a raw PML
loss that takes no labels, or a PML miner or distance given as the loss, fails at construction.
Registering imports neither PML nor torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omlcore.hookspecs import hookimpl
from omlcore_pml.names import PML_LOSSES, PML_MINERS

if TYPE_CHECKING:
    from omlcore.registry import Registrar

__all__ = ["EXTRA", "REQUIRES", "register_checks", "register_losses", "register_miners"]

EXTRA = "pml"
REQUIRES = ("pytorch_metric_learning",)


@dataclass(frozen=True)
class _LazyMinerFactory:
    """Target of miner ``pml.<class_name>``: called (with no arguments) on load, imports PML."""

    class_name: str

    def __call__(self) -> Callable[..., Any]:
        from omlcore_pml.miners import miner_factory

        return miner_factory(self.class_name)


@hookimpl
def register_losses(registry: Registrar) -> None:
    for class_name in PML_LOSSES:
        registry.register(
            f"pml.{class_name}",
            f"pytorch_metric_learning.losses:{class_name}",
            requires=REQUIRES,
            extra=EXTRA,
            summary=f"pytorch-metric-learning's {class_name}",
        )
    registry.register(
        "pml.PMLLoss",
        "omlcore_pml.losses:PMLLoss",
        requires=REQUIRES,
        extra=EXTRA,
        summary="a PML loss fed by a PML or omlcore miner (args: loss, miner), checked at construction",
    )


@hookimpl
def register_miners(registry: Registrar) -> None:
    for class_name in PML_MINERS:
        registry.register(
            f"pml.{class_name}",
            _LazyMinerFactory(class_name),
            requires=REQUIRES,
            extra=EXTRA,
            summary=f"pytorch-metric-learning's {class_name}, returning Triplets / Pairs",
        )


@hookimpl
def register_checks(registry: Registrar) -> None:
    registry.register(
        "pml.objects",
        "omlcore_pml.checks:check_pml_object",
        requires=REQUIRES,
        extra=EXTRA,
        summary="a PML object fits its role: a loss takes labels (and a miner's tuples), a miner is a miner",
    )
