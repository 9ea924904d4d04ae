"""The class names of PML 2.x's concrete losses and miners, kept static so that registering imports nothing.

``tests/adapters/pml/test_pml_plugin.py`` checks that they equal the concrete subclasses of
``BaseMetricLossFunction`` / ``BaseMiner`` that the installed PML exports, so they cannot drift silently.
"""

__all__ = ["PML_LOSSES", "PML_MINERS"]

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
