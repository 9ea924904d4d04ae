"""Triplet losses against naive per-triplet loops, PML's TripletMarginLoss, gradcheck and the empty cases."""

from __future__ import annotations

import math

import pytest
import torch

from omlcore.losses import TripletLoss, TripletLossPlain, TripletLossWithMiner
from omlcore.miners import CrossBatchMemoryMiner, HardClusterMiner, HardTripletsMiner, NHardTripletsMiner
from omlcore.protocols import Loss


def batch(labels: list[int], dim: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    return x.requires_grad_(True), torch.tensor(labels)


LABELS = [0, 1, 0, 2, 1, 0, 2, 3, 3, 1, 4]  # label 4 is alone: it is never an anchor


def per_triplet(a, p, n, margin):  # type: ignore[no-untyped-def]
    d_ap, d_an = torch.linalg.vector_norm(a - p), torch.linalg.vector_norm(a - n)
    return torch.log(1 + torch.exp(d_ap - d_an)) if margin is None else torch.clamp(margin + d_ap - d_an, min=0)


def naive_all_triplets_loss(x, labels, margin, reduction="mean", sequences=None, ignore=None):  # type: ignore[no-untyped-def]
    terms = []
    for a in range(len(labels)):
        if ignore is not None and ignore[a]:
            continue
        for p in range(len(labels)):
            for n in range(len(labels)):
                if sequences is not None and sequences[a] >= 0 and sequences[a] in (sequences[p], sequences[n]):
                    continue
                if p != a and labels[p] == labels[a] and labels[n] != labels[a]:
                    terms.append(per_triplet(x[a], x[p], x[n], margin))
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "mean" else total


def test_losses_satisfy_the_protocol() -> None:
    assert isinstance(TripletLossWithMiner(0.1), Loss)


@pytest.mark.parametrize("margin", [0.0, 0.3, 2.0, None])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_triplets_loss_equals_the_naive_loop(margin: float | None, reduction: str) -> None:
    x, labels = batch(LABELS)
    loss = TripletLossWithMiner(margin, reduction=reduction)  # type: ignore[arg-type]
    value = loss(x, labels)
    expected = naive_all_triplets_loss(x, labels, margin, reduction)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    (grad,) = torch.autograd.grad(value, x)
    (expected_grad,) = torch.autograd.grad(expected, x)
    assert torch.allclose(grad, expected_grad, atol=1e-10)
    assert loss.last_logs["num_triplets"] == 3 * 2 * 8 + 3 * 2 * 8 + 2 * 1 * 9 + 2 * 1 * 9  # sum |P_a| |N_a|


def test_all_triplets_loss_with_sequences_and_ignored_anchors() -> None:
    x, labels = batch(LABELS)
    sequences = torch.tensor([0, 1, 0, -1, 2, 3, -1, 4, 4, 1, -1])
    ignore = torch.zeros(len(LABELS), dtype=torch.bool)
    ignore[3] = True
    value = TripletLossWithMiner(0.5)(x, labels, sequences=sequences, ignore_anchor_mask=ignore)
    assert value.item() == pytest.approx(
        naive_all_triplets_loss(x, labels, 0.5, sequences=sequences, ignore=ignore).item()
    )


def test_capped_all_triplets_take_the_generic_path() -> None:
    x, labels = batch(LABELS)
    torch.manual_seed(0)
    loss = TripletLossWithMiner(0.5, miner={"name": "all_triplets", "args": {"max_output_triplets": 7}})
    value = loss(x, labels)
    assert loss.last_logs["num_triplets"] == 7 and value.item() > 0


@pytest.mark.parametrize("margin", [0.4, None])
def test_generic_path_equals_naive_loss_on_mined_triplets(margin: float | None) -> None:
    x, labels = batch(LABELS)
    for miner in (HardTripletsMiner(), NHardTripletsMiner((1, 2), 3)):
        triplets = miner(x, labels)
        expected = torch.stack([per_triplet(x[a], x[p], x[n], margin) for a, p, n in zip(*triplets, strict=True)])
        loss = TripletLossWithMiner(margin, miner=miner, reduction="none")
        assert torch.allclose(loss(x, labels), expected)
        logs = loss.last_logs
        assert logs["num_triplets"] == len(expected)
        assert logs["active_tri"] == pytest.approx(float((expected > 0).double().mean()))


def test_generic_path_with_many_triplets_uses_the_distance_matrix() -> None:
    x, labels = batch([i % 3 for i in range(30)], dim=3)
    miner = NHardTripletsMiner(5, 10)  # 30 anchors x 5 x 10 triplets: above the elementwise threshold
    triplets = miner(x, labels)
    expected = torch.stack([per_triplet(x[a], x[p], x[n], 0.2) for a, p, n in zip(*triplets, strict=True)]).mean()
    assert TripletLossWithMiner(0.2, miner=miner)(x, labels).item() == pytest.approx(expected.item(), rel=1e-10)


def test_extended_triplets_of_hard_cluster_and_cross_batch_memory() -> None:
    x, labels = batch([0, 0, 0, 1, 1, 1, 2, 2, 2])
    loss = TripletLossWithMiner(0.3, miner=HardClusterMiner())
    value = loss(x, labels)
    centroids = [x[labels == u].mean(0) for u in range(3)]
    terms = []
    for u in range(3):
        members = [j for j in range(9) if labels[j] == u]
        far = max(members, key=lambda j: float(torch.linalg.vector_norm(x[j] - centroids[u]).detach()))
        near = min(
            (v for v in range(3) if v != u),
            key=lambda v: float(torch.linalg.vector_norm(centroids[v] - centroids[u]).detach()),
        )
        terms.append(per_triplet(centroids[u], x[far], centroids[near], 0.3))
    assert value.item() == pytest.approx(torch.stack(terms).mean().item())
    memory = TripletLossWithMiner(0.3, miner=CrossBatchMemoryMiner(2))
    memory(*batch([0, 0, 1, 1, 2, 2], seed=1))
    value = memory(*batch([0, 0, 1, 1, 3, 3], seed=2))
    assert value.item() > 0 and memory.last_logs["bank_items"] == 6


@pytest.mark.parametrize("labels", [[1, 1, 1, 1], [0, 1, 2, 3]])
@pytest.mark.parametrize("miner", [None, HardTripletsMiner(), HardClusterMiner()])
@pytest.mark.parametrize("margin", [0.2, None])
def test_no_triplet_gives_a_connected_zero(labels, miner, margin) -> None:  # type: ignore[no-untyped-def]
    layer = torch.nn.Linear(3, 4)
    embeddings = layer(torch.randn(len(labels), 3))
    value = TripletLossWithMiner(margin, miner=miner)(embeddings, torch.tensor(labels))
    assert value.item() == 0.0 and not math.isnan(value.item())
    value.backward()
    assert layer.weight.grad is not None and torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
    none = TripletLossWithMiner(margin, miner=miner, reduction="none")(
        layer(torch.randn(len(labels), 3)), torch.tensor(labels)
    )
    assert none.shape == (0,) and none.requires_grad


def test_pml_miner_through_the_registry_and_pml_loss_agree() -> None:
    """With PML's distance left unnormalised and its MeanReducer the definitions coincide."""
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses, reducers

    from omlcore.plugins import get_registry

    torch.manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    x = torch.randn(32, 16, requires_grad=True)
    miner = get_registry().build(
        "miner", "pml.BatchHardMiner", distance=distances.LpDistance(normalize_embeddings=False)
    )
    ours = TripletLossWithMiner(0.2, miner=miner)(x, labels)
    theirs = losses.TripletMarginLoss(
        margin=0.2, distance=distances.LpDistance(normalize_embeddings=False), reducer=reducers.MeanReducer()
    )(x, labels, miner(x, labels))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    (g1,) = torch.autograd.grad(ours, x)
    (g2,) = torch.autograd.grad(theirs, x)
    assert torch.allclose(g1, g2, atol=1e-6)
    all_ours = TripletLossWithMiner(0.2)(x, labels)
    all_theirs = losses.TripletMarginLoss(
        margin=0.2, distance=distances.LpDistance(normalize_embeddings=False), reducer=reducers.MeanReducer()
    )(x, labels)
    assert all_ours.item() == pytest.approx(all_theirs.item(), rel=1e-5)
    assert pml.__version__


def test_triplet_loss_and_plain_match_the_formula() -> None:
    x, _ = batch(list(range(12)))
    a, p, n = x[0::3], x[1::3], x[2::3]
    expected = torch.stack([per_triplet(a[i], p[i], n[i], 0.5) for i in range(4)])
    loss = TripletLoss(0.5, reduction="none")
    assert torch.allclose(loss(a, p, n), expected)
    assert set(loss.last_logs) == {"active_tri", "pos_dist", "neg_dist"}
    assert TripletLossPlain(0.5)(x).item() == pytest.approx(expected.mean().item())
    soft = torch.stack([per_triplet(a[i], p[i], n[i], None) for i in range(4)]).sum()
    assert TripletLoss(None, reduction="sum")(a, p, n).item() == pytest.approx(soft.item())
    with pytest.raises(ValueError, match=r"features must be \(3T, D\)"):
        TripletLossPlain(0.5)(x[:5])
    with pytest.raises(ValueError, match=r"margin must be >= 0, or None"):
        TripletLoss(-1.0)
    with pytest.raises(ValueError, match=r"reduction must be one of mean, sum, none"):
        TripletLoss(0.1, reduction="avg")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: TripletLossWithMiner(0.7),
        lambda: TripletLossWithMiner(None),
        lambda: TripletLossWithMiner(0.7, miner=HardTripletsMiner()),
        lambda: TripletLossWithMiner(None, miner=NHardTripletsMiner(2, 2)),
        lambda: TripletLossWithMiner(0.7, miner=HardClusterMiner()),
    ],
)
def test_gradcheck(make) -> None:  # type: ignore[no-untyped-def]
    x, labels = batch([0, 1, 0, 2, 1, 0, 2, 1], dim=3)
    loss = make()
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (x,))


def test_plain_triplet_gradcheck() -> None:
    x, _ = batch(list(range(9)), dim=3)
    assert torch.autograd.gradcheck(TripletLossPlain(1.0), (x,))


def test_miner_returning_pairs_is_rejected() -> None:
    from omlcore.miners import PairsMiner

    x, labels = batch(LABELS)
    with pytest.raises(TypeError, match=r"returned Pairs, not Triplets; use a triplet miner"):
        TripletLossWithMiner(0.1, miner=PairsMiner())(x, labels)
