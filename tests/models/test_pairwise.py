"""Pairwise models: the re-ranker's contract (``(B,)`` probabilities of "different"), gradients, freezing, weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from omlcore.config import resolve
from omlcore.models import CheckpointError, SmallCNN
from omlcore.models.pairwise import ConcatSiamese, FeatureSiamese, PairwiseModelBase

BACKBONE = {"name": "small_cnn", "args": {"feat_dim": 8, "widths": [4, 8]}}


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def pair(batch: int = 5, channels: int = 3, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, channels, size, size), torch.randn(batch, channels, size, size)


def trained_a_little(model: PairwiseModelBase, steps: int = 3) -> PairwiseModelBase:
    """A few BCE steps on random pairs, so that the head is no longer zero."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    queries, gallery = pair(8)
    target = torch.tensor([0.0, 1.0] * 4)
    for _ in range(steps):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model.logits(queries, gallery), target).backward()
        optimizer.step()
    return model.eval()


MODELS: dict[str, Any] = {
    "concat_height": lambda: ConcatSiamese(BACKBONE, mlp_hidden=[16]),
    "concat_width": lambda: ConcatSiamese(BACKBONE, mlp_hidden=[], concat_dim="width"),
    "concat_channels": lambda: ConcatSiamese(
        {"name": "small_cnn", "args": {"feat_dim": 8, "widths": [4, 8], "in_channels": 6}}, concat_dim="channels"
    ),
    "features": lambda: FeatureSiamese(BACKBONE, mlp_hidden=[16, 8]),
}


@pytest.mark.parametrize("name", MODELS)
def test_one_probability_of_different_per_pair(name: str) -> None:
    model = MODELS[name]().eval()
    queries, gallery = pair()
    assert torch.equal(model(queries, gallery), torch.full((5,), 0.5))  # the head starts at zero
    trained_a_little(model)
    scores = model(queries, gallery)
    assert scores.shape == (5,) and scores.dtype == torch.float32
    assert bool(((scores > 0) & (scores < 1)).all()) and len(scores.unique()) > 1
    torch.testing.assert_close(scores, torch.sigmoid(model.logits(queries, gallery)))


@pytest.mark.parametrize("name", MODELS)
def test_both_backbone_and_head_learn(name: str) -> None:
    model = trained_a_little(MODELS[name]().train(), steps=1)  # the first step moves the zero head only
    model.train()
    queries, gallery = pair()
    F.binary_cross_entropy_with_logits(model.logits(queries, gallery), torch.ones(5)).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), parameter_name


def test_a_frozen_backbone_gets_no_gradient_and_keeps_its_statistics() -> None:
    model = FeatureSiamese(BACKBONE, freeze_backbone=True).train()
    assert not model.extractor.training and model.head.training
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all(name.startswith("head.") for name in trained)
    before = {k: v.clone() for k, v in model.extractor.state_dict().items()}
    trained_a_little(model)
    assert all(torch.equal(before[k], v) for k, v in model.extractor.state_dict().items())
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())
    assert model.train().extractor.training


def test_the_concat_model_depends_on_the_order_unless_tta_averages_both() -> None:
    model = trained_a_little(ConcatSiamese(BACKBONE, mlp_hidden=[16]))
    queries, gallery = pair()
    assert not torch.allclose(model(queries, gallery), model(gallery, queries))
    model.use_tta = True
    torch.testing.assert_close(model(queries, gallery), model(gallery, queries))
    model.use_tta = False
    expected = (model(queries, gallery) + model(gallery, queries)) / 2
    model.use_tta = True
    torch.testing.assert_close(model(queries, gallery), expected)


def test_the_feature_model_is_symmetric_and_compares_embeddings() -> None:
    backbone = SmallCNN(feat_dim=8, widths=[4, 8]).eval()
    model = trained_a_little(FeatureSiamese(backbone, mlp_hidden=[16]))
    queries, gallery = pair()
    torch.testing.assert_close(model(queries, gallery), model(gallery, queries))
    a, b = backbone(queries), backbone(gallery)
    expected = model.head(torch.cat([(a - b).abs(), a * b], dim=1)).squeeze(1)
    torch.testing.assert_close(model.logits(queries, gallery), expected)


@pytest.mark.parametrize("cls", [ConcatSiamese, FeatureSiamese])
def test_weights_load_from_a_state_dict_or_a_file(cls: type[PairwiseModelBase], tmp_path: Path) -> None:
    model = trained_a_little(cls(BACKBONE, mlp_hidden=[16]))
    path = tmp_path / "reranker.pt"
    torch.save(model.state_dict(), path)
    queries, gallery = pair()
    for weights in (model.state_dict(), path, str(path)):
        loaded = cls(BACKBONE, mlp_hidden=[16], weights=weights).eval()
        torch.testing.assert_close(loaded(queries, gallery), model(queries, gallery))


def test_weights_that_do_not_fit_are_named() -> None:
    other = FeatureSiamese(BACKBONE, mlp_hidden=[32]).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatches .*head\.0\.weight"):
        FeatureSiamese(BACKBONE, mlp_hidden=[16], weights=other)


def test_bad_arguments_and_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="concat_dim must be one of height, width, channels, got 'depth'"):
        ConcatSiamese(BACKBONE, concat_dim="depth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mlp_hidden must hold positive sizes, got \[0\]"):
        FeatureSiamese(BACKBONE, mlp_hidden=[0])
    with pytest.raises(TypeError, match=r"needs an extractor .* got Linear"):
        FeatureSiamese(torch.nn.Linear(2, 2))
    queries, _ = pair()
    with pytest.raises(ValueError, match=r"one shape, got query \(5, 3, 16, 16\) and gallery \(5, 3, 8, 8\)"):
        FeatureSiamese(BACKBONE).logits(queries, torch.randn(5, 3, 8, 8))


@pytest.mark.parametrize(("name", "cls"), [("pairwise_concat", ConcatSiamese), ("pairwise_features", FeatureSiamese)])
def test_configs_build_them_by_name(name: str, cls: type) -> None:
    model = resolve("extractor", {"name": name, "args": {"extractor": BACKBONE, "mlp_hidden": [4]}})
    assert isinstance(model, cls) and isinstance(model.extractor, SmallCNN)
