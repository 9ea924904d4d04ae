"""ContrastiveLoss against naive pair loops and PML's ContrastiveLoss."""

from __future__ import annotations

import pytest
import torch

from omlcore.losses import ContrastiveLoss
from omlcore.miners import HardTripletsMiner, PairsMiner
from omlcore.protocols import Loss

LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 2, 3])


def embeddings(seed: int = 0, n: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, generator=generator, dtype=torch.float64) * 0.6).requires_grad_(True)


def reduce_naive(terms: list[torch.Tensor], reduction: str) -> torch.Tensor:
    if not terms:
        return torch.zeros((), dtype=torch.float64)
    stacked = torch.stack(terms)
    if reduction == "sum":
        return stacked.sum()
    if reduction == "mean":
        return stacked.mean()
    nonzero = stacked[stacked > 0]
    return nonzero.mean() if len(nonzero) else torch.zeros((), dtype=torch.float64)


def naive(x, labels, pos_margin, neg_margin, reduction, pairs=None):  # type: ignore[no-untyped-def]
    if pairs is None:
        n = len(labels)
        pos_pairs = [(i, j) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]]
        neg_pairs = [(i, j) for i in range(n) for j in range(n) if labels[i] != labels[j]]
    else:
        pos_pairs, neg_pairs = pairs
    pos = [torch.clamp(torch.linalg.vector_norm(x[i] - x[j]) - pos_margin, min=0) for i, j in pos_pairs]
    neg = [torch.clamp(neg_margin - torch.linalg.vector_norm(x[i] - x[j]), min=0) for i, j in neg_pairs]
    return reduce_naive(pos, reduction) + reduce_naive(neg, reduction)


@pytest.mark.parametrize("reduction", ["avg_nonzero", "mean", "sum"])
@pytest.mark.parametrize("margins", [(0.0, 1.0), (0.4, 1.5)])
def test_all_pairs_equal_the_naive_loop(reduction: str, margins: tuple[float, float]) -> None:
    x = embeddings()
    loss = ContrastiveLoss(*margins, reduction=reduction)  # type: ignore[arg-type]
    assert isinstance(loss, Loss)
    value, expected = loss(x, LABELS), naive(x, LABELS, *margins, reduction)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    (g1,) = torch.autograd.grad(value, x)
    (g2,) = torch.autograd.grad(expected, x)
    assert torch.allclose(g1, g2, atol=1e-10)
    assert loss.last_logs["num_pos_pairs"] == 2 * (3 + 1 + 1) and loss.last_logs["num_neg_pairs"] == 64 - 8 - 10


def test_with_a_pairs_miner_and_a_triplet_miner() -> None:
    x = embeddings()
    pairs = PairsMiner()(x, LABELS)
    expected = naive(
        x,
        LABELS,
        0.1,
        1.2,
        "mean",
        (list(zip(*pairs[:2], strict=True)), list(zip(*pairs[2:], strict=True))),
    )
    assert ContrastiveLoss(0.1, 1.2, miner=PairsMiner(), reduction="mean")(x, LABELS).item() == pytest.approx(
        expected.item()
    )
    a, p, n = HardTripletsMiner()(x, LABELS)
    expected = naive(x, LABELS, 0.0, 1.0, "avg_nonzero", (list(zip(a, p, strict=True)), list(zip(a, n, strict=True))))
    value = ContrastiveLoss(miner={"name": "hard_triplets", "args": {}})(x, LABELS)
    assert value.item() == pytest.approx(expected.item())


def test_equals_pml_contrastive_loss() -> None:
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import distances, losses

    x = embeddings(seed=3, n=8).float().detach().requires_grad_(True)
    theirs = losses.ContrastiveLoss(
        pos_margin=0.2, neg_margin=0.9, distance=distances.LpDistance(normalize_embeddings=False)
    )
    ours = ContrastiveLoss(0.2, 0.9)
    assert ours(x, LABELS).item() == pytest.approx(theirs(x, LABELS).item(), rel=1e-5)
    pairs = PairsMiner(hard_mining=False)(x, LABELS)
    ours_mined = ContrastiveLoss(0.2, 0.9, miner=PairsMiner(hard_mining=False))(x, LABELS)
    assert ours_mined.item() == pytest.approx(theirs(x, LABELS, pairs.to_pml()).item(), rel=1e-5)
    assert pml.__version__


def test_no_pairs_gives_a_connected_zero_and_gradcheck() -> None:
    layer = torch.nn.Linear(3, 3)
    single = ContrastiveLoss()(layer(torch.randn(1, 3)), torch.tensor([4]))
    single.backward()
    assert single.item() == 0.0 and layer.weight.grad is not None
    x = embeddings(n=6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda e: ContrastiveLoss(0.1, 2.0, reduction="mean")(e, labels), (x,))
    with pytest.raises(ValueError, match=r"reduction must be one of avg_nonzero, mean, sum"):
        ContrastiveLoss(reduction="none")  # type: ignore[arg-type]
