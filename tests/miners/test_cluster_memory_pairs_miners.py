"""HardClusterMiner, CrossBatchMemoryMiner and PairsMiner against naive loops."""

from __future__ import annotations

import pickle

import pytest
import torch

from omlcore.miners import (
    AllTripletsMiner,
    CrossBatchMemoryMiner,
    ExtendedTriplets,
    HardClusterMiner,
    HardTripletsMiner,
    NHardTripletsMiner,
    PairsMiner,
)
from omlcore.protocols import Miner, Pairs


def labelled(labels: list[int], dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(labels), dim, generator=generator, dtype=torch.float64), torch.tensor(labels)


def test_hard_cluster_equals_naive_centroid_loops() -> None:
    # label 4 has one item: a negative only (two-item labels would tie: both are equally far from their mean)
    x, labels = labelled([5, 2, 5, 9, 2, 9, 5, 2, 4, 9])
    x.requires_grad_(True)
    detached = x.detach()
    got = HardClusterMiner()(x, labels)
    assert isinstance(got, ExtendedTriplets) and isinstance(HardClusterMiner(), Miner)
    uniques = sorted(set(labels.tolist()))
    centroids = {u: detached[labels == u].mean(0) for u in uniques}
    expected = []
    for i, u in enumerate(uniques):
        members = [j for j in range(len(labels)) if labels[j] == u]
        if len(members) < 2:
            continue
        farthest = max(members, key=lambda j: float(torch.linalg.vector_norm(detached[j] - centroids[u])))
        closest = min(
            (v for v in uniques if v != u), key=lambda v: float(torch.linalg.vector_norm(centroids[v] - centroids[u]))
        )
        expected.append((10 + i, farthest, 10 + uniques.index(closest)))
    assert list(zip(*(t.tolist() for t in got), strict=True)) == expected
    points, point_labels = got.resolve(x, labels)
    assert torch.allclose(points[10:], torch.stack([centroids[u] for u in uniques]))
    assert point_labels[10:].tolist() == uniques
    points[got.anchor].sum().backward()  # centroids stay differentiable
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("labels", [[1, 1, 1], [1, 2, 3], []])
def test_hard_cluster_empty(labels: list[int]) -> None:
    x, y = labelled(labels)
    got = HardClusterMiner()(x, y)
    assert got.is_empty() and got.extra_embeddings.shape == (len(set(labels)), 5)


def test_extended_triplets_pickle_and_move() -> None:
    x, labels = labelled([0, 0, 1, 1])
    got = HardClusterMiner()(x, labels)
    again = pickle.loads(pickle.dumps(got))
    assert isinstance(again, ExtendedTriplets) and torch.equal(again.extra_embeddings, got.extra_embeddings)
    moved = got.to("cpu")
    assert isinstance(moved, ExtendedTriplets) and moved.num == got.num


def naive_memory_triplets(x, labels, bank_x, bank_labels, n_pos: int, n_neg: int):  # type: ignore[no-untyped-def]
    ref = torch.cat([x, bank_x])
    ref_labels = torch.cat([labels, bank_labels])
    out = []
    for a in range(len(x)):
        pos = [j for j in range(len(ref)) if ref_labels[j] == labels[a] and j != a]
        neg = [j for j in range(len(ref)) if ref_labels[j] != labels[a]]
        pos.sort(key=lambda j: -float(torch.linalg.vector_norm(x[a] - ref[j])))
        neg.sort(key=lambda j: float(torch.linalg.vector_norm(x[a] - ref[j])))
        out += [(a, p, n) for p in pos[:n_pos] for n in neg[:n_neg]]
    return out


def test_cross_batch_memory_equals_naive_mining_over_batch_and_bank() -> None:
    miner = CrossBatchMemoryMiner(
        bank_size_in_batches=2, miner={"name": "n_hard_triplets", "args": {"n_positive": 2, "n_negative": 3}}
    )
    assert isinstance(miner.miner, NHardTripletsMiner)
    batches = [labelled([0, 0, 1, 1, 2, 2], seed=s) for s in range(4)]
    batches[3] = (batches[3][0], torch.tensor([0, 3, 3, 4, 4, 5]))  # label 0 has its positives in the bank only
    history: list[tuple[torch.Tensor, torch.Tensor]] = []
    for x, labels in batches:
        got = miner(x, labels)
        bank = history[-2:]
        bank_x = torch.cat([b[0] for b in bank]) if bank else x[:0]
        bank_labels = torch.cat([b[1] for b in bank]) if bank else labels[:0]
        assert torch.equal(got.extra_embeddings, bank_x) and torch.equal(got.extra_labels, bank_labels)
        assert list(zip(*(t.tolist() for t in got), strict=True)) == naive_memory_triplets(
            x, labels, bank_x, bank_labels, 2, 3
        )
        assert (got.anchor < len(x)).all()
        assert miner.last_logs["bank_items"] == len(bank_labels)
        history.append((x, labels))
    assert miner.last_logs["positives_from_bank"] > 0
    miner.reset()
    assert miner.bank is None


def test_cross_batch_memory_gradients_flow_through_the_batch_only() -> None:
    miner = CrossBatchMemoryMiner(1, miner=AllTripletsMiner())
    first, labels = labelled([0, 0, 1, 1])
    miner(first.requires_grad_(True), labels)
    x, _ = labelled([0, 0, 1, 1], seed=1)
    x.requires_grad_(True)
    got = miner(x, labels)
    points, _ = got.resolve(x, labels)
    (points[got.positive] - points[got.anchor]).pow(2).sum().backward()
    assert x.grad is not None and first.grad is None and not got.extra_embeddings.requires_grad


def test_cross_batch_memory_errors() -> None:
    with pytest.raises(TypeError, match=r"miner must be one of omlcore's in-batch triplet miners"):
        CrossBatchMemoryMiner(2, miner=PairsMiner())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bank_size_in_batches must be >= 1"):
        CrossBatchMemoryMiner(0)
    miner = CrossBatchMemoryMiner(2)
    miner(*labelled([0, 0, 1, 1], dim=5))
    with pytest.raises(ValueError, match=r"dimension 3 but the bank holds 5; call reset\(\)"):
        miner(*labelled([0, 0, 1, 1], dim=3))


def naive_pairs(x, labels, hard: bool):  # type: ignore[no-untyped-def]
    triplets = (HardTripletsMiner() if hard else AllTripletsMiner())(x, labels)
    pos = sorted({tuple(sorted((a, p))) for a, p, _ in zip(*(t.tolist() for t in triplets), strict=True)})
    neg = sorted({tuple(sorted((a, n))) for a, _, n in zip(*(t.tolist() for t in triplets), strict=True)})
    return pos, neg


@pytest.mark.parametrize("hard", [True, False])
def test_pairs_miner_gives_the_distinct_pairs_of_the_triplets(hard: bool) -> None:
    x, labels = labelled([0, 1, 0, 2, 1, 0, 2, 3, 3])
    got = PairsMiner(hard_mining=hard)(x, labels)
    assert isinstance(got, Pairs) and isinstance(PairsMiner(), Miner)
    pos, neg = naive_pairs(x, labels, hard)
    assert list(zip(got.anchor_pos.tolist(), got.positive.tolist(), strict=True)) == pos
    assert list(zip(got.anchor_neg.tolist(), got.negative.tolist(), strict=True)) == neg
    assert PairsMiner()(x, torch.zeros(9, dtype=torch.long)).is_empty()


def test_cross_batch_memory_mines_a_non_finite_batch_but_does_not_keep_it() -> None:
    miner = CrossBatchMemoryMiner(2, miner=HardTripletsMiner())
    first, labels = labelled([0, 0, 1, 1, 2, 2], seed=0)
    miner(first, labels)
    broken = labelled([0, 0, 1, 1, 2, 2], seed=1)[0].clone()
    broken[4, 0] = float("nan")
    mined = miner(broken, labels)
    assert len(mined.anchor) == 6 and 4 in mined.negative.tolist()  # the NaN item is mined, not dropped
    assert miner.last_logs["batch_kept"] == 0.0 and miner.last_logs["bank_items"] == 6
    assert miner.bank is not None and torch.equal(miner.bank[0], first)
    miner(*labelled([0, 0, 1, 1, 2, 2], seed=2))
    assert miner.last_logs["batch_kept"] == 1.0 and miner.last_logs["bank_items"] == 6
