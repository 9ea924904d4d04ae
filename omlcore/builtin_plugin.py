"""The core's own plugin: registers omlcore's built-in components, in-process (no entry point).

Besides omlcore's own samplers, miners, losses, metrics, extractors, transforms and kNN backend, it registers
torch.optim's optimizers (kind ``optimizer``, built as ``factory(params, **args)``) and learning-rate schedulers
(kind ``scheduler``, ``factory(optimizer, **args)``): torch is the core's tensor library, so every runner has them.
The runners come with the adapters' plugins (``torch``, ``lightning``).
"""

from __future__ import annotations

from omlcore.hookspecs import hookimpl
from omlcore.registry import Registrar

__all__ = [
    "OPTIMIZERS",
    "POSTPROCESSORS",
    "SCHEDULERS",
    "register_extractors",
    "register_knn_backends",
    "register_losses",
    "register_metrics",
    "register_miners",
    "register_optimizers",
    "register_postprocessors",
    "register_samplers",
    "register_schedulers",
    "register_transforms",
]

_PRESETS = "omlcore.transforms.presets"


@hookimpl
def register_transforms(registry: Registrar) -> None:
    registry.register(
        "normalize", f"{_PRESETS}:normalize", summary="to tensor, normalise at native size (the datasets' default)"
    )
    registry.register(
        "resize_normalize", f"{_PRESETS}:resize_normalize", summary="resize to a square, to tensor, normalise (eval)"
    )
    registry.register(
        "train_augmentations",
        f"{_PRESETS}:train_augmentations",
        summary="random resized crop, horizontal flip, colour jitter, normalise",
    )
    registry.register("to_tensor", f"{_PRESETS}:to_tensor", summary="PIL image to a float tensor in [0, 1]")
    registry.register(
        "resize_center_crop",
        f"{_PRESETS}:resize_center_crop",
        summary="shorter side to 256, centre crop 224, normalise (ImageNet models)",
    )
    registry.register(
        "letterbox_normalize",
        f"{_PRESETS}:letterbox_normalize",
        summary="longer side to 224, pad to a square, normalise (keeps the whole image)",
    )
    registry.register(
        "pretrained",
        "omlcore.models.zoo:transforms_for_pretrained",
        summary="the preprocessing of a zoo model, by its name (args: name)",
    )


_MODELS = "omlcore.models"
_EXTRACTORS = {
    "resnet18": ("resnet", "ResNet-18, 512-d, average or GeM pooling (torchvision layout)"),
    "resnet34": ("resnet", "ResNet-34, 512-d, average or GeM pooling (torchvision layout)"),
    "resnet50": ("resnet", "ResNet-50, 2048-d, average or GeM pooling (torchvision layout)"),
    "resnet101": ("resnet", "ResNet-101, 2048-d, average or GeM pooling (torchvision layout)"),
    "resnet152": ("resnet", "ResNet-152, 2048-d, average or GeM pooling (torchvision layout)"),
    "vits16": ("vit", "ViT-S/16, 384-d CLS token (DINO layout)"),
    "vits8": ("vit", "ViT-S/8, 384-d CLS token (DINO layout)"),
    "vitb16": ("vit", "ViT-B/16, 768-d CLS token (DINO layout)"),
    "vitb8": ("vit", "ViT-B/8, 768-d CLS token (DINO layout)"),
    "vitb32_clip": ("clip", "CLIP ViT-B/32 visual tower, 512-d (OpenAI layout)"),
    "vitb16_clip": ("clip", "CLIP ViT-B/16 visual tower, 512-d (OpenAI layout)"),
    "vitl14_clip": ("clip", "CLIP ViT-L/14 visual tower, 768-d (OpenAI layout)"),
}


@hookimpl
def register_extractors(registry: Registrar) -> None:
    for name, (module, summary) in _EXTRACTORS.items():
        registry.register(name, f"{_MODELS}.{module}:{name}", summary=summary)
    registry.register(
        "small_cnn", f"{_MODELS}.small_cnn:SmallCNN", summary="small VGG-style CNN for small images, CPU-trainable"
    )
    registry.register(
        "extractor_with_mlp",
        f"{_MODELS}.heads:ExtractorWithMLP",
        summary="any extractor followed by an MLP projection head",
    )
    registry.register(
        "pretrained", f"{_MODELS}.zoo:from_pretrained", summary="a zoo model with its weights, by its name (args: name)"
    )
    registry.register(
        "pairwise_concat",
        f"{_MODELS}.pairwise:ConcatSiamese",
        summary="pairwise re-ranker model: both images through one backbone, joined (OML's ConcatSiamese)",
    )
    registry.register(
        "pairwise_features",
        f"{_MODELS}.pairwise:FeatureSiamese",
        summary="pairwise re-ranker model: an MLP on [|a - b|, a * b] of a shared backbone's features",
    )


_SAMPLERS = "omlcore.samplers"
_MINERS = "omlcore.miners"
_LOSSES = "omlcore.losses"


@hookimpl
def register_samplers(registry: Registrar) -> None:
    registry.register("balance", f"{_SAMPLERS}:BalanceSampler", summary="n_labels x n_instances per batch (P x K)")
    registry.register(
        "category_balance",
        f"{_SAMPLERS}:CategoryBalanceSampler",
        summary="n_categories x n_labels x n_instances per batch, weighted categories",
    )
    registry.register(
        "distinct_category_balance",
        f"{_SAMPLERS}:DistinctCategoryBalanceSampler",
        summary="category-balanced batches, labels distinct until they run out",
    )


@hookimpl
def register_miners(registry: Registrar) -> None:
    registry.register(
        "all_triplets", f"{_MINERS}:AllTripletsMiner", summary="every valid triplet, or a random subset of them"
    )
    registry.register(
        "hard_triplets", f"{_MINERS}:HardTripletsMiner", summary="batch-hard: farthest positive, closest negative"
    )
    registry.register(
        "n_hard_triplets",
        f"{_MINERS}:NHardTripletsMiner",
        summary="n hardest positives x negatives per anchor, or rank ranges",
    )
    registry.register("hard_cluster", f"{_MINERS}:HardClusterMiner", summary="label centroids as anchors and negatives")
    registry.register(
        "cross_batch_memory",
        f"{_MINERS}:CrossBatchMemoryMiner",
        summary="positives / negatives from the batch plus a bank of past batches",
    )
    registry.register("pairs", f"{_MINERS}:PairsMiner", summary="distinct positive / negative pairs of mined triplets")


@hookimpl
def register_losses(registry: Registrar) -> None:
    registry.register("triplet", f"{_LOSSES}:TripletLoss", summary="triplet loss on (anchor, positive, negative)")
    registry.register("triplet_plain", f"{_LOSSES}:TripletLossPlain", summary="triplet loss on stacked a, p, n rows")
    registry.register(
        "triplet_with_miner",
        f"{_LOSSES}:TripletLossWithMiner",
        summary="triplet loss on the triplets of any miner (default: all triplets)",
    )
    registry.register("arcface", f"{_LOSSES}:ArcFaceLoss", summary="additive angular margin softmax (ArcFace)")
    registry.register(
        "arcface_with_mlp", f"{_LOSSES}:ArcFaceLossWithMLP", summary="ArcFace on top of an MLP projection head"
    )
    registry.register(
        "contrastive", f"{_LOSSES}:ContrastiveLoss", summary="contrastive loss with pos_margin / neg_margin (PML)"
    )
    registry.register("surrogate_precision", f"{_LOSSES}:SurrogatePrecision", summary="differentiable precision@k")


@hookimpl
def register_metrics(registry: Registrar) -> None:
    registry.register(
        "embedding_metrics",
        "omlcore.metrics:EmbeddingMetrics",
        summary="CMC@k, precision@k, mAP@k, FNMR@FMR, PCF (OML) and PML's R-metrics on query / gallery",
    )


@hookimpl
def register_knn_backends(registry: Registrar) -> None:
    registry.register("exact", "omlcore.retrieval:ExactKNN", summary="exact chunked top-k (l2, cosine; CPU and CUDA)")


_POST = "omlcore.postprocessing"
#: name -> (module:class under omlcore.postprocessing, summary)
POSTPROCESSORS: dict[str, tuple[str, str]] = {
    "aqe": ("query_expansion:AverageQueryExpansion", "average query expansion over the top n (Chum et al. 2007)"),
    "alpha_qe": ("query_expansion:AlphaQueryExpansion", "alpha-weighted query expansion (Radenovic et al. 2018)"),
    "dba": ("query_expansion:DatabaseAugmentation", "database-side augmentation (Arandjelovic & Zisserman 2012)"),
    "k_reciprocal": ("k_reciprocal:KReciprocalReranker", "k-reciprocal re-ranking (Zhong et al. 2017), sparse"),
    "csls": ("normalization:CSLS", "hubness reduction by cross-domain similarity local scaling (Lample 2018)"),
    "constant_threshold": ("thresholds:ConstantThresholding", "drop neighbours farther than a distance (OML)"),
    "adaptive_threshold": (
        "thresholds:AdaptiveThresholding",
        "cut each row at its first gap above n_std x the mean gap (OML)",
    ),
    "pairwise_reranker": ("pairwise:PairwiseReranker", "re-score the top n with a trained pairwise model (OML)"),
}


@hookimpl
def register_postprocessors(registry: Registrar) -> None:
    for name, (target, summary) in POSTPROCESSORS.items():
        registry.register(name, f"{_POST}.{target}", summary=summary)


#: name -> (class in torch.optim, summary)
OPTIMIZERS: dict[str, tuple[str, str]] = {
    "adam": ("Adam", "Adam: adaptive moment estimation"),
    "adamw": ("AdamW", "AdamW: Adam with decoupled weight decay"),
    "sgd": ("SGD", "stochastic gradient descent, optionally with (Nesterov) momentum"),
    "rmsprop": ("RMSprop", "RMSprop: gradients scaled by a running average of their square"),
    "adagrad": ("Adagrad", "Adagrad: per-parameter rates from accumulated squared gradients"),
    "adadelta": ("Adadelta", "Adadelta: Adagrad with a decaying window of squared gradients"),
    "adamax": ("Adamax", "Adamax: Adam with the infinity norm"),
    "radam": ("RAdam", "RAdam: Adam with a rectified adaptive learning rate"),
    "nadam": ("NAdam", "NAdam: Adam with Nesterov momentum"),
    "lbfgs": ("LBFGS", "L-BFGS quasi-Newton method (step() needs a closure)"),
}

#: name -> (class in torch.optim.lr_scheduler, summary)
SCHEDULERS: dict[str, tuple[str, str]] = {
    "step": ("StepLR", "multiply the LR by gamma every step_size epochs"),
    "multistep": ("MultiStepLR", "multiply the LR by gamma at each of the milestones"),
    "exponential": ("ExponentialLR", "multiply the LR by gamma every epoch"),
    "cosine": ("CosineAnnealingLR", "cosine annealing from the initial LR to eta_min over T_max epochs"),
    "cosine_warm_restarts": ("CosineAnnealingWarmRestarts", "cosine annealing with warm restarts (SGDR)"),
    "onecycle": ("OneCycleLR", "the 1cycle policy: warm up to max_lr, then anneal"),
    "plateau": ("ReduceLROnPlateau", "reduce the LR when a monitored metric stops improving"),
    "linear": ("LinearLR", "scale the LR linearly from start_factor to end_factor (warm-up)"),
    "cyclic": ("CyclicLR", "cycle the LR between base_lr and max_lr"),
    "polynomial": ("PolynomialLR", "decay the LR polynomially to zero over total_iters"),
    "constant": ("ConstantLR", "scale the LR by a constant factor for total_iters epochs"),
    "lambda": ("LambdaLR", "set the LR to the initial LR times lr_lambda(epoch)"),
}


def _register_classes(registry: Registrar, module: str, table: dict[str, tuple[str, str]]) -> None:
    for name, (class_name, summary) in table.items():
        registry.register(name, f"{module}:{class_name}", summary=summary)


@hookimpl
def register_optimizers(registry: Registrar) -> None:
    _register_classes(registry, "torch.optim", OPTIMIZERS)


@hookimpl
def register_schedulers(registry: Registrar) -> None:
    _register_classes(registry, "torch.optim.lr_scheduler", SCHEDULERS)
