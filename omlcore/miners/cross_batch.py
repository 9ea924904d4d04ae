"""CrossBatchMemoryMiner: anchors from the batch, positives and negatives from the batch plus a memory bank."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from omlcore.miners.base import ExtendedTriplets, TripletMiner, build_miner, check_inputs, pair_masks
from omlcore.miners.n_hard_triplets import NHardTripletsMiner

__all__ = ["CrossBatchMemoryMiner"]


class CrossBatchMemoryMiner:
    """Mines the current batch against itself and the embeddings of the last ``bank_size_in_batches`` batches.

    "Cross-Batch Memory for Embedding Learning" (Wang et al., CVPR 2020, https://arxiv.org/abs/1912.06798);
    OML's ``MinerWithBank``. Every call: anchors are batch items, positives / negatives are mined by ``miner``
    among ``cat([batch, bank])`` (the anchor itself excluded), then the batch (detached) enters the bank and the
    oldest batch leaves it once it holds ``bank_size_in_batches``. Returns
    :class:`~omlcore.miners.base.ExtendedTriplets` whose ``extra_embeddings`` / ``extra_labels`` are the bank as
    it was during mining; gradients flow through the batch items only. Unlike OML, a partly filled bank is used
    from the second call on (OML waits until it is full); a bank full of the same batches gives OML's triplets.
    A batch with a NaN or infinite embedding is mined (its loss is NaN) but not kept: under mixed precision, a
    step that overflows is skipped by the gradient scaler and must not spoil the next ``bank_size_in_batches``.

    Args:
        bank_size_in_batches: batches kept, >= 1.
        miner: an omlcore :class:`~omlcore.miners.base.TripletMiner` (its ``mine`` runs on the extended masks) or
            its config ``{"name": ..., "args": ...}``; default ``NHardTripletsMiner()`` (batch-hard).

    ``last_logs``: ``bank_items``, the fractions of mined positives / negatives that came from the bank, and
    ``batch_kept`` (0.0 for a non-finite batch).
    ``reset()`` empties the bank (e.g. between training stages).
    """

    def __init__(self, bank_size_in_batches: int, miner: TripletMiner | Mapping[str, Any] | None = None) -> None:
        if isinstance(bank_size_in_batches, bool) or not isinstance(bank_size_in_batches, int):
            raise TypeError(f"CrossBatchMemoryMiner: bank_size_in_batches must be an int, got {bank_size_in_batches!r}")
        if bank_size_in_batches < 1:
            raise ValueError(f"CrossBatchMemoryMiner: bank_size_in_batches must be >= 1, got {bank_size_in_batches}")
        built = NHardTripletsMiner() if miner is None else build_miner("CrossBatchMemoryMiner", miner)
        if not isinstance(built, TripletMiner):
            raise TypeError(
                "CrossBatchMemoryMiner: miner must be one of omlcore's in-batch triplet miners (all_triplets, "
                f"hard_triplets, n_hard_triplets), got {built!r}"
            )
        self.miner = built
        self.bank_size_in_batches = bank_size_in_batches
        self._bank: deque[tuple[Tensor, Tensor, Tensor]] = deque(maxlen=bank_size_in_batches)
        self.last_logs: dict[str, float] = {}

    def reset(self) -> None:
        self._bank.clear()

    @property
    def bank(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(embeddings, labels, sequences)`` in the bank, oldest first; None while empty."""
        if not self._bank:
            return None
        embeddings, labels, sequences = zip(*self._bank, strict=True)
        return torch.cat(embeddings), torch.cat(labels), torch.cat(sequences)

    def __call__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        *,
        ignore_anchor_mask: Tensor | None = None,
        sequences: Tensor | None = None,
    ) -> ExtendedTriplets:
        if ref_emb is not None or ref_labels is not None:
            raise ValueError(
                "CrossBatchMemoryMiner: its reference is the memory bank; do not pass ref_emb / ref_labels"
            )
        labels, _ = check_inputs("CrossBatchMemoryMiner", embeddings, labels)
        batch, device = len(labels), embeddings.device
        seq = torch.full_like(labels, -1) if sequences is None else torch.as_tensor(sequences, device=device).long()
        bank = self.bank
        if bank is not None and bank[0].shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"CrossBatchMemoryMiner: embeddings have dimension {embeddings.shape[1]} but the bank holds "
                f"{bank[0].shape[1]}; call reset() when the embedding size changes"
            )
        bank_emb, bank_labels, bank_seq = (
            (
                embeddings.new_empty(0, embeddings.shape[1]).detach(),
                labels.new_empty(0),
                seq.new_empty(0),
            )
            if bank is None
            else (bank[0].to(device, embeddings.dtype), bank[1].to(device), bank[2].to(device))
        )
        with torch.no_grad():
            detached = embeddings.detach()
            ref = torch.cat([detached, bank_emb])
            positive, negative = pair_masks(
                labels,
                torch.cat([labels, bank_labels]),
                ignore_anchor_mask=ignore_anchor_mask,
                sequences=seq,
                ref_sequences=torch.cat([seq, bank_seq]),
            )
            positive[:, :batch].fill_diagonal_(False)  # the anchor itself
            triplets = self.miner.mine(detached, ref, positive, negative)
            n = max(triplets.num, 1)
            positives_from_bank, negatives_from_bank, finite = torch.stack(
                [(triplets.positive >= batch).sum(), (triplets.negative >= batch).sum(), torch.isfinite(detached).all()]
            ).tolist()  # one synchronisation
            if finite:
                self._bank.append((detached.clone(), labels.clone(), seq.clone()))
            self.last_logs = {
                "bank_items": float(len(bank_labels)),
                "positives_from_bank": positives_from_bank / n,
                "negatives_from_bank": negatives_from_bank / n,
                "batch_kept": float(finite),
            }
        return ExtendedTriplets(*triplets, bank_emb, bank_labels)

    def __repr__(self) -> str:
        return f"CrossBatchMemoryMiner(bank_size_in_batches={self.bank_size_in_batches}, miner={self.miner!r})"
