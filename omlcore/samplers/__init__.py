"""Batch samplers (numpy only): balanced P x K batches, deterministic per seed and epoch, split across ranks.

- :class:`BalanceSampler`: ``n_labels`` x ``n_instances``, each label once per epoch.
- :class:`CategoryBalanceSampler`: ``n_categories`` x ``n_labels`` x ``n_instances``, weighted categories.
- :class:`DistinctCategoryBalanceSampler`: as above, labels distinct within an epoch until they run out.

All follow OML's semantics (epoch length, repeats when a label has too few items) and implement
:class:`omlcore.protocols.Sampler` plus ``set_epoch``; under ``torch.distributed`` every rank iterates a
disjoint, equally long share of each epoch (see :class:`~omlcore.samplers.base.EpochBatchSampler`).
"""

from omlcore.samplers.balance import BalanceSampler
from omlcore.samplers.base import EpochBatchSampler
from omlcore.samplers.category_balance import CategoryBalanceSampler
from omlcore.samplers.distinct_category_balance import DistinctCategoryBalanceSampler

__all__ = ["BalanceSampler", "CategoryBalanceSampler", "DistinctCategoryBalanceSampler", "EpochBatchSampler"]
