"""omlcore's extractors against OML 4.0's (torchvision ResNet, DINO ViT, OpenAI CLIP, MLP head) with the same weights.

OML's models are built with random weights, their ``state_dict()`` is loaded into omlcore's model through
``weights=`` (OML's key layout, ``model.`` / ``visual`` prefixes), and both embed the same images.
"""

from __future__ import annotations

import pytest
import torch

from omlcore.models import ExtractorWithMLP, ResNetExtractor, ViTCLIPExtractor, ViTExtractor

oml_models = pytest.importorskip("oml.models")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _assert_same(ours: torch.nn.Module, theirs: torch.nn.Module, images: torch.Tensor) -> None:
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("arch", "gem_p"), [("resnet18", None), ("resnet50", 3.0)])
def test_resnet_matches_oml(arch: str, gem_p: float | None) -> None:
    theirs = oml_models.ResnetExtractor(None, arch, gem_p=gem_p, remove_fc=True, normalise_features=True)
    ours = ResNetExtractor(arch, weights=theirs.state_dict(), gem_p=gem_p, normalise_features=True)
    assert ours.feat_dim == theirs.feat_dim
    _assert_same(ours, theirs, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize(("arch", "height", "width"), [("vits16", 224, 224), ("vits8", 224, 224), ("vits16", 160, 96)])
def test_dino_vit_matches_oml(arch: str, height: int, width: int) -> None:
    theirs = oml_models.ViTExtractor(None, arch, normalise_features=False)
    ours = ViTExtractor(arch, weights=theirs.state_dict())
    assert ours.feat_dim == theirs.feat_dim
    _assert_same(ours, theirs, torch.randn(2, 3, height, width))  # other sizes: position-embedding interpolation


def test_clip_visual_tower_matches_oml() -> None:
    theirs = oml_models.ViTCLIPExtractor(None, "vitb32_224", normalise_features=False)
    ours = ViTCLIPExtractor("vitb32_clip", weights=theirs.state_dict())
    assert ours.feat_dim == theirs.feat_dim
    _assert_same(ours, theirs, torch.randn(2, 3, 224, 224))


def test_mlp_head_matches_oml() -> None:
    trunk = oml_models.ViTExtractor(None, "vits16", normalise_features=False)
    theirs = oml_models.ExtractorWithMLP(trunk, mlp_features=[256, 64], train_backbone=True)
    ours = ExtractorWithMLP("vits16", mlp_features=[256, 64], weights=theirs.state_dict())
    _assert_same(ours, theirs, torch.randn(2, 3, 224, 224))
