"""The protocols accept components by shape, and the index containers keep PML's tuple contract."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

from omlcore.protocols import (
    Extractor,
    KNNBackend,
    Loss,
    MetricAccumulator,
    Miner,
    Pairs,
    Sampler,
    Triplets,
    indices_from_pml,
)


class ListSampler:
    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class AllTripletsMiner:
    """Naive reference miner: every valid (a, p, n) with explicit loops."""

    def __call__(self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels=None) -> Triplets:  # type: ignore[no-untyped-def]
        triplets = [
            (a, p, n)
            for a in range(len(labels))
            for p in range(len(labels))
            for n in range(len(labels))
            if a != p and labels[a] == labels[p] and labels[a] != labels[n]
        ]
        if not triplets:
            return Triplets.empty(embeddings.device)
        return Triplets(*torch.tensor(triplets).T)


class MeanNormLoss(torch.nn.Module):
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return embeddings.norm(dim=1).mean()


class CountAccumulator:
    state_reductions: Mapping[str, Any] = {"count": "sum", "labels": "cat"}

    def __init__(self) -> None:
        self.reset()

    def update(self, batch: Mapping[str, Any]) -> None:
        self.count += len(batch["labels"])
        self.labels = torch.cat([self.labels, torch.as_tensor(batch["labels"])])

    def compute(self) -> dict[str, Any]:
        return {"count": int(self.count), "unique_labels": int(self.labels.unique().numel())}

    def reset(self) -> None:
        self.count = torch.tensor(0)
        self.labels = torch.empty(0, dtype=torch.long)

    def get_state(self) -> dict[str, Tensor]:
        return {"count": self.count, "labels": self.labels}

    def merge_state(self, states: Sequence[Mapping[str, Tensor]]) -> None:
        for state in states:
            self.count = self.count + state["count"]
            self.labels = torch.cat([self.labels, state["labels"]])


class TinyExtractor(torch.nn.Module):
    feat_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, self.feat_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(images.mean(dim=(2, 3)))


class BruteForceKNN:
    def search(self, queries: Tensor, gallery: Tensor, k: int, exclude=None) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
        distances = torch.cdist(queries, gallery)
        return distances.topk(k, largest=False)


def test_components_qualify_by_shape() -> None:
    assert isinstance(ListSampler([[0, 1]]), Sampler)
    assert isinstance(torch.utils.data.BatchSampler(range(10), 2, False), Sampler)
    assert isinstance(AllTripletsMiner(), Miner)
    assert isinstance(MeanNormLoss(), Loss)
    assert isinstance(CountAccumulator(), MetricAccumulator)
    assert isinstance(TinyExtractor(), Extractor)
    assert isinstance(BruteForceKNN(), KNNBackend)


def test_components_missing_members_do_not_qualify() -> None:
    assert not isinstance([1, 2], Miner)  # not callable
    assert not isinstance(torch.nn.Linear(2, 2), Extractor)  # no feat_dim
    assert not isinstance(object(), Sampler)
    assert not isinstance(BruteForceKNN(), Loss)  # not callable
    assert not isinstance(MeanNormLoss(), KNNBackend)  # no search()

    class NoMerge:
        state_reductions: Mapping[str, Any] = {}

        def update(self, batch: Any) -> None: ...
        def compute(self) -> dict[str, Any]: ...
        def reset(self) -> None: ...
        def get_state(self) -> dict[str, Tensor]: ...

    assert not isinstance(NoMerge(), MetricAccumulator)


def test_accumulator_contract_merges_exactly() -> None:
    whole, left, right = CountAccumulator(), CountAccumulator(), CountAccumulator()
    labels = torch.tensor([0, 0, 1, 2, 2, 3, 4])
    whole.update({"labels": labels})
    left.update({"labels": labels[:3]})
    right.update({"labels": labels[3:]})
    left.merge_state([right.get_state()])
    assert left.compute() == whole.compute() == {"count": 7, "unique_labels": 5}


def test_extractor_contract_shape() -> None:
    extractor = TinyExtractor()
    assert extractor(torch.rand(5, 3, 8, 8)).shape == (5, extractor.feat_dim)


def test_triplets_validate_and_behave_like_pml_tuples() -> None:
    triplets = Triplets([0, 1], torch.tensor([1, 0]), (2, 3))
    assert isinstance(triplets, tuple) and len(triplets) == 3
    assert triplets.num == 2 and not triplets.is_empty()
    assert all(t.dtype == torch.long for t in triplets)
    a, p, n = triplets
    assert torch.equal(a, triplets.anchor) and torch.equal(p, triplets.positive) and torch.equal(n, triplets.negative)
    round_trip = Triplets.from_pml(triplets.to_pml())
    assert type(triplets.to_pml()) is tuple and type(round_trip) is Triplets
    assert all(torch.equal(x, y) for x, y in zip(round_trip, triplets, strict=True))
    for clone in (pickle.loads(pickle.dumps(triplets)), copy.deepcopy(triplets)):
        assert type(clone) is Triplets and all(torch.equal(x, y) for x, y in zip(clone, triplets, strict=True))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (([0, 1], [1], [2, 3]), ValueError, "equal length.*positive=1"),
        (([[0, 1]], [[1, 0]], [[2, 3]]), ValueError, "1-D"),
        (([0.0, 1.0], [1, 0], [2, 3]), TypeError, "integer indices.*float"),
        (([True], [False], [True]), TypeError, "integer indices.*bool"),
    ],
)
def test_triplets_reject_malformed_indices(args: tuple[Any, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Triplets(*args)


def test_empty_containers() -> None:
    for empty in (Triplets.empty(), Pairs.empty("cpu")):
        assert empty.is_empty()
        assert all(t.shape == (0,) and t.dtype == torch.long for t in empty)
    assert Triplets.empty().num == 0 and Pairs.empty().num_pos == Pairs.empty().num_neg == 0


def test_pairs_sides_have_independent_lengths() -> None:
    pairs = Pairs([0, 1, 2], [1, 0, 3], [0], [4])
    assert (pairs.num_pos, pairs.num_neg) == (3, 1)
    with pytest.raises(ValueError, match="anchor_neg=2, negative=1"):
        Pairs([0], [1], [0, 1], [2])


def test_triplets_to_pairs_matches_pml_convert_to_pairs() -> None:
    lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")
    triplets = Triplets([0, 0, 2], [1, 1, 3], [2, 3, 0])
    expected = lmu.convert_to_pairs(triplets.to_pml(), torch.tensor([0, 0, 1, 1]))
    assert all(torch.equal(x, y) for x, y in zip(triplets.to_pairs(), expected, strict=True))


def test_from_pml_dispatches_on_tuple_length() -> None:
    t = indices_from_pml((torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    p = indices_from_pml((torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2])))
    assert type(t) is Triplets and type(p) is Pairs
    assert indices_from_pml(t) is t
    assert type(Pairs.from_pml(t)) is Pairs
    with pytest.raises(ValueError, match="looks like pairs"):
        Triplets.from_pml(p)
    with pytest.raises(ValueError, match=r"3 .* or 4"):
        indices_from_pml((torch.tensor([0]),) * 2)


def test_reference_miner_empty_on_single_label_batch() -> None:
    miner = AllTripletsMiner()
    result = miner(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    assert isinstance(result, Triplets) and result.is_empty()


def test_pml_components_fit_protocols_and_accept_our_tuples() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    loss = pml_losses.TripletMarginLoss(margin=0.2)
    assert isinstance(loss, Loss)
    assert isinstance(pml_miners.BatchHardMiner(), Miner)  # by shape; it returns plain tuples (omlcore_pml wraps it)

    torch.manual_seed(0)
    embeddings = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    triplets = AllTripletsMiner()(embeddings, labels)
    ours = loss(embeddings, labels, triplets)
    theirs = loss(embeddings, labels, triplets.to_pml())
    # Reference: PML's definition, with explicit loops: L2-normalised embeddings (PML's default distance),
    # mean over the triplets with a positive loss (AvgNonZeroReducer).
    e = torch.nn.functional.normalize(embeddings.detach(), dim=1)
    values = [torch.relu((e[a] - e[p]).norm() - (e[a] - e[n]).norm() + 0.2) for a, p, n in zip(*triplets, strict=True)]
    positive = [v for v in values if v > 0]
    expected = torch.stack(positive).mean()
    assert torch.allclose(ours, theirs) and torch.allclose(ours.detach(), expected)
