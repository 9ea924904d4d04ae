"""AllTripletsMiner: every valid (anchor, positive, negative), optionally a uniform random subset of them."""

from __future__ import annotations

import torch
from torch import Tensor

from omlcore.miners.base import TripletMiner
from omlcore.protocols import Triplets

__all__ = ["AllTripletsMiner", "sample_distinct"]


class AllTripletsMiner(TripletMiner):
    """All triplets ``(a, p, n)`` with ``label(p) == label(a) != label(n)``, ``p != a`` (OML's ``AllTripletsMiner``).

    A batch of ``L`` labels x ``K`` items has ``B (K - 1) (B - K)`` of them. Triplets are enumerated from the
    pair masks (``O(B^2)`` memory plus the output), never from a ``B x B x B`` cube; they come sorted by
    ``(a, p, n)``, the order of PML's ``get_all_triplets_indices``.

    Args:
        max_output_triplets: keep a uniform random subset of at most this many triplets, without replacement:
            positions in ``[0, T)`` are sampled (:func:`sample_distinct`) and decoded, so memory stays
            ``O(B^2 + max_output_triplets)`` however large ``T`` is. Drawn with torch's global generator
            (``torch.manual_seed`` makes it reproducible). ``None`` keeps all.
    """

    def __init__(self, max_output_triplets: int | None = None) -> None:
        if max_output_triplets is not None and (isinstance(max_output_triplets, bool) or max_output_triplets < 1):
            raise ValueError(f"AllTripletsMiner: max_output_triplets must be >= 1 or None, got {max_output_triplets}")
        self.max_output_triplets = max_output_triplets

    def mine(self, embeddings: Tensor, ref_emb: Tensor | None, positive: Tensor, negative: Tensor) -> Triplets:
        return all_triplets(positive, negative, self.max_output_triplets)

    def __repr__(self) -> str:
        return f"AllTripletsMiner(max_output_triplets={self.max_output_triplets})"


def all_triplets(positive: Tensor, negative: Tensor, max_triplets: int | None = None) -> Triplets:
    """Every ``(a, p, n)`` with ``positive[a, p] and negative[a, n]``, or a uniform subset of ``max_triplets``."""
    device = positive.device
    pos_count, neg_count = positive.count_nonzero(1), negative.count_nonzero(1)
    total = int((pos_count * neg_count).sum())
    if total == 0:
        return Triplets.empty(device)
    if max_triplets is not None and max_triplets < total:
        return _sampled_triplets(positive, negative, neg_count, total, max_triplets)
    rows = ((pos_count > 0) & (neg_count > 0)).nonzero().squeeze(1)
    n_pos, n_neg = pos_count[rows], neg_count[rows]
    if bool((n_pos == n_pos[0]).all() & (n_neg == n_neg[0]).all()):  # balanced batch: a dense (A, P, N) grid
        n_p, n_n = int(n_pos[0]), int(n_neg[0])
        pos = positive[rows].nonzero()[:, 1].view(len(rows), n_p, 1)
        neg = negative[rows].nonzero()[:, 1].view(len(rows), 1, n_n)
        return Triplets(
            rows.repeat_interleave(n_p * n_n),
            pos.expand(-1, -1, n_n).reshape(-1),
            neg.expand(-1, n_p, -1).reshape(-1),
        )
    anchor, pos = positive.nonzero(as_tuple=True)  # positive pairs sorted by (a, p)
    neg_all = negative.nonzero(as_tuple=True)[1]  # the negatives of every anchor, anchors in order
    per_pair = neg_count[anchor]
    pair_start = per_pair.cumsum(0) - per_pair
    neg_start = neg_count.cumsum(0) - neg_count
    shift = torch.repeat_interleave(neg_start[anchor] - pair_start, per_pair, output_size=total)
    return Triplets(
        torch.repeat_interleave(anchor, per_pair, output_size=total),
        torch.repeat_interleave(pos, per_pair, output_size=total),
        neg_all[torch.arange(total, device=device) + shift],
    )


def _sampled_triplets(positive: Tensor, negative: Tensor, neg_count: Tensor, total: int, k: int) -> Triplets:
    """``k`` of the ``total`` triplets, uniformly without replacement, decoded from their flat positions."""
    anchor, pos = positive.nonzero(as_tuple=True)
    neg_all = negative.nonzero(as_tuple=True)[1]
    per_pair = neg_count[anchor]
    pair_end = per_pair.cumsum(0)
    flat = sample_distinct(total, k, positive.device).sort().values
    pair = torch.searchsorted(pair_end, flat, right=True)
    offset = flat - (pair_end[pair] - per_pair[pair])
    a = anchor[pair]
    return Triplets(a, pos[pair], neg_all[(neg_count.cumsum(0) - neg_count)[a] + offset])


def sample_distinct(total: int, k: int, device: torch.device | str | None = None) -> Tensor:
    """``k`` distinct integers drawn uniformly from ``[0, total)``, in ``O(k)`` memory.

    For ``k >= total / 4`` a prefix of a random permutation (memory ``O(total)``, at most 4x the answer);
    otherwise draws with replacement, keeps the distinct values and repeats until there are ``k`` (duplicates are
    rare, so one or two rounds), then keeps a random ``k`` of them, a uniform ``k``-subset by symmetry.
    """
    if not 0 <= k <= total:
        raise ValueError(f"sample_distinct: need 0 <= k <= total, got k={k}, total={total}")
    if 4 * k >= total:
        return torch.randperm(total, device=device)[:k]
    drawn = torch.empty(0, dtype=torch.long, device=device)
    while len(drawn) < k:
        extra = torch.randint(total, (k - len(drawn) + k // 8 + 8,), device=device)
        drawn = torch.unique(torch.cat([drawn, extra]))
    return drawn[torch.randperm(len(drawn), device=device)[:k]]
