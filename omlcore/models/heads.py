"""Projection heads on top of any extractor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from omlcore.config import resolve
from omlcore.models.base import ExtractorBase, Weights, strip_prefix

__all__ = ["ExtractorWithMLP", "mlp"]


def mlp(in_features: int, features: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden size, then ``Linear -> Dropout``.

    The module indices follow ``torchvision.ops.MLP`` (``0`` is the first ``Linear``, every hidden layer takes
    three slots), so OML's heads load as they are.
    """
    if not features:
        raise ValueError("mlp needs at least one layer size")
    layers: list[nn.Module] = []
    width = in_features
    for hidden in features[:-1]:
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = hidden
    layers += [nn.Linear(width, features[-1]), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class ExtractorWithMLP(ExtractorBase):
    """An extractor followed by an MLP projection: ``mlp(extractor(images))``, ``feat_dim = mlp_features[-1]``.

    The wrapped extractor is the trunk: :meth:`freeze` (or ``freeze_trunk=True``) trains only the head and runs
    the extractor without autograd. State-dict keys are ``extractor.*`` and ``projection.*``, as in OML.

    Args:
        extractor: an extractor module, the registered name of one (``"vits16"``), or a config
            ``{"name": ..., "args": {...}}`` built through the registry.
        mlp_features: sizes of the projection's layers (hidden ones, then the output).
        weights: a zoo name, a checkpoint file or a state dict of the whole model, or None.
        freeze_trunk: start with the extractor frozen.
        normalise_features: L2-normalise the projected embeddings.
        dropout: dropout probability after each layer of the projection.
    """

    def __init__(
        self,
        extractor: nn.Module | Mapping[str, Any] | str,
        mlp_features: Sequence[int],
        weights: Weights = None,
        freeze_trunk: bool = False,
        normalise_features: bool = False,
        dropout: float = 0.0,
    ) -> None:
        extractor = resolve("extractor", extractor, path="extractor_with_mlp.args.extractor")
        in_features = getattr(extractor, "feat_dim", None)
        if not isinstance(extractor, nn.Module) or not isinstance(in_features, int):
            raise TypeError(f"ExtractorWithMLP needs an nn.Module with an int feat_dim, got {type(extractor).__name__}")
        features = [int(size) for size in mlp_features]
        if not features or min(features) <= 0:
            raise ValueError(f"mlp_features must be a non-empty list of positive sizes, got {list(mlp_features)}")
        super().__init__("extractor_with_mlp", features[-1], normalise_features)
        self.mlp_features = features
        self.extractor = extractor
        self.projection = mlp(in_features, features, dropout)
        if freeze_trunk:
            self.freeze()
        self.load_weights(weights)

    def trunk_modules(self) -> list[nn.Module]:
        return [self.extractor]

    def forward_features(self, images: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.trunk_frozen):
            features = self.extractor(images)
        return self.projection(features)

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """OML / omlcore layouts -> this model: strip a prefix, let the wrapped extractor convert its part."""
        stripped = strip_prefix(state_dict, "projection.0.weight", ignore=("criterion.",))
        trunk = {key[len("extractor.") :]: value for key, value in stripped.items() if key.startswith("extractor.")}
        if isinstance(self.extractor, ExtractorBase):
            trunk = self.extractor.convert_state_dict(trunk)
        converted = {f"extractor.{key}": value for key, value in trunk.items()}
        converted.update((key, value) for key, value in stripped.items() if not key.startswith("extractor."))
        return converted
