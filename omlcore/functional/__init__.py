"""Pure tensor functions shared by miners and losses: distances and label smoothing."""

from omlcore.functional.distances import elementwise_distances, pairwise_distances, pairwise_squared_distances
from omlcore.functional.label_smoothing import label_smoothing

__all__ = ["elementwise_distances", "label_smoothing", "pairwise_distances", "pairwise_squared_distances"]
