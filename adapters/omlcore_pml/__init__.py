"""omlcore's pytorch-metric-learning (PML) adapter: PML losses and miners as omlcore components, and back.

- :class:`PMLLoss`: any PML loss as an omlcore :class:`~omlcore.protocols.Loss`, optionally fed by a PML or omlcore
  miner; trainable losses (ArcFace, ProxyAnchor, SoftTriple ...) expose their parameters to optimizers and checkpoints.
- :class:`PMLMiner` / :func:`as_miner`: a PML miner returning omlcore's :class:`~omlcore.protocols.Triplets` /
  :class:`~omlcore.protocols.Pairs`. The reverse needs nothing: omlcore's Triplets / Pairs *are* PML's
  ``indices_tuple`` (``pml_loss(embeddings, labels, omlcore_miner(embeddings, labels))``).
- :func:`check_loss` / :func:`check_miner`: the construction-time checks (a loss that takes no labels or no
  ``indices_tuple``, an object of the wrong kind) raising :class:`IncompatibleComponentError`
  (:class:`omlcore.checks.IncompatibleComponentError`, re-exported).

Its plugin, :mod:`omlcore_pml.plugin` (entry point ``pml``), registers every PML loss and miner as ``pml.<ClassName>``,
:class:`PMLLoss` as ``pml.PMLLoss`` and these checks as the ``check`` ``pml.objects`` (which omlcore's loops run on
their loss), without importing PML; the components need ``pip install "omlcore[pml]"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omlcore.checks import IncompatibleComponentError
    from omlcore_pml.checks import check_loss, check_miner
    from omlcore_pml.losses import PMLLoss
    from omlcore_pml.miners import PMLMiner, as_miner

__all__ = ["IncompatibleComponentError", "PMLLoss", "PMLMiner", "as_miner", "check_loss", "check_miner"]

_HOMES = {
    "IncompatibleComponentError": "omlcore.checks",
    "check_loss": "omlcore_pml.checks",
    "check_miner": "omlcore_pml.checks",
    "PMLLoss": "omlcore_pml.losses",
    "PMLMiner": "omlcore_pml.miners",
    "as_miner": "omlcore_pml.miners",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
