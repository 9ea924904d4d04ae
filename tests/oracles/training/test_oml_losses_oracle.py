"""omlcore's losses against OML 4.0's: the same values and gradients."""

from __future__ import annotations

import pytest
import torch
from oml.losses import ArcFaceLoss as OMLArcFace
from oml.losses import ArcFaceLossWithMLP as OMLArcFaceWithMLP
from oml.losses import SurrogatePrecision as OMLSurrogatePrecision
from oml.losses import TripletLoss as OMLTriplet
from oml.losses import TripletLossPlain as OMLTripletPlain
from oml.losses import TripletLossWithMiner as OMLTripletWithMiner
from oml.miners import AllTripletsMiner as OMLAll
from oml.miners import HardClusterMiner as OMLHardCluster
from oml.miners import HardTripletsMiner as OMLHard

from omlcore.losses import (
    ArcFaceLoss,
    ArcFaceLossWithMLP,
    SurrogatePrecision,
    TripletLoss,
    TripletLossPlain,
    TripletLossWithMiner,
)
from omlcore.miners import HardClusterMiner, HardTripletsMiner


def balanced(n_labels: int = 5, n_instances: int = 4, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_labels).repeat_interleave(n_instances)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    x = torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    return x.requires_grad_(True), labels


def same_value_and_grad(ours: torch.Tensor, theirs: torch.Tensor, x: torch.Tensor, rel: float = 1e-9) -> None:
    assert ours.item() == pytest.approx(theirs.item(), rel=rel)
    (g1,) = torch.autograd.grad(ours, x)
    (g2,) = torch.autograd.grad(theirs, x)
    assert torch.allclose(g1, g2, atol=rel)


@pytest.mark.parametrize("margin", [0.2, 1.5, None])
def test_triplet_losses_equal_oml(margin: float | None) -> None:
    x, _ = balanced()
    a, p, n = x[0:6], x[6:12], x[12:18]
    for reduction in ("mean", "sum"):
        oml = OMLTriplet(margin, reduction=reduction, need_logs=True)
        ours = TripletLoss(margin, reduction=reduction)
        same_value_and_grad(ours(a, p, n), oml(a, p, n), x)
        assert ours.last_logs == pytest.approx({k: float(v) for k, v in oml.last_logs.items()})
    same_value_and_grad(TripletLossPlain(margin)(x[:18]), OMLTripletPlain(margin)(x[:18]), x)


@pytest.mark.parametrize("margin", [0.2, 1.5, None])
def test_triplet_loss_with_miner_equals_oml(margin: float | None) -> None:
    x, labels = balanced()
    pairs = [(None, OMLAll()), (HardTripletsMiner(), OMLHard()), (HardClusterMiner(), OMLHardCluster())]
    for ours_miner, oml_miner in pairs:
        ours = TripletLossWithMiner(margin, miner=ours_miner)
        oml = OMLTripletWithMiner(margin, miner=oml_miner, need_logs=True)
        same_value_and_grad(ours(x, labels), oml(x, labels), x)
        for key in ("active_tri", "pos_dist", "neg_dist"):
            assert ours.last_logs[key] == pytest.approx(float(oml.last_logs[key]), rel=1e-6)


@pytest.mark.parametrize(
    "smoothing,categories", [(0.0, None), (0.2, None), (0.2, {0: "x", 1: "y", 2: "x", 3: "y", 4: "x"})]
)
def test_arcface_equals_oml(smoothing: float, categories: dict[int, str] | None) -> None:
    torch.manual_seed(0)
    x, labels = balanced()
    oml = OMLArcFace(8, 5, m=0.4, s=16, smoothing_epsilon=smoothing, label2category=categories).double()
    ours = ArcFaceLoss(8, 5, m=0.4, s=16, smoothing_epsilon=smoothing, label2category=categories).double()
    ours.load_state_dict(oml.state_dict())
    # OML builds the smoothed targets in float32 whatever the logits' dtype: agreement to float32 precision
    same_value_and_grad(ours(x, labels), oml(x, labels), x, rel=1e-9 if not smoothing else 1e-6)
    assert ours.last_logs["accuracy"] == pytest.approx(float(oml.last_logs["accuracy"]))


def test_arcface_with_mlp_loads_oml_state_dict() -> None:
    torch.manual_seed(0)
    x, labels = balanced()
    oml = OMLArcFaceWithMLP(8, 5, mlp_features=[12, 6], m=0.3, s=20).double()
    ours = ArcFaceLossWithMLP(8, 5, mlp_features=[12, 6], m=0.3, s=20).double()
    ours.load_state_dict(oml.state_dict())  # same keys: torchvision's MLP layout
    same_value_and_grad(ours(x, labels), oml(x, labels), x)


@pytest.mark.parametrize("k,t1,t2", [(1, 1.0, 0.01), (3, 0.5, 0.1)])
def test_surrogate_precision_equals_oml(k: int, t1: float, t2: float) -> None:
    x, labels = balanced()
    same_value_and_grad(SurrogatePrecision(k, t1, t2)(x, labels), OMLSurrogatePrecision(k, t1, t2)(x, labels), x)
