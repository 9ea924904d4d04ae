"""ArcFace: additive angular margin softmax, with optional category-restricted label smoothing (OML's)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omlcore.functional.label_smoothing import label_smoothing
from omlcore.labels import as_class_ids
from omlcore.losses.base import Reduction, check_reduction, logs_of, reduce, zero_loss

__all__ = ["ArcFaceLoss", "ArcFaceLossWithMLP"]


class ArcFaceLoss(nn.Module):
    """``loss(embeddings, labels)``: cross-entropy over ``s * cos(theta_j + m [j = y])`` with learnt class centres.

    "ArcFace: Additive Angular Margin Loss for Deep Face Recognition" (Deng et al., CVPR 2019,
    https://arxiv.org/abs/1801.07698); OML's ``ArcFaceLoss``. ``cos(theta_j) = <x / |x|, W_j / |W_j|>``; the target
    logit becomes ``cos(theta_y + m)`` while ``theta_y + m < pi`` and ``cos(theta_y) - m sin(m)`` beyond (keeps it
    monotonic), all logits are scaled by ``s``. The weight ``W`` (``num_classes x in_features``, Xavier-uniform
    initialised) is a parameter of the loss: give it to the optimizer. PML's ``ArcFaceLoss`` is the same loss
    with the margin in degrees and ``W`` transposed.

    Label smoothing: targets ``(1 - eps) onehot(y) + eps / C``, or with ``label2category`` ``eps`` spread only over
    the classes of the true label's category (:func:`omlcore.functional.label_smoothing`).

    Args:
        in_features: embedding size.
        num_classes: classes; labels must be ``0 .. num_classes - 1`` (class ids by the rule of
            :mod:`omlcore.labels`: integers, or floats that are whole numbers).
        m: angular margin in radians.
        s: scale.
        smoothing_epsilon: ``eps`` in ``[0, 1)``; 0 disables smoothing.
        label2category: optional mapping ``label -> category`` covering every class.
        reduction: ``mean``, ``sum`` or ``none``.

    ``last_logs``: ``accuracy`` (argmax of the margin-free cosines).
    """

    label2category: Tensor | None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        m: float = 0.5,
        s: float = 64.0,
        smoothing_epsilon: float = 0.0,
        label2category: Mapping[int, Hashable] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not 0 <= smoothing_epsilon < 1:
            raise ValueError(f"{name}: smoothing_epsilon must be in [0, 1), got {smoothing_epsilon}")
        if num_classes < 1 or in_features < 1:
            raise ValueError(f"{name}: in_features and num_classes must be >= 1, got {in_features}, {num_classes}")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.m, self.s = float(m), float(s)
        self.smoothing_epsilon = float(smoothing_epsilon)
        self.reduction = check_reduction(name, reduction)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("label2category", _category_index(name, label2category, num_classes), persistent=False)
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.threshold = -self.cos_m  # cos(pi - m): beyond it theta + m would pass pi
        self.fallback = self.sin_m * m
        self.last_logs: dict[str, float] = {}

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        name = type(self).__name__
        labels = as_class_ids(f"{name}: labels", labels, embeddings.device)
        if embeddings.dim() != 2 or embeddings.shape[1] != self.in_features or labels.shape != embeddings.shape[:1]:
            raise ValueError(
                f"{name}: expected embeddings (B, {self.in_features}) and labels (B,), got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        if len(labels) == 0:
            return reduce(embeddings.new_zeros(0), self.reduction, embeddings, self.weight)
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][:5].tolist()
            raise ValueError(
                f"{name}: labels {bad} are outside 0..{self.num_classes - 1} (num_classes={self.num_classes}); "
                "remap the labels to 0..num_classes-1 or raise num_classes"
            )
        cos = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        sin = (1.0 - cos.pow(2)).clamp_min(1e-12).sqrt()  # clamped: finite gradients at cos = +-1
        with_margin = torch.where(cos > self.threshold, cos * self.cos_m - sin * self.sin_m, cos - self.fallback)
        target = F.one_hot(labels, self.num_classes).bool()
        logits = torch.where(target, with_margin, cos) * self.s
        if self.smoothing_epsilon:
            soft = label_smoothing(labels, self.num_classes, self.smoothing_epsilon, self.label2category, logits.dtype)
            losses = F.cross_entropy(logits, soft, reduction="none")
        else:
            losses = F.cross_entropy(logits, labels, reduction="none")
        self.last_logs = logs_of(accuracy=(cos.detach().argmax(1) == labels).float().mean())
        return reduce(losses, self.reduction) + zero_loss(embeddings, self.weight)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, m={self.m}, s={self.s}, "
            f"smoothing_epsilon={self.smoothing_epsilon}, reduction={self.reduction!r}"
        )


def _category_index(owner: str, label2category: Mapping[int, Hashable] | None, num_classes: int) -> Tensor | None:
    if label2category is None:
        return None
    if not isinstance(label2category, Mapping):
        raise TypeError(f"{owner}: label2category must be a mapping label -> category")
    missing = [label for label in range(num_classes) if label not in label2category]
    if missing:
        raise ValueError(
            f"{owner}: label2category has no category for {len(missing)} of the {num_classes} classes, e.g. "
            f"{missing[:5]}; it must map every label 0..num_classes-1"
        )
    categories = [label2category[label] for label in range(num_classes)]
    order = {c: i for i, c in enumerate(sorted(set(categories), key=lambda c: (type(c).__name__, c)))}
    return torch.tensor([order[c] for c in categories], dtype=torch.long)


class ArcFaceLossWithMLP(nn.Module):
    """:class:`ArcFaceLoss` on top of an MLP projector (``in_features -> mlp_features[0] -> ... -> [-1]``).

    OML's ``ArcFaceLossWithMLP``: a task-specific head that exists only in the loss (it is not part of the model
    used at inference). The MLP is torchvision's ``MLP`` layout (Linear, ReLU, Dropout(0) per hidden layer; a
    final Linear and Dropout(0)), so its ``state_dict`` keys match OML checkpoints.

    Args:
        in_features: embedding size.
        num_classes: classes.
        mlp_features: the MLP's layer sizes; ArcFace works on ``mlp_features[-1]``.
        m, s, smoothing_epsilon, label2category, reduction: as :class:`ArcFaceLoss`.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        mlp_features: Sequence[int],
        m: float = 0.5,
        s: float = 64.0,
        smoothing_epsilon: float = 0.0,
        label2category: Mapping[int, Hashable] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if not mlp_features or any(int(size) < 1 for size in mlp_features):
            raise ValueError(
                f"ArcFaceLossWithMLP: mlp_features must be a non-empty list of sizes >= 1, got {mlp_features}"
            )
        layers: list[nn.Module] = []
        sizes = [int(in_features), *map(int, mlp_features)]
        for i, (size_in, size_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(size_in, size_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
            layers.append(nn.Dropout(0.0))
        self.mlp = nn.Sequential(*layers)
        self.arcface = ArcFaceLoss(sizes[-1], num_classes, m, s, smoothing_epsilon, label2category, reduction)

    @property
    def last_logs(self) -> dict[str, float]:
        return self.arcface.last_logs

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss: Tensor = self.arcface(self.mlp(embeddings), labels)
        return loss
