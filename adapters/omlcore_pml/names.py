"""The class names of PML 2.x's concrete losses and miners, kept static so that registering imports nothing.

``tests/adapters/pml_adapter/test_pml_plugin.py`` checks that they equal the concrete subclasses of
``BaseMetricLossFunction`` / ``BaseMiner`` that the installed PML exports, and
``tests/adapters/pml_adapter/test_pml_adapter.py`` that the losses listed as rejecting labels or ``indices_tuple`` are
exactly those that do, so they cannot drift.
"""

__all__ = ["PML_LOSSES", "PML_LOSSES_WITHOUT_INDICES_TUPLE", "PML_LOSSES_WITHOUT_LABELS", "PML_MINERS"]

#: Concrete subclasses of ``pytorch_metric_learning.losses.BaseMetricLossFunction``.
PML_LOSSES: tuple[str, ...] = (
    "AngularLoss",
    "ArcFaceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "DynamicSoftMarginLoss",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "ManifoldLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PNPLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "ThresholdConsistentMarginLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "VICRegLoss",
)

#: Concrete subclasses of ``pytorch_metric_learning.miners.BaseMiner``.
PML_MINERS: tuple[str, ...] = (
    "AngularMiner",
    "BatchEasyHardMiner",
    "BatchHardMiner",
    "DistanceWeightedMiner",
    "EmbeddingsAlreadyPackagedAsTriplets",
    "HDCMiner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "TripletMarginMiner",
    "UniformHistogramMiner",
)

#: Losses whose ``forward`` raises when given labels (self-supervised / unsupervised): they cannot be an omlcore
#: :class:`~omlcore.protocols.Loss`, which is called as ``loss(embeddings, labels)``.
PML_LOSSES_WITHOUT_LABELS: tuple[str, ...] = ("ManifoldLoss", "VICRegLoss")

#: Losses whose ``forward`` raises when given an ``indices_tuple``, so that no miner can feed them.
PML_LOSSES_WITHOUT_INDICES_TUPLE: tuple[str, ...] = (
    "InstanceLoss",
    "P2SGradLoss",
    "PNPLoss",
    "RankedListLoss",
    "VICRegLoss",
)
