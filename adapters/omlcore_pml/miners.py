"""PML miners as omlcore miners (:class:`~omlcore.protocols.Miner`): PML's indices, as ``Triplets`` / ``Pairs``.

Importing this module does not import PML; :func:`miner_factory` does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from omlcore.config import resolve
from omlcore.protocols import Miner, Pairs, Triplets, indices_from_pml
from omlcore.utils.optional import require
from omlcore_pml.checks import check_miner, pml_kind

__all__ = ["PMLMiner", "PMLMinerFactory", "as_miner", "miner_factory"]


class PMLMiner(nn.Module):
    """Wraps a PML miner: ``miner(embeddings, labels, ref_emb=None, ref_labels=None) -> Triplets | Pairs``.

    The PML miner stays reachable as ``.miner`` (a submodule, so its parameters, buffers and recorded
    statistics such as ``num_triplets`` move and save with the wrapper).
    """

    def __init__(self, miner: nn.Module) -> None:
        super().__init__()
        self.miner = miner

    @property
    def wrapped_component(self) -> nn.Module:
        """The PML miner, which errors name (:data:`omlcore.checks.WRAPPED_COMPONENT`)."""
        return self.miner

    def forward(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None
    ) -> Triplets | Pairs:
        return indices_from_pml(self.miner(embeddings, labels, ref_emb, ref_labels))


class PMLMinerFactory:
    """Builds ``PMLMiner(miner_class(*args, **kwargs))``; has the signature of ``miner_class``."""

    def __init__(self, miner_class: type[nn.Module]) -> None:
        self.miner_class = miner_class
        self.__signature__ = inspect.signature(miner_class)

    def __call__(self, *args: Any, **kwargs: Any) -> PMLMiner:
        return PMLMiner(self.miner_class(*args, **kwargs))

    def __repr__(self) -> str:
        return f"PMLMinerFactory({self.miner_class.__module__}.{self.miner_class.__qualname__})"


def miner_factory(class_name: str) -> PMLMinerFactory:
    """The factory of the wrapped PML miner ``class_name``; imports PML.

    Raises:
        MissingDependencyError: PML is not installed (the message has ``pip install "omlcore[pml]"``).
    """
    miners = require("pytorch_metric_learning.miners", "pml", what=f"miner 'pml.{class_name}'")
    return PMLMinerFactory(getattr(miners, class_name))


def as_miner(miner: Miner | nn.Module | Mapping[str, Any]) -> Miner:
    """An omlcore :class:`~omlcore.protocols.Miner` from a PML miner (wrapped in :class:`PMLMiner`), an omlcore miner
    (returned as it is) or a registry config ``{"name": ..., "args": {...}}``.

    Raises:
        IncompatibleComponentError: ``miner`` is a PML loss, distance ... or not callable.
    """
    if isinstance(miner, Mapping):
        built: Miner = resolve("miner", miner)
        return built
    check_miner(miner)
    if pml_kind(miner) == "miner" and isinstance(miner, nn.Module):
        return PMLMiner(miner)
    return miner
