"""Pairs of items to train a pairwise re-ranker: hard pairs mined from a trained extractor's neighbours.

OML trains its pairwise model (STIR, ``ConcatSiamese``) on pairs mined inside each batch from the extractor's
embeddings (``oml.miners.pairs.PairsMiner``: the pairs of a batch-hard triplet miner). Here they are mined once over
the whole training split: every item with its ``top_n`` nearest other items by the trained extractor, which are the
pairs the re-ranker meets at inference, where it re-scores each query's top n. A neighbour with another label is a
hard negative, one with the same label a positive. :class:`PairDataset` serves them as the training loops expect a
batch (``"images"``, ``"labels"``), and :class:`PairBatchSampler` shuffles them, seeded per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from omlcore.keys import IMAGES, INDEX, LABELS
from omlcore.protocols import KNNBackend
from omlcore.retrieval import DistanceMetric, ExactKNN
from omlcore.samplers.base import EpochBatchSampler, _check_int

__all__ = ["NeighbourPairs", "PairBatchSampler", "PairDataset", "mine_neighbour_pairs"]


@dataclass(frozen=True)
class NeighbourPairs:
    """Mined pairs of item indices: ``(query[i], gallery[i])`` with ``is_negative[i]`` (different labels).

    Attributes:
        query, gallery: int64 ``(P,)`` item indices; each item's pairs are consecutive, nearest neighbour first.
        is_negative: bool ``(P,)``, the binary target of the pair (1: the items are different).
    """

    query: Tensor
    gallery: Tensor
    is_negative: Tensor

    def __len__(self) -> int:
        return int(self.query.numel())

    @property
    def num_negative(self) -> int:
        return int(self.is_negative.sum())

    @property
    def num_positive(self) -> int:
        return len(self) - self.num_negative

    def balanced(self, seed: int = 0) -> NeighbourPairs:
        """As many positives as negatives: the larger class subsampled at random (``seed``), the pairs kept in order.

        A trained extractor's neighbours are mostly positives; OML's ``PairsMiner`` likewise gives one hardest positive
        and one hardest negative per anchor. Empty when one class is.
        """
        classes = [(~self.is_negative).nonzero().flatten(), self.is_negative.nonzero().flatten()]
        size = min(len(members) for members in classes)
        rng = np.random.default_rng(seed)
        kept = [
            members if len(members) == size else members[np.sort(rng.choice(len(members), size, replace=False))]
            for members in classes
        ]
        index = torch.cat(kept).sort().values
        return NeighbourPairs(self.query[index], self.gallery[index], self.is_negative[index])


def mine_neighbour_pairs(
    embeddings: Tensor,
    labels: Tensor | np.ndarray | Sequence[int],
    top_n: int,
    *,
    sequences: Tensor | np.ndarray | Sequence[int] | None = None,
    metric: DistanceMetric = "l2",
    backend: KNNBackend | None = None,
) -> NeighbourPairs:
    """Each item paired with its ``top_n`` nearest other items: positives (same label) and hard negatives.

    Args:
        embeddings: ``(N, D)`` embeddings of the items by the trained extractor.
        labels: ``(N,)`` int labels.
        top_n: neighbours per item, at most ``N - 1``.
        sequences: ``(N,)`` sequence ids (negative: none); items of one sequence are not paired (as the validation
            never retrieves a query's own sequence).
        metric, backend: the distance (``l2`` or ``cosine``) and kNN backend (default: exact search).

    Returns:
        The pairs in item order, each item's neighbours nearest first (ties: the smaller index first); an item with
        fewer than ``top_n`` candidates (a long sequence) gets fewer pairs.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    label_tensor = torch.tensor(np.asarray(labels), dtype=torch.long)
    if label_tensor.shape != (n,):
        raise ValueError(f"labels must be ({n},), one per embedding, got shape {tuple(label_tensor.shape)}")
    top_n = _check_int("mine_neighbour_pairs", "top_n", top_n, 1)
    if top_n > n - 1:
        raise ValueError(
            f"top_n={top_n} neighbours per item, but there are only {n} items ({n - 1} others each); lower top_n to "
            f"at most {max(n - 1, 1)}"
        )
    ids = torch.arange(n)
    exclude = [(ids, ids)]
    if sequences is not None:
        codes = torch.tensor(np.asarray(sequences), dtype=torch.long)
        if codes.shape != (n,):
            raise ValueError(f"sequences must be ({n},), one per embedding, got shape {tuple(codes.shape)}")
        exclude.append((codes, codes))
    knn = backend if backend is not None else ExactKNN(metric)
    _, neighbours = knn.search(embeddings, embeddings, top_n, exclude)
    neighbours = neighbours.cpu()
    rows, columns = (neighbours >= 0).nonzero(as_tuple=True)
    gallery = neighbours[rows, columns]
    return NeighbourPairs(rows, gallery, label_tensor[rows] != label_tensor[gallery])


class PairDataset(Dataset[dict[str, Any]]):
    """The pairs of a dataset's items, as a training batch needs them (OML's ``PairDataset``, one input tensor).

    Item ``i`` is ``{"images": stack([query input, gallery input]), "labels": target, "idx": i}``: the two items'
    ``input_key`` entries stacked into ``(2, C, H, W)`` (so both need one shape), and the pair's binary
    cross-entropy target, float 1.0 when the items are different, 0.0 when they share a label. A training loop
    therefore passes the pair to the model and the target to the loss as it would images and labels.

    Args:
        dataset: items with ``input_key`` (e.g. an :class:`~omlcore.datasets.ImageLabeledDataset` with the training
            transform).
        pairs: indices into ``dataset`` (:func:`mine_neighbour_pairs`).
        input_key: the items' input.
    """

    def __init__(self, dataset: Dataset[Any], pairs: NeighbourPairs, input_key: str = IMAGES) -> None:
        self.dataset = dataset
        self.pairs = pairs
        self.input_key = input_key

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        query, gallery = int(self.pairs.query[index]), int(self.pairs.gallery[index])
        inputs = torch.stack([self.dataset[query][self.input_key], self.dataset[gallery][self.input_key]])
        target = torch.tensor(float(self.pairs.is_negative[index]))
        return {IMAGES: inputs, LABELS: target, INDEX: index}


class PairBatchSampler(EpochBatchSampler):
    """Shuffled batches of ``batch_size`` pairs, the same for a seed and epoch (exact resume), DDP-aware.

    An epoch is one permutation of the ``n_pairs`` pairs drawn from ``(seed, epoch)``, cut into
    ``ceil(n_pairs / batch_size)`` batches; the last one is filled up with pairs of another permutation (so a few
    pairs come twice). See :class:`~omlcore.samplers.base.EpochBatchSampler` for ``set_epoch`` and the ranks' shares.

    Args:
        n_pairs: pairs in the dataset.
        batch_size: pairs per batch, at most ``n_pairs``.
        seed, rank, world_size: as :class:`~omlcore.samplers.base.EpochBatchSampler`.
    """

    def __init__(
        self, n_pairs: int, batch_size: int, *, seed: int = 0, rank: int | None = None, world_size: int | None = None
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        self.n_pairs = _check_int("PairBatchSampler", "n_pairs", n_pairs, 1)
        self._batch_size = _check_int("PairBatchSampler", "batch_size", batch_size, 1)
        if self._batch_size > self.n_pairs:
            raise ValueError(f"PairBatchSampler: batch_size={batch_size} is larger than the {n_pairs} pairs")

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def num_batches(self) -> int:
        return math.ceil(self.n_pairs / self._batch_size)

    def _epoch_batches(self, rng: np.random.Generator) -> np.ndarray:
        order = rng.permutation(self.n_pairs)
        missing = self.num_batches() * self._batch_size - self.n_pairs
        filled = np.concatenate([order, rng.permutation(self.n_pairs)[:missing]])
        return filled.reshape(-1, self._batch_size)
