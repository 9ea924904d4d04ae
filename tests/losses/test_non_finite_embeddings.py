"""A NaN embedding makes the losses NaN (as in plain PyTorch), never a silently finite value.

Every configuration below uses the broken item: the miners rank NaN scores as the hardest. (A capped random sample
of the triplets, ``AllTripletsMiner(cap)``, may not draw it, and then its loss is finite, as it should be.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from omlcore.losses import ArcFaceLoss, ContrastiveLoss, SurrogatePrecision, TripletLossWithMiner
from omlcore.miners import (
    AllTripletsMiner,
    CrossBatchMemoryMiner,
    HardClusterMiner,
    HardTripletsMiner,
    NHardTripletsMiner,
    PairsMiner,
)

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4])

LOSSES: dict[str, Callable[[], torch.nn.Module]] = {
    "triplet, all triplets (exact)": lambda: TripletLossWithMiner(0.2),
    "triplet, all triplets capped above the total": lambda: TripletLossWithMiner(0.2, AllTripletsMiner(10**6)),
    "triplet, batch hard": lambda: TripletLossWithMiner(0.2, HardTripletsMiner()),
    "soft triplet, batch hard": lambda: TripletLossWithMiner(None, HardTripletsMiner()),
    "triplet, N hard": lambda: TripletLossWithMiner(0.2, NHardTripletsMiner((2, 3), 2)),
    "triplet, hard cluster": lambda: TripletLossWithMiner(0.2, HardClusterMiner()),
    "triplet, cross-batch memory": lambda: TripletLossWithMiner(0.2, CrossBatchMemoryMiner(2)),
    "contrastive, all pairs": lambda: ContrastiveLoss(),
    "contrastive, pairs miner": lambda: ContrastiveLoss(miner=PairsMiner()),
    "surrogate precision": lambda: SurrogatePrecision(k=2),
    "arcface": lambda: ArcFaceLoss(6, 5),
}


def embeddings(nan_row: int | None) -> torch.Tensor:
    x = torch.randn(len(LABELS), 6, generator=torch.Generator().manual_seed(0))
    if nan_row is not None:
        x[nan_row, 2] = float("nan")
    return x.requires_grad_(True)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("nan_row", [3, 8])  # 8: the only item of its label, in no positive pair
def test_a_nan_embedding_makes_the_loss_nan(name: str, nan_row: int) -> None:
    loss = LOSSES[name]()
    value = loss(embeddings(nan_row), LABELS)
    assert math.isnan(value.item()), f"{name}: {value.item()} with a NaN embedding in row {nan_row}"
    assert math.isfinite(loss(embeddings(None), LABELS).item())  # the same loss object on a sound batch


def test_no_triplet_with_a_nan_embedding_is_nan_not_zero() -> None:
    x = embeddings(1)[:4]
    value = TripletLossWithMiner(0.2, HardTripletsMiner())(x, torch.tensor([0, 1, 2, 3]))  # no positive pair
    assert math.isnan(value.item())
