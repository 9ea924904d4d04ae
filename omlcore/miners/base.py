"""What omlcore's miners share: input checks, positive / negative pair masks, and extended triplets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from omlcore.config import resolve
from omlcore.functional.linear import fused_linear
from omlcore.labels import as_class_ids
from omlcore.protocols import Miner, Triplets

__all__ = [
    "ExtendedTriplets",
    "TripletMiner",
    "build_miner",
    "hardest_first",
    "pair_masks",
    "row_shifted_similarities",
    "same_label_groups",
]


class ExtendedTriplets(Triplets):
    """Triplets over the batch *extended* by extra embeddings: ``torch.cat([embeddings, extra_embeddings])``.

    Indices ``< B`` are batch items, indices ``>= B`` are rows of ``extra_embeddings``. Miners that look beyond
    the batch return them: :class:`~omlcore.miners.CrossBatchMemoryMiner` (extra = its memory bank, detached;
    anchors are batch items) and :class:`~omlcore.miners.HardClusterMiner` (extra = the label centroids,
    differentiable; anchors and negatives are centroids). :meth:`resolve` gives the embeddings and labels the
    indices refer to, e.g. for a PML loss: ``pml_loss(*triplets.resolve(embeddings, labels), triplets)``.
    """

    extra_embeddings: Tensor
    extra_labels: Tensor

    def __new__(
        cls, anchor: Any, positive: Any, negative: Any, extra_embeddings: Tensor, extra_labels: Tensor
    ) -> ExtendedTriplets:
        self = cast(ExtendedTriplets, super().__new__(cls, anchor, positive, negative))
        if extra_embeddings.dim() != 2 or extra_labels.shape != extra_embeddings.shape[:1]:
            raise ValueError(
                "ExtendedTriplets needs extra_embeddings (E, D) and extra_labels (E,), got "
                f"{tuple(extra_embeddings.shape)} and {tuple(extra_labels.shape)}"
            )
        self.extra_embeddings = extra_embeddings
        self.extra_labels = extra_labels
        return self

    def __getnewargs__(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        return (self[0], self[1], self[2], self.extra_embeddings, self.extra_labels)

    def resolve(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(cat([embeddings, extra_embeddings]), cat([labels, extra_labels]))``: what the indices point into."""
        return (
            torch.cat([embeddings, self.extra_embeddings.to(embeddings.dtype)]),
            torch.cat([labels.to(self.extra_labels.device), self.extra_labels]),
        )

    def to(self, device: torch.device | str) -> ExtendedTriplets:
        a, p, n = (t.to(device) for t in self)
        return ExtendedTriplets(a, p, n, self.extra_embeddings.to(device), self.extra_labels.to(device))

    def __repr__(self) -> str:
        return f"ExtendedTriplets(num={self.num}, extra={len(self.extra_labels)}, device={self.device})"


def check_inputs(
    owner: str, embeddings: Tensor, labels: Any, ref_emb: Tensor | None = None, ref_labels: Any = None
) -> tuple[Tensor, Tensor | None]:
    """Validate shapes; return ``labels`` (and ``ref_labels``) as int64 class ids on the embeddings' device, by the
    one rule of :mod:`omlcore.labels` (integers, or floats that are whole numbers)."""
    if embeddings.dim() != 2:
        raise ValueError(f"{owner}: embeddings must be (B, D), got shape {tuple(embeddings.shape)}")
    labels = as_class_ids(f"{owner}: labels", labels, embeddings.device)
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"{owner}: labels must be ({embeddings.shape[0]},) to match embeddings {tuple(embeddings.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if (ref_emb is None) != (ref_labels is None):
        raise ValueError(f"{owner}: pass both ref_emb and ref_labels, or neither")
    if ref_emb is None:
        return labels, None
    if ref_emb.dim() != 2 or ref_emb.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"{owner}: ref_emb must be (R, {embeddings.shape[1]}) like embeddings, got {tuple(ref_emb.shape)}"
        )
    ref_labels = as_class_ids(f"{owner}: ref_labels", ref_labels, embeddings.device)
    if ref_labels.shape != ref_emb.shape[:1]:
        raise ValueError(f"{owner}: ref_labels must be ({ref_emb.shape[0]},), got {tuple(ref_labels.shape)}")
    return labels, ref_labels


def check_ignore_mask(owner: str, ignore_anchor_mask: Any, labels: Tensor) -> Tensor:
    """``ignore_anchor_mask`` as a bool tensor ``(B,)`` on the labels' device, or a clear error."""
    ignore = torch.as_tensor(ignore_anchor_mask, device=labels.device)
    if ignore.dtype != torch.bool or ignore.shape != labels.shape:
        raise ValueError(
            f"{owner}: ignore_anchor_mask must be a bool tensor {tuple(labels.shape)}, "
            f"got {ignore.dtype} {tuple(ignore.shape)}"
        )
    return ignore


def pair_masks(
    labels: Tensor,
    ref_labels: Tensor | None = None,
    *,
    ignore_anchor_mask: Tensor | None = None,
    sequences: Tensor | None = None,
    ref_sequences: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Which ``(anchor, other)`` pairs are positives and which negatives: two bool masks ``(B, R)``.

    Positive: same label, not the anchor itself (when ``ref_labels`` is None the reference set is the batch).
    Negative: different label. Neither: pairs in the same sequence (``sequences[i] == ref_sequences[j] >= 0``;
    negative ids mean "no sequence"), and every pair of an anchor in ``ignore_anchor_mask`` (OML's option for
    items that must not be anchors).
    """
    same_set = ref_labels is None
    other = labels if ref_labels is None else ref_labels
    same = labels.unsqueeze(1) == other.unsqueeze(0)
    negative = ~same
    positive = same
    if same_set:
        positive.fill_diagonal_(False)
    if sequences is not None:
        sequences = torch.as_tensor(sequences, device=labels.device)
        other_sequences = sequences if same_set else ref_sequences
        if other_sequences is None:
            raise ValueError("pair_masks: with ref_labels and sequences, pass ref_sequences too")
        other_sequences = torch.as_tensor(other_sequences, device=labels.device)
        if sequences.shape != labels.shape or other_sequences.shape != other.shape:
            raise ValueError(
                f"pair_masks: sequences must match labels ({tuple(labels.shape)}) and ref_sequences ref_labels "
                f"({tuple(other.shape)}), got {tuple(sequences.shape)} and {tuple(other_sequences.shape)}"
            )
        same_sequence = (sequences.unsqueeze(1) == other_sequences.unsqueeze(0)) & (sequences >= 0).unsqueeze(1)
        positive &= ~same_sequence
        negative &= ~same_sequence
    if ignore_anchor_mask is not None:
        ignore = check_ignore_mask("pair_masks", ignore_anchor_mask, labels)
        positive[ignore] = False
        negative[ignore] = False
    return positive, negative


def row_shifted_similarities(embeddings: Tensor, ref_emb: Tensor | None = None) -> Tensor:
    """``t[i, j] = <x_i, r_j> - ||r_j||^2 / 2`` = ``(||x_i||^2 - ||x_i - r_j||^2) / 2``: one fused GEMM, no extras.

    Minus half the squared distance, shifted by a constant per row: every row ranks its candidates exactly as by
    distance, closest = largest. What mining needs (``argmax`` / ``argmin`` / ``topk`` per anchor), at the cost
    of the matrix product alone (:func:`omlcore.functional.linear.fused_linear`). Without ``ref_emb`` the
    squared norms are the product's own diagonal, subtracted afterwards (cheaper than computing them first).
    """
    if ref_emb is not None:
        return fused_linear(embeddings, ref_emb, torch.linalg.vecdot(ref_emb, ref_emb).mul_(-0.5))
    gram = fused_linear(embeddings, embeddings)
    return gram.sub_(gram.diagonal().mul(0.5))


def hardest_first(scores: Tensor, *, largest: bool) -> Tensor:
    """``scores`` with NaN replaced by ``+inf`` (``largest``) or ``-inf``: a NaN score ranks as the hardest.

    For the mask paths of the miners, which rank candidates by ``max`` / ``min`` / ``topk``: a NaN embedding is
    then mined (and the loss on its triplets is NaN, as with NumPy's ``argmax`` / ``argmin`` on the CPU path)
    instead of being ranked after the masked-out entries and silently dropped.
    """
    return scores.nan_to_num(nan=float("inf") if largest else float("-inf"), posinf=float("inf"), neginf=float("-inf"))


def same_label_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items sorted by label, each one's label group as a row of an index table, and the group sizes.

    Returns ``(order, table, sizes)``: ``order`` sorts the labels stably (``labels.argsort(kind="stable")``);
    row ``p`` of the ``(B, K)`` table lists the items with label ``labels[order[p]]`` (``order[p]`` included) in
    increasing order, padded to ``K`` (the largest group) by repeating the last one, so that every cell is a
    member and each member first appears in index order; ``sizes[p]`` is that group's size. It enumerates the
    positives of every anchor in ``O(B K)`` instead of a ``(B, B)`` mask, and writing ``-inf`` through it removes
    them from a score row in place. One stable sort and two binary searches of sorted keys (predictable, cheap):
    rows follow ``order``, not the items' own order.
    """
    order = labels.argsort(kind="stable")
    sorted_labels = labels[order]
    first = sorted_labels.searchsorted(sorted_labels)
    last = sorted_labels.searchsorted(sorted_labels, side="right") - 1
    sizes = last - first + 1
    window = first[:, None] + np.arange(sizes.max())
    return order, order[np.minimum(window, last[:, None], out=window)], sizes


class TripletMiner(ABC):
    """Base of omlcore's in-batch triplet miners (:class:`omlcore.protocols.Miner`).

    ``miner(embeddings, labels, ref_emb=None, ref_labels=None, *, ignore_anchor_mask=None, sequences=None,
    ref_sequences=None) -> Triplets``: anchors are batch items; positives and negatives are batch items, or
    reference items when ``ref_emb`` / ``ref_labels`` are given (PML's convention; the anchor itself is only
    excluded when the reference is the batch). The keyword options are those of :func:`pair_masks`.
    Mining runs without gradients and never modifies ``embeddings``. A batch with no valid triplet (one label,
    one item per label) gives empty :class:`~omlcore.protocols.Triplets` on the embeddings' device.

    Subclasses implement :meth:`mine`, which :class:`~omlcore.miners.CrossBatchMemoryMiner` also calls with its
    own masks, and may implement :meth:`mine_by_label_groups`, a faster CPU path without ``(B, B)`` masks.
    """

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
    ) -> Triplets:
        labels, ref_labels = check_inputs(type(self).__name__, embeddings, labels, ref_emb, ref_labels)
        same_set = ref_emb is None or ref_emb is embeddings
        if len(labels) == 0 or (ref_labels is not None and len(ref_labels) == 0):
            return Triplets.empty(embeddings.device)
        if (
            ref_emb is None
            and sequences is None
            and embeddings.is_cpu
            and embeddings.dtype in (torch.float32, torch.float64)
            and type(self).mine_by_label_groups is not TripletMiner.mine_by_label_groups
        ):
            ignore = (
                None
                if ignore_anchor_mask is None
                else check_ignore_mask(type(self).__name__, ignore_anchor_mask, labels)
            )
            return self.mine_by_label_groups(embeddings.detach(), labels.numpy(), ignore)
        with torch.no_grad():
            positive, negative = pair_masks(
                labels,
                None if same_set else ref_labels,
                ignore_anchor_mask=ignore_anchor_mask,
                sequences=sequences,
                ref_sequences=ref_sequences,
            )
            return self.mine(
                embeddings.detach(), None if same_set or ref_emb is None else ref_emb.detach(), positive, negative
            )

    @abstractmethod
    def mine(self, embeddings: Tensor, ref_emb: Tensor | None, positive: Tensor, negative: Tensor) -> Triplets:
        """Triplets from the ``(B, R)`` positive / negative masks; ``ref_emb=None`` means the batch itself.

        Called under ``torch.no_grad()`` with detached embeddings.
        """

    def mine_by_label_groups(self, embeddings: Tensor, labels: np.ndarray, ignore: Tensor | None) -> Triplets:
        """The same triplets as :meth:`mine`, from the labels themselves (:func:`same_label_groups`).

        Used instead of the masks for CPU float32 / float64 batches without a reference set or sequences;
        ``ignore`` is the checked ``ignore_anchor_mask``. Optional: miners that do not implement it use the masks.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_miner(owner: str, miner: Miner | Mapping[str, Any]) -> Miner:
    """A miner object, or one built from an OML-style config ``{"name": ..., "args": {...}}`` via the registry."""
    if isinstance(miner, Mapping):
        built: Miner = resolve("miner", miner)
        return built
    if not callable(miner):
        raise TypeError(f"{owner}: miner must be a Miner (callable) or a config mapping, got {type(miner).__name__}")
    return miner
