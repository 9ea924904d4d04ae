"""The base class of omlcore's extractors: normalised output on request, ``extract``, freezing, weights.

Every extractor keeps its parameters under the key names of the public checkpoints of its family
(torchvision ResNet, DINO ViT, OpenAI CLIP), so those state dicts load as they are; OML's checkpoints,
which wrap the same keys in a prefix such as ``model.``, load through :meth:`ExtractorBase.load_weights`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omlcore.config import resolve
from omlcore.models.catalog import find_pretrained, get_pretrained, list_pretrained
from omlcore.models.hub import CheckpointError, load_checkpoint

__all__ = [
    "ExtractorBase",
    "Weights",
    "build_extractor",
    "load_state_dict_strictly",
    "strip_prefix",
    "unwrap_state_dict",
]

Weights = str | os.PathLike[str] | Mapping[str, Tensor] | None
"""A zoo name (see :mod:`omlcore.models.catalog`), a checkpoint file, a state dict, or None (random init)."""

_WRAPPER_KEYS = ("state_dict", "teacher", "model")
_MAX_LISTED = 8

T = TypeVar("T", bound="ExtractorBase")


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of a checkpoint, looking inside the usual wrappers.

    Lightning and OML keep them under ``"state_dict"``, DINO's training checkpoints under ``"teacher"``,
    DeiT / MAE style ones under ``"model"``; non-tensor entries (epoch, optimizer, ...) are dropped.
    """
    current: Mapping[str, Any] = checkpoint
    while True:
        inner = next((current[key] for key in _WRAPPER_KEYS if isinstance(current.get(key), Mapping)), None)
        if inner is None:
            return {key: value for key, value in current.items() if isinstance(value, Tensor)}
        current = inner


def strip_prefix(state_dict: Mapping[str, Tensor], anchor: str, ignore: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The entries under the prefix found in front of ``anchor``, with the prefix removed.

    ``anchor`` is a key every checkpoint of the family has (``"cls_token"`` for a ViT); the text in front
    of it (``"model."``, ``"module.backbone."``, ...) is the prefix. Keys starting with one of ``ignore``
    after stripping (a classifier ``"fc."``, a loss's ``"criterion."``) are dropped.

    Raises:
        CheckpointError: ``anchor`` is missing, or found under several prefixes (several models in one file).
    """
    found = {key[: len(key) - len(anchor)] for key in state_dict if key == anchor or key.endswith(f".{anchor}")}
    prefixes = sorted(found)
    if not prefixes:
        listed = ", ".join(list(state_dict)[:_MAX_LISTED]) or "(no tensors)"
        raise CheckpointError(f"The checkpoint has no '{anchor}' entry, so it is of another family. Its keys: {listed}")
    if len(prefixes) > 1:
        raise CheckpointError(
            f"The checkpoint holds several models (prefixes {', '.join(repr(p) for p in prefixes)} in front of "
            f"'{anchor}'); pass the state dict of one of them as `weights=`"
        )
    prefix = prefixes[0]
    stripped = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    return {key: value for key, value in stripped.items() if not key.startswith(ignore)}


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_state_dict_strictly(module: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that lists what does not fit."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"missing keys ({len(missing)}): {_listed(missing)}" if missing else "",
            f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}" if unexpected else "",
            f"shape mismatches (checkpoint vs model): {_listed(mismatched)}" if mismatched else "",
        ]
        raise CheckpointError(
            f"The weights from {source} do not fit {module!r:.200}: " + "; ".join(p for p in problems if p)
        )
    module.load_state_dict(state_dict, strict=True)


def build_extractor(name: str, args: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the extractor registered as ``name`` (``"vits16"``, ``"resnet50"``, a plugin's ...) with ``args``."""
    built: nn.Module = resolve("extractor", {"name": name, "args": dict(args or {})})
    return built


class ExtractorBase(nn.Module):
    """An image embedding model: ``model(images (B, C, H, W)) -> (B, feat_dim)``.

    Subclasses implement :meth:`forward_features` and, when their checkpoints come in wrappers,
    :meth:`convert_state_dict`. Every extractor satisfies :class:`omlcore.protocols.Extractor`.

    Args:
        arch: the registered name of the architecture (``"vits16"``), checked against zoo weights.
        feat_dim: size of the embeddings.
        normalise_features: L2-normalise every embedding (unit length) in :meth:`forward`.
    """

    feat_dim: int
    arch: str
    normalise_features: bool

    def __init__(self, arch: str, feat_dim: int, normalise_features: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.feat_dim = int(feat_dim)
        self.normalise_features = bool(normalise_features)
        self._trunk_frozen = False

    def forward_features(self, images: Tensor) -> Tensor:
        """Embeddings before the optional normalisation."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects images of shape (B, C, H, W), got {tuple(images.shape)}")
        features = self.forward_features(images)
        return F.normalize(features, p=2.0, dim=1) if self.normalise_features else features

    def extract(self, images: Tensor, batch_size: int | None = None) -> Tensor:
        """Embeddings for inference: eval mode, no autograd, ``images`` moved to the model's device.

        ``batch_size`` splits ``images`` into chunks; the model's train / eval mode is restored afterwards.
        """
        parameter = next(self.parameters(), None)
        if parameter is not None:
            images = images.to(parameter.device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                if batch_size is None:
                    return self(images)
                return torch.cat([self(chunk) for chunk in images.split(batch_size)])
        finally:
            self.train(was_training)

    def trunk_modules(self) -> list[nn.Module]:
        """The modules that :meth:`freeze` freezes: the whole model here, the wrapped extractor in a head."""
        return list(self.children())

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trunk_modules():
            yield from module.parameters()

    @property
    def trunk_frozen(self) -> bool:
        return self._trunk_frozen

    def freeze(self) -> None:
        """Stop training the trunk: no gradients for its parameters, and it stays in eval mode (BatchNorm stats)."""
        self._set_trunk_frozen(True)

    def unfreeze(self) -> None:
        """Train the trunk again (every trunk parameter gets ``requires_grad=True``)."""
        self._set_trunk_frozen(False)

    def _set_trunk_frozen(self, frozen: bool) -> None:
        for parameter in self.trunk_parameters():
            parameter.requires_grad_(not frozen)
        self._trunk_frozen = frozen
        self.train(self.training)

    def train(self: T, mode: bool = True) -> T:
        super().train(mode)
        if mode and self._trunk_frozen:
            for module in self.trunk_modules():
                module.train(False)
        return self

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Bring a public checkpoint's entries to this model's key names (here: unchanged)."""
        return dict(state_dict)

    def load_weights(self: T, weights: Weights, *, progress: bool = True, allow_pickle: bool = False) -> T:
        """Load a zoo checkpoint by name, a checkpoint file, or a state dict; strict: every key must fit.

        A zoo name is downloaded (and verified) on first use. Checkpoints in the public layouts of the family
        and OML's checkpoints load as they are. Files are read by :func:`omlcore.models.hub.load_checkpoint`,
        which runs no code from them; ``allow_pickle=True`` is the opt-in for a file that needs full unpickling
        (or TorchScript code), only for files whose origin you trust.

        Raises:
            UnsafeCheckpointError: the file needs full unpickling or its code, and nobody opted in.
            CheckpointError: unknown name or file, unreadable file, or keys / shapes that do not fit.
        """
        if weights is None:
            return self
        if isinstance(weights, Mapping):
            checkpoint: Mapping[str, Any] = weights
            source = "the given state dict"
        else:
            text = os.fspath(weights)
            entry = find_pretrained(text)
            if entry is not None:
                if entry.arch != self.arch:
                    raise CheckpointError(
                        f"Zoo weights '{entry.name}' are for a '{entry.arch}' extractor, this one is '{self.arch}'. "
                        f"Use omlcore.models.from_pretrained('{entry.name}'), or build a '{entry.arch}' extractor."
                    )
                path = entry.download(progress=progress)
                checkpoint = load_checkpoint(path, allow_pickle=allow_pickle)
                source = f"zoo checkpoint '{entry.name}' ({path})"
            elif Path(text).is_file():
                checkpoint = load_checkpoint(text, allow_pickle=allow_pickle)
                source = text
            else:
                close = difflib.get_close_matches(text, list_pretrained(), n=3, cutoff=0.6)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise CheckpointError(
                    f"weights={text!r} is neither a checkpoint file nor a zoo name.{hint} "
                    "omlcore.models.list_pretrained() lists the zoo."
                )
        state_dict = self.convert_state_dict(unwrap_state_dict(checkpoint))
        load_state_dict_strictly(self, state_dict, source)
        return self

    @classmethod
    def from_pretrained(
        cls: type[T], name: str, *, progress: bool = True, allow_pickle: bool = False, **overrides: Any
    ) -> T:
        """The zoo model ``name`` with its weights (downloaded once, then read from the cache).

        ``overrides`` replace the zoo entry's constructor arguments that do not change the weights'
        shapes, e.g. ``normalise_features=True``. Called on a subclass, the model must be of that class.
        ``allow_pickle`` is the opt-in of :meth:`load_weights`.
        """
        entry = get_pretrained(name)
        if "weights" in overrides:
            raise TypeError("from_pretrained takes the weights from the zoo; build the model directly to pass weights=")
        model = build_extractor(entry.arch, {**entry.init_args, **overrides})
        if not isinstance(model, cls):
            raise TypeError(f"Zoo model '{entry.name}' is a {type(model).__name__}, not a {cls.__name__}")
        return model.load_weights(entry.name, progress=progress, allow_pickle=allow_pickle)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, feat_dim={self.feat_dim}, normalise_features={self.normalise_features}"
