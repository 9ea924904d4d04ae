"""Any PML loss as an omlcore :class:`~omlcore.protocols.Loss`, optionally fed by a PML or an omlcore miner.

Importing this module does not import PML; building a loss from a registry name does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from omlcore.config import resolve
from omlcore.miners.base import ExtendedTriplets
from omlcore.protocols import Miner, Pairs, Triplets
from omlcore_pml.checks import check_loss
from omlcore_pml.miners import as_miner

__all__ = ["PMLLoss"]


class PMLLoss(nn.Module):
    """``loss(embeddings, labels) -> Tensor`` from a PML loss and an optional miner.

    With a miner, the mined :class:`~omlcore.protocols.Triplets` / :class:`~omlcore.protocols.Pairs` go to the PML
    loss as its ``indices_tuple`` (PML converts triplets to pairs and back as each loss needs).
    :class:`~omlcore.miners.ExtendedTriplets` (omlcore's cross-batch memory and hard-cluster miners) index the batch
    extended by extra embeddings, which the loss then gets too.

    Both are submodules: a trainable loss's parameters (ArcFace's class weights, ProxyAnchor's proxies,
    SoftTriple's centres ...) are in ``parameters()`` and ``state_dict()``, so optimizers and checkpoints see them.

    Args:
        loss: a PML loss, or a registry config ``{"name": "pml.TripletMarginLoss", "args": {...}}``.
        miner: a PML miner, an omlcore :class:`~omlcore.protocols.Miner`, a registry config, or None.

    Raises:
        IncompatibleComponentError: at construction, when the loss does not take labels, or takes no
            ``indices_tuple`` although a miner is given, or when an object of the wrong kind is passed.

    ``last_logs``: the number of mined tuples (``num_triplets`` or ``num_pos_pairs`` / ``num_neg_pairs``) and the
    miner's own ``last_logs``.
    """

    def __init__(self, loss: Any, miner: Miner | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        loss = resolve("loss", loss) if isinstance(loss, Mapping) else loss
        given = resolve("miner", miner) if isinstance(miner, Mapping) else miner
        self.miner = as_miner(given) if given is not None else None
        check_loss(loss, miner=given)  # the miner as given (not wrapped), so that an error names it
        self.loss = loss
        self.last_logs: dict[str, float] = {}

    @property
    def wrapped_component(self) -> Any:
        """The PML loss, which errors name (:data:`omlcore.checks.WRAPPED_COMPONENT`)."""
        return self.loss

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if self.miner is None:
            self.last_logs = {}
            value: Tensor = self.loss(embeddings, labels)
            return value
        mined = self.miner(embeddings, labels)
        if isinstance(mined, Triplets):
            self.last_logs = {"num_triplets": float(mined.num)}
        elif isinstance(mined, Pairs):
            self.last_logs = {"num_pos_pairs": float(mined.num_pos), "num_neg_pairs": float(mined.num_neg)}
        else:
            raise TypeError(f"the miner {self.miner!r} returned {type(mined).__name__}, not Triplets or Pairs")
        self.last_logs.update(getattr(self.miner, "last_logs", {}))
        if isinstance(mined, ExtendedTriplets):
            embeddings, labels = mined.resolve(embeddings, labels)
        value = self.loss(embeddings, labels, mined.to_pml())
        return value
