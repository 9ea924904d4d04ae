"""PairsMiner: the distinct positive and negative pairs of mined triplets, for pairwise post-processing."""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.miners.all_triplets import AllTripletsMiner
from omlcore.miners.base import TripletMiner
from omlcore.miners.hard_triplets import HardTripletsMiner
from omlcore.protocols import Pairs

__all__ = ["PairsMiner"]


class PairsMiner:
    """Positive pairs ``{a, p}`` and negative pairs ``{a, n}`` of the batch-hard (or all) triplets, deduplicated.

    OML's ``PairsMiner`` (used to train pairwise re-rankers): the triplets of
    :class:`~omlcore.miners.HardTripletsMiner` (``hard_mining=True``) or
    :class:`~omlcore.miners.AllTripletsMiner` are split into pairs, and pairs are unordered within the batch:
    ``{i, j}`` appears once, as ``(min, max)``, sorted. With a reference set the pairs are ordered
    ``(batch item, reference item)`` and deduplicated as such. Returns :class:`~omlcore.protocols.Pairs`.
    Accepts the keyword options of :class:`~omlcore.miners.base.TripletMiner`.
    """

    def __init__(self, hard_mining: bool = True) -> None:
        self.hard_mining = bool(hard_mining)
        self.miner: TripletMiner = HardTripletsMiner() if self.hard_mining else AllTripletsMiner()

    def __call__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        *,
        ignore_anchor_mask: Tensor | None = None,
        sequences: Tensor | None = None,
        ref_sequences: Tensor | None = None,
    ) -> Pairs:
        a, p, n = self.miner(
            embeddings,
            labels,
            ref_emb,
            ref_labels,
            ignore_anchor_mask=ignore_anchor_mask,
            sequences=sequences,
            ref_sequences=ref_sequences,
        )
        unordered = ref_emb is None or ref_emb is embeddings
        width = embeddings.shape[0] if unordered else len(ref_emb)  # type: ignore[arg-type]
        return Pairs(*_distinct(a, p, width, unordered), *_distinct(a, n, width, unordered))

    def __repr__(self) -> str:
        return f"PairsMiner(hard_mining={self.hard_mining})"


def _distinct(first: Tensor, second: Tensor, width: int, unordered: bool) -> tuple[Tensor, Tensor]:
    if unordered:
        first, second = torch.minimum(first, second), torch.maximum(first, second)
    keys = torch.unique(first * width + second)
    return keys // width, keys % width
