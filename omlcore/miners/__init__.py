"""Miners: pick informative triplets / pairs from a batch (:class:`omlcore.protocols.Miner`).

- :class:`AllTripletsMiner`: every valid triplet, or a uniform random subset (``max_output_triplets``).
- :class:`HardTripletsMiner`: batch-hard, the farthest positive and the closest negative of every anchor.
- :class:`NHardTripletsMiner`: the n hardest positives x negatives per anchor, or rank ranges of them.
- :class:`HardClusterMiner`: label centroids as anchors and negatives (:class:`ExtendedTriplets`).
- :class:`CrossBatchMemoryMiner`: positives / negatives also from a bank of past batches (:class:`ExtendedTriplets`).
- :class:`PairsMiner`: the distinct positive / negative pairs of mined triplets (:class:`~omlcore.protocols.Pairs`).

All run without Python loops over anchors, on the embeddings' device, without gradients; a batch without a
valid tuple gives an empty result. Distances are Euclidean on the embeddings as given (OML's convention;
normalise in the model for cosine geometry).
"""

from omlcore.miners.all_triplets import AllTripletsMiner
from omlcore.miners.base import ExtendedTriplets, TripletMiner, pair_masks
from omlcore.miners.cross_batch import CrossBatchMemoryMiner
from omlcore.miners.hard_cluster import HardClusterMiner
from omlcore.miners.hard_triplets import HardTripletsMiner
from omlcore.miners.n_hard_triplets import NHardTripletsMiner
from omlcore.miners.pairs import PairsMiner

__all__ = [
    "AllTripletsMiner",
    "CrossBatchMemoryMiner",
    "ExtendedTriplets",
    "HardClusterMiner",
    "HardTripletsMiner",
    "NHardTripletsMiner",
    "PairsMiner",
    "TripletMiner",
    "pair_masks",
]
