"""Pairwise models: one score per (query, gallery) pair, for re-ranking a query's nearest neighbours.

They follow the contract of :class:`omlcore.postprocessing.pairwise.PairwiseReranker`: ``model(query_inputs,
gallery_inputs) -> (B,)`` scores read as distances. Here the score is the probability that the two items are
*different* (the sigmoid of a logit trained by binary cross-entropy with target 1 for pairs of different labels), as
in OML's STIR: Shabanov et al., "STIR: Siamese Transformer for Image Retrieval Postprocessing", 2024,
arXiv:2304.13393 (OML: ``oml.models.meta.siamese``). Two designs:

- :class:`ConcatSiamese` (OML's ``ConcatSiamese``): the two images are joined into one input (one above the other, as
  OML does, side by side, or stacked along the channels) and a single backbone, any extractor, sees them together,
  so it can compare them pixel to pixel; a head maps its features to the logit.
- :class:`FeatureSiamese`: a shared backbone embeds each image; a head on ``[|a - b|, a * b]`` gives the logit. It is
  symmetric, and its backbone may start from the trained extractor.

Both are registered as kind ``extractor`` (``pairwise_concat``, ``pairwise_features``) so that configs build them, as
``reranker.model`` of ``omlcore train-reranker`` or as ``postprocessor.args.model`` of ``pairwise_reranker``; they are
not extractors (they embed nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from omlcore.config import resolve
from omlcore.models.base import Weights, load_state_dict_strictly, unwrap_state_dict
from omlcore.models.heads import mlp
from omlcore.models.hub import load_checkpoint

__all__ = ["ConcatDim", "ConcatSiamese", "FeatureSiamese", "PairwiseModelBase"]

#: How :class:`ConcatSiamese` joins the two images: one above the other (OML), side by side, or along the channels.
ConcatDim = Literal["height", "width", "channels"]
_CONCAT_DIMS: dict[str, int] = {"height": 2, "width": 3, "channels": 1}

T = TypeVar("T", bound="PairwiseModelBase")


def _backbone(extractor: nn.Module | Mapping[str, Any] | str, owner: str) -> tuple[nn.Module, int]:
    """The backbone (built from a spec if need be) and its ``feat_dim``."""
    built = resolve("extractor", extractor, path=f"{owner}.args.extractor")
    feat_dim = getattr(built, "feat_dim", None)
    if not isinstance(built, nn.Module) or isinstance(feat_dim, bool) or not isinstance(feat_dim, int):
        raise TypeError(f"{owner} needs an extractor (an nn.Module with an int feat_dim), got {type(built).__name__}")
    return built, feat_dim


def _head(in_features: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden size, then ``Linear(., 1)`` started at zero (every logit 0)."""
    sizes = [int(size) for size in hidden]
    if any(size <= 0 for size in sizes):
        raise ValueError(f"mlp_hidden must hold positive sizes, got {list(hidden)}")
    head = nn.Sequential(*list(mlp(in_features, [*sizes, 1], dropout))[:-1])  # no dropout on the logit
    last = head[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return head


def _pair_shapes(query_inputs: Tensor, gallery_inputs: Tensor) -> None:
    if query_inputs.shape != gallery_inputs.shape:
        raise ValueError(
            f"a pair's inputs must have one shape, got query {tuple(query_inputs.shape)} and gallery "
            f"{tuple(gallery_inputs.shape)}; resize them to one size (e.g. transforms_val: resize_normalize)"
        )


class PairwiseModelBase(nn.Module):
    """A backbone and a head that score pairs: :meth:`logits` for training, ``forward`` for re-ranking.

    ``forward(query_inputs, gallery_inputs)`` is ``sigmoid(logits(...))``, the probability that the pair's items are
    different: in ``(0, 1)``, lower = more similar, as :class:`~omlcore.postprocessing.pairwise.PairwiseReranker`
    reads it. :meth:`logits` is what binary cross-entropy trains (``BCEWithLogits``, target 1 = different labels).
    The head's last layer starts at zero, so an untrained model scores every pair 0.5, and a re-ranking with it keeps
    the kNN order (the re-ranker's sort is stable).

    Subclasses set ``self.extractor`` (the backbone) and ``self.head``, and implement :meth:`logits`.

    Args:
        freeze_backbone: train the head only: the backbone's parameters get no gradient and it stays in eval mode.
        weights: the whole pairwise model's state dict, or a file holding one (``checkpoints/reranker.pt`` of
            ``omlcore train-reranker``); read without running code from it. None: as built.
    """

    extractor: nn.Module
    head: nn.Sequential

    def __init__(self) -> None:
        super().__init__()
        self.backbone_frozen = False

    def logits(self, query_inputs: Tensor, gallery_inputs: Tensor) -> Tensor:
        """``(B,)`` logits of "the pair's items are different"."""
        raise NotImplementedError(f"{type(self).__name__} must implement logits")

    def forward(self, query_inputs: Tensor, gallery_inputs: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(query_inputs, gallery_inputs))

    def embed(self, inputs: Tensor) -> Tensor:
        """The backbone's features, without autograd when it is frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.backbone_frozen):
            features: Tensor = self.extractor(inputs)
        return features

    def freeze(self) -> None:
        """Train the head only (OML's ``IFreezable``): no gradients for the backbone, which stays in eval mode."""
        self._set_frozen(True)

    def unfreeze(self) -> None:
        """Train the backbone again."""
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        self.backbone_frozen = frozen
        self.extractor.requires_grad_(not frozen)
        self.train(self.training)

    def train(self: T, mode: bool = True) -> T:
        super().train(mode)
        if mode and self.backbone_frozen:
            self.extractor.train(False)
        return self

    def _finish(self, freeze_backbone: bool, weights: Weights) -> None:
        """Freeze and load the weights, once the subclass has built every module."""
        self._set_frozen(freeze_backbone)
        if weights is None:
            return
        if isinstance(weights, Mapping):
            state, source = unwrap_state_dict(weights), "the given state dict"
        else:
            state, source = unwrap_state_dict(load_checkpoint(weights)), str(Path(weights))
        load_state_dict_strictly(self, state, source)


class ConcatSiamese(PairwiseModelBase):
    """OML's ``ConcatSiamese`` (STIR): one backbone sees both images joined; a head maps its features to the logit.

    ``logits(q, g) = head(extractor(concat(q, g)))``. Joined along ``height`` (OML's choice) or ``width``, the input
    is an ordinary image twice as tall (wide), so any extractor works as it is, pretrained weights included (a ViT
    needs position embeddings for that size); along ``channels`` the backbone must take twice the channels (e.g.
    ``small_cnn`` with ``in_channels: 6``). The score depends on the order of the pair; ``use_tta`` averages both
    orders in ``forward`` (OML's ``use_tta``), at twice the cost.

    Args:
        extractor: the backbone: an extractor module, a registered name or a ``{"name", "args"}`` config.
        mlp_hidden: hidden sizes of the head (empty: a linear head).
        concat_dim: ``height``, ``width`` or ``channels``.
        use_tta: average the probabilities of ``(q, g)`` and ``(g, q)`` in ``forward``.
        dropout: dropout after each hidden layer of the head (OML: 0.5).
        freeze_backbone, weights: see :class:`PairwiseModelBase`.
    """

    def __init__(
        self,
        extractor: nn.Module | Mapping[str, Any] | str,
        mlp_hidden: Sequence[int] = (64,),
        concat_dim: ConcatDim = "height",
        use_tta: bool = False,
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        weights: Weights = None,
    ) -> None:
        super().__init__()
        if concat_dim not in _CONCAT_DIMS:
            raise ValueError(f"concat_dim must be one of {', '.join(_CONCAT_DIMS)}, got {concat_dim!r}")
        self.extractor, feat_dim = _backbone(extractor, "pairwise_concat")
        self.head = _head(feat_dim, mlp_hidden, dropout)
        self.concat_dim: ConcatDim = concat_dim
        self.use_tta = use_tta
        self._finish(freeze_backbone, weights)

    def logits(self, query_inputs: Tensor, gallery_inputs: Tensor) -> Tensor:
        _pair_shapes(query_inputs, gallery_inputs)
        joined = torch.cat([query_inputs, gallery_inputs], dim=_CONCAT_DIMS[self.concat_dim])
        return self.head(self.embed(joined)).squeeze(1)

    def forward(self, query_inputs: Tensor, gallery_inputs: Tensor) -> Tensor:
        probabilities = super().forward(query_inputs, gallery_inputs)
        if not self.use_tta:
            return probabilities
        return (probabilities + super().forward(gallery_inputs, query_inputs)) / 2

    def extra_repr(self) -> str:
        return f"concat_dim={self.concat_dim!r}, use_tta={self.use_tta}"


class FeatureSiamese(PairwiseModelBase):
    """A shared backbone embeds each image; a head on ``[|a - b|, a * b]`` gives the logit (symmetric in the pair).

    ``a = extractor(q)``, ``b = extractor(g)`` (one backbone call on both halves of the batch),
    ``logits = head(cat([|a - b|, a * b]))``: the element-wise difference and product, the usual features of a
    siamese comparison head. Cheaper than :class:`ConcatSiamese` to train from a trained extractor: its backbone can
    start from the extractor's weights (``reranker.backbone_from_checkpoint`` of ``omlcore train-reranker``).

    Args:
        extractor: the backbone: an extractor module, a registered name or a ``{"name", "args"}`` config.
        mlp_hidden: hidden sizes of the head (empty: a linear head).
        dropout: dropout after each hidden layer of the head.
        freeze_backbone, weights: see :class:`PairwiseModelBase`.
    """

    def __init__(
        self,
        extractor: nn.Module | Mapping[str, Any] | str,
        mlp_hidden: Sequence[int] = (64,),
        dropout: float = 0.0,
        freeze_backbone: bool = False,
        weights: Weights = None,
    ) -> None:
        super().__init__()
        self.extractor, feat_dim = _backbone(extractor, "pairwise_features")
        self.head = _head(2 * feat_dim, mlp_hidden, dropout)
        self._finish(freeze_backbone, weights)

    def logits(self, query_inputs: Tensor, gallery_inputs: Tensor) -> Tensor:
        _pair_shapes(query_inputs, gallery_inputs)
        a, b = self.embed(torch.cat([query_inputs, gallery_inputs])).chunk(2)
        return self.head(torch.cat([(a - b).abs(), a * b], dim=1)).squeeze(1)
