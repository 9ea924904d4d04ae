"""omlcore's miners against OML 4.0's: identical mined sets where the definitions coincide."""

from __future__ import annotations

import torch
from oml.miners import (
    AllTripletsMiner as OMLAll,
)
from oml.miners import (
    HardClusterMiner as OMLHardCluster,
)
from oml.miners import (
    HardTripletsMiner as OMLHard,
)
from oml.miners import (
    MinerWithBank as OMLMinerWithBank,
)
from oml.miners import (
    NHardTripletsMiner as OMLNHard,
)
from oml.miners import (
    PairsMiner as OMLPairs,
)

from omlcore.miners import (
    AllTripletsMiner,
    CrossBatchMemoryMiner,
    HardClusterMiner,
    HardTripletsMiner,
    NHardTripletsMiner,
    PairsMiner,
)


def balanced(
    n_labels: int = 6, n_instances: int = 4, dim: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_labels).repeat_interleave(n_instances)
    labels = labels[torch.randperm(len(labels), generator=generator)]
    return torch.randn(len(labels), dim, generator=generator, dtype=torch.float64), labels


def triples(a, p, n) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    return list(zip(*(torch.as_tensor(t).tolist() for t in (a, p, n)), strict=True))


def test_all_triplets_same_set_as_oml() -> None:
    x, labels = balanced()
    oml = triples(*OMLAll()._sample(x, labels=labels.tolist()))
    ours = triples(*AllTripletsMiner()(x, labels))
    assert len(oml) == len(ours) == 24 * 3 * 20 and set(oml) == set(ours)


def test_hard_triplets_equal_oml() -> None:
    for seed in range(3):
        x, labels = balanced(seed=seed)
        assert triples(*HardTripletsMiner()(x, labels)) == triples(*OMLHard()._sample(x, labels=labels.tolist()))


def test_n_hard_triplets_equal_oml() -> None:
    x, labels = balanced(n_instances=5)
    ignore = torch.zeros(len(labels), dtype=torch.bool)
    ignore[::3] = True
    for n_pos, n_neg in [(1, 1), (2, 3), ((2, 3), (2, 5)), (10, 2)]:
        for mask in (None, ignore):
            oml = OMLNHard(n_pos, n_neg)._sample(x, labels.tolist(), ignore_anchor_mask=mask)
            ours = NHardTripletsMiner(n_pos, n_neg)(x, labels, ignore_anchor_mask=mask)
            assert triples(*ours) == triples(*oml)


def test_hard_cluster_equals_oml() -> None:
    x, labels = balanced(n_instances=3)
    oml_a, oml_p, oml_n = OMLHardCluster().sample(x, labels)
    ours = HardClusterMiner()(x, labels)
    points, _ = ours.resolve(x, labels)
    assert torch.allclose(points[ours.anchor], oml_a)
    assert torch.allclose(points[ours.positive], oml_p)
    assert torch.allclose(points[ours.negative], oml_n)


def rows(*tensors: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(round(v, 9) for v in row) for row in torch.cat(tensors, dim=1).tolist())


def test_cross_batch_memory_equals_oml_miner_with_bank_once_the_bank_is_full() -> None:
    bank_size = 3
    oml = OMLMinerWithBank(bank_size, OMLNHard(2, (1, 3)))
    ours = CrossBatchMemoryMiner(bank_size, NHardTripletsMiner(2, (1, 3)))
    for step in range(6):
        x, labels = balanced(n_labels=4, n_instances=3, seed=step)
        oml_a, oml_p, oml_n = oml.sample(x, labels)
        got = ours(x, labels)
        if step >= bank_size:  # OML uses its bank only once it is full; ours from the second batch on
            points, _ = got.resolve(x, labels)
            assert rows(points[got.anchor], points[got.positive], points[got.negative]) == rows(oml_a, oml_p, oml_n)


def test_pairs_equal_oml() -> None:
    x, labels = balanced()
    for hard in (True, False):
        first, second, is_negative = OMLPairs(hard_mining=hard).sample(x, labels.tolist())
        oml_pos = set(zip(first[~is_negative].tolist(), second[~is_negative].tolist(), strict=True))
        oml_neg = set(zip(first[is_negative].tolist(), second[is_negative].tolist(), strict=True))
        ours = PairsMiner(hard_mining=hard)(x, labels)
        assert set(zip(ours.anchor_pos.tolist(), ours.positive.tolist(), strict=True)) == oml_pos
        assert set(zip(ours.anchor_neg.tolist(), ours.negative.tolist(), strict=True)) == oml_neg
