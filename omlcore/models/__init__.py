"""Extractors (ResNet, DINO ViT, CLIP visual tower, MLP head, a small CNN) and the zoo of pretrained weights.

>>> from omlcore.models import from_pretrained, transforms_for_pretrained
>>> model = from_pretrained("vits16_dino").eval()          # doctest: +SKIP
>>> embeddings = model.extract(images)                     # doctest: +SKIP
"""

from __future__ import annotations

from omlcore.models.base import ExtractorBase, Weights, build_extractor
from omlcore.models.catalog import PretrainedModel, extra_pretrained, find_pretrained, get_pretrained, list_pretrained
from omlcore.models.clip import ViTCLIPExtractor, vitb16_clip, vitb32_clip, vitl14_clip
from omlcore.models.heads import ExtractorWithMLP
from omlcore.models.hub import (
    CachedFileChangedError,
    CacheError,
    CacheWarning,
    CheckpointError,
    ChecksumMismatchError,
    DownloadError,
    UnsafeCheckpointError,
    cache_dir,
    checkpoints_dir,
    load_checkpoint,
)
from omlcore.models.pairwise import ConcatSiamese, FeatureSiamese, PairwiseModelBase
from omlcore.models.pooling import GeM, GlobalAvgPool
from omlcore.models.resnet import ResNetExtractor, resnet18, resnet34, resnet50, resnet101, resnet152
from omlcore.models.small_cnn import SmallCNN
from omlcore.models.vit import ViTExtractor, vitb8, vitb16, vits8, vits16
from omlcore.models.zoo import from_pretrained, transforms_for_pretrained

__all__ = [
    "CacheError",
    "CacheWarning",
    "CachedFileChangedError",
    "CheckpointError",
    "ChecksumMismatchError",
    "ConcatSiamese",
    "DownloadError",
    "ExtractorBase",
    "ExtractorWithMLP",
    "FeatureSiamese",
    "GeM",
    "GlobalAvgPool",
    "PairwiseModelBase",
    "PretrainedModel",
    "ResNetExtractor",
    "SmallCNN",
    "UnsafeCheckpointError",
    "ViTCLIPExtractor",
    "ViTExtractor",
    "Weights",
    "build_extractor",
    "cache_dir",
    "checkpoints_dir",
    "extra_pretrained",
    "find_pretrained",
    "from_pretrained",
    "get_pretrained",
    "list_pretrained",
    "load_checkpoint",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "transforms_for_pretrained",
    "vitb8",
    "vitb16",
    "vitb16_clip",
    "vitb32_clip",
    "vitl14_clip",
    "vits8",
    "vits16",
]
