"""Hard pairs from a trained extractor's neighbours, against a naive loop; the pair dataset and its batch sampler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from omlcore.datasets.pairs import NeighbourPairs, PairBatchSampler, PairDataset, mine_neighbour_pairs


def naive_pairs(
    embeddings: torch.Tensor, labels: list[int], top_n: int, sequences: list[int] | None, metric: str
) -> list[tuple[int, int, bool]]:
    """For every item, the other items sorted by (distance, index), skipping its own sequence, first top_n."""
    x = embeddings.double()
    pairs = []
    for i in range(len(x)):
        candidates = []
        for j in range(len(x)):
            if j == i or (sequences is not None and sequences[i] >= 0 and sequences[i] == sequences[j]):
                continue
            if metric == "l2":
                distance = float(((x[i] - x[j]) ** 2).sum().sqrt())
            else:
                distance = 1 - float(x[i] @ x[j] / (x[i].norm() * x[j].norm()))
            candidates.append((distance, j))
        pairs += [(i, j, labels[i] != labels[j]) for _, j in sorted(candidates)[:top_n]]
    return pairs


def as_list(pairs: NeighbourPairs) -> list[tuple[int, int, bool]]:
    return list(zip(pairs.query.tolist(), pairs.gallery.tolist(), pairs.is_negative.tolist(), strict=True))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("with_sequences", [False, True])
@pytest.mark.parametrize("top_n", [1, 3, 7])
def test_each_item_is_paired_with_its_nearest_others(metric: str, with_sequences: bool, top_n: int) -> None:
    rng = np.random.default_rng(top_n)
    embeddings = torch.from_numpy(rng.normal(size=(30, 6))).float()
    labels = rng.integers(0, 5, 30).tolist()
    sequences = rng.integers(-1, 6, 30).tolist() if with_sequences else None
    mined = mine_neighbour_pairs(embeddings, labels, top_n, sequences=sequences, metric=metric)  # type: ignore[arg-type]
    assert as_list(mined) == naive_pairs(embeddings, labels, top_n, sequences, metric)
    assert mined.query.dtype == mined.gallery.dtype == torch.long and mined.is_negative.dtype == torch.bool
    assert mined.num_positive + mined.num_negative == len(mined)
    assert mined.num_negative == sum(negative for _, _, negative in as_list(mined))


def test_an_item_with_few_candidates_gets_fewer_pairs() -> None:
    embeddings = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    mined = mine_neighbour_pairs(embeddings, [0, 0, 1, 1], 2, sequences=[5, 5, 5, -1])
    assert as_list(mined) == [(0, 3, True), (1, 3, True), (2, 3, False), (3, 2, False), (3, 1, True)]


def test_bad_inputs_are_named() -> None:
    embeddings = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"top_n=4 neighbours per item, but there are only 4 items .* at most 3"):
        mine_neighbour_pairs(embeddings, [0, 0, 1, 1], 4)
    with pytest.raises(ValueError, match=r"top_n must be >= 1, got 0"):
        mine_neighbour_pairs(embeddings, [0, 0, 1, 1], 0)
    with pytest.raises(ValueError, match=r"labels must be \(4,\), one per embedding, got shape \(3,\)"):
        mine_neighbour_pairs(embeddings, [0, 0, 1], 2)
    with pytest.raises(ValueError, match=r"sequences must be \(4,\)"):
        mine_neighbour_pairs(embeddings, [0, 0, 1, 1], 2, sequences=[1, 2])
    with pytest.raises(ValueError, match=r"embeddings must be \(N, D\)"):
        mine_neighbour_pairs(torch.randn(4), [0, 0, 1, 1], 2)


def test_balanced_pairs_keep_the_smaller_class_and_as_many_of_the_larger() -> None:
    is_negative = torch.tensor([False, True, False, False, True, False, False, False])
    pairs = NeighbourPairs(torch.arange(8), torch.arange(8) + 10, is_negative)
    balanced = pairs.balanced(seed=1)
    assert balanced.num_negative == balanced.num_positive == 2
    kept = balanced.query.tolist()
    assert kept == sorted(kept) and {1, 4} <= set(kept)  # every negative, in order
    assert torch.equal(balanced.gallery, balanced.query + 10) and torch.equal(balanced.is_negative, is_negative[kept])
    assert as_list(pairs.balanced(seed=1)) == as_list(balanced) and as_list(pairs.balanced(seed=2)) != as_list(balanced)
    assert len(NeighbourPairs(torch.arange(3), torch.arange(3), torch.zeros(3, dtype=torch.bool)).balanced()) == 0


class Items:
    """A dataset of constant images: item i is filled with i."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": torch.full((3, 2, 2), float(index)), "labels": index % 2}

    def __len__(self) -> int:
        return 6


def test_a_pair_item_holds_both_inputs_and_the_target() -> None:
    pairs = NeighbourPairs(torch.tensor([0, 4]), torch.tensor([5, 1]), torch.tensor([True, False]))
    dataset = PairDataset(Items(), pairs)  # type: ignore[arg-type]
    assert len(dataset) == 2
    item = dataset[1]
    assert item["images"].shape == (2, 3, 2, 2) and item["idx"] == 1
    assert torch.equal(item["images"][0], torch.full((3, 2, 2), 4.0))
    assert torch.equal(item["images"][1], torch.full((3, 2, 2), 1.0))
    assert item["labels"].dtype == torch.float32 and float(item["labels"]) == 0.0 and float(dataset[0]["labels"]) == 1
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["images"].shape == (2, 2, 3, 2, 2) and batch["labels"].tolist() == [1.0, 0.0]


def test_pair_batches_cover_every_pair_each_epoch_seeded() -> None:
    sampler = PairBatchSampler(10, 4, seed=1)
    assert len(sampler) == 3 and sampler.batch_size == 4
    epoch_0 = list(sampler)
    assert all(len(batch) == 4 for batch in epoch_0)
    drawn = [i for batch in epoch_0 for i in batch]
    assert len(drawn) == 12 and set(drawn) == set(range(10))  # every pair, and two of them again to fill a batch
    assert list(sampler) == epoch_0 == list(PairBatchSampler(10, 4, seed=1))
    sampler.set_epoch(1)
    assert list(sampler) != epoch_0 and {i for batch in sampler for i in batch} == set(range(10))
    assert list(PairBatchSampler(10, 4, seed=2)) != epoch_0


def test_ranks_share_the_epoch() -> None:
    whole = list(PairBatchSampler(16, 2, seed=3))
    shares = [list(PairBatchSampler(16, 2, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(whole) and shares[0] == whole[0::2]


def test_bad_sampler_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="batch_size=8 is larger than the 5 pairs"):
        PairBatchSampler(5, 8)
    with pytest.raises(ValueError, match="n_pairs must be >= 1, got 0"):
        PairBatchSampler(0, 1)
