"""The core's own plugin: registers omlcore's built-in components, in-process (no entry point)."""

from __future__ import annotations

from omlcore.hookspecs import hookimpl
from omlcore.registry import Registrar

__all__ = ["register_extractors", "register_transforms"]

_PRESETS = "omlcore.transforms.presets"


@hookimpl
def register_transforms(registry: Registrar) -> None:
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
