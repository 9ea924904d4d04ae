"""The core's own plugin: registers omlcore's built-in components, in-process (no entry point)."""

from __future__ import annotations

from omlcore.hookspecs import hookimpl
from omlcore.registry import Registrar

__all__ = ["register_transforms"]

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
