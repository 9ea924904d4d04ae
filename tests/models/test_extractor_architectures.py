"""Every architecture on CPU: output shape and feat_dim, normalisation, extract, freezing, state-dict round trips."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from omlcore.models import (
    CheckpointError,
    ExtractorBase,
    ExtractorWithMLP,
    GeM,
    GlobalAvgPool,
    ResNetExtractor,
    SmallCNN,
    ViTCLIPExtractor,
    ViTExtractor,
)
from omlcore.models.clip import CLIPAttention
from omlcore.models.vit import Attention, interpolate_pos_embed
from omlcore.plugins import get_registry
from omlcore.protocols import Extractor

# (registered name, feat_dim, input side): inputs as small as each architecture allows, so that the whole file
# stays fast; ViT inputs differ from the stored 224 grid, so every ViT forward also interpolates positions.
ARCHITECTURES = [
    ("resnet18", 512, 32),
    ("resnet34", 512, 32),
    ("resnet50", 2048, 32),
    ("resnet101", 2048, 32),
    ("resnet152", 2048, 32),
    ("vits16", 384, 32),
    ("vits8", 384, 16),
    ("vitb16", 768, 32),
    ("vitb8", 768, 16),
    ("vitb32_clip", 512, 64),
    ("vitb16_clip", 512, 32),
    ("vitl14_clip", 768, 28),
    ("small_cnn", 128, 32),
]


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    torch.manual_seed(0)
    yield


@pytest.mark.parametrize(("name", "feat_dim", "side"), ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def test_every_architecture_embeds_a_batch(name: str, feat_dim: int, side: int) -> None:
    model = get_registry().build("extractor", name)
    assert isinstance(model, ExtractorBase) and isinstance(model, Extractor)
    assert model.feat_dim == feat_dim and model.arch == name
    embeddings = model.extract(torch.randn(2, 3, side, side))
    assert embeddings.shape == (2, feat_dim) and embeddings.dtype == torch.float32
    assert torch.isfinite(embeddings).all() and not torch.equal(embeddings[0], embeddings[1])


def test_extractor_with_mlp_and_gem_resnet_shapes() -> None:
    head = ExtractorWithMLP("small_cnn", mlp_features=[64, 32])
    assert head.feat_dim == 32 and head(torch.randn(3, 3, 32, 32)).shape == (3, 32)
    from_config = get_registry().build(
        "extractor", "extractor_with_mlp", extractor={"name": "small_cnn", "args": {"feat_dim": 8}}, mlp_features=[4]
    )
    assert from_config.extractor.feat_dim == 8 and from_config(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    gem = ResNetExtractor("resnet18", gem_p=3.0, gem_learnable=True)
    assert isinstance(gem.pool, GeM) and "pool.p" in gem.state_dict()
    assert gem(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_small_cnn_on_grayscale_glyphs_and_its_size() -> None:
    model = SmallCNN(feat_dim=64, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) < 400_000
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 64)
    with pytest.raises(ValueError, match="positive widths"):
        SmallCNN(widths=())


def test_normalise_features_gives_unit_vectors_and_keeps_directions() -> None:
    images = torch.randn(3, 3, 32, 32)
    plain = SmallCNN(feat_dim=16).eval()
    normed = SmallCNN(feat_dim=16, normalise_features=True).eval()
    normed.load_state_dict(plain.state_dict())
    raw, unit = plain(images), normed(images)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(unit, raw / raw.norm(dim=1, keepdim=True))


def test_extract_is_eval_mode_without_autograd_and_restores_the_mode() -> None:
    model = SmallCNN(feat_dim=8).train()
    images = torch.randn(5, 3, 16, 16)
    chunked = model.extract(images, batch_size=2)
    assert model.training and not chunked.requires_grad
    model.eval()
    torch.testing.assert_close(chunked, model(images))
    running_mean = model.features[0][1].running_mean.clone()
    model.train().extract(images)
    torch.testing.assert_close(model.features[0][1].running_mean, running_mean)  # BatchNorm stats untouched


def test_freeze_stops_gradients_and_batchnorm_updates_of_the_trunk() -> None:
    model = ExtractorWithMLP(SmallCNN(feat_dim=8), mlp_features=[4], freeze_trunk=True).train()
    assert model.trunk_frozen and not model.extractor.training and model.projection.training
    assert all(not p.requires_grad for p in model.extractor.parameters())
    before = model.extractor.features[0][1].running_mean.clone()
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    torch.testing.assert_close(model.extractor.features[0][1].running_mean, before)
    assert all(p.grad is None for p in model.extractor.parameters())
    assert all(p.grad is not None for p in model.projection.parameters())
    model.unfreeze()
    model.train()
    assert model.extractor.training and all(p.requires_grad for p in model.extractor.parameters())
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.extractor.parameters())


def test_freezing_a_plain_extractor_freezes_all_of_it() -> None:
    model = ResNetExtractor("resnet18")
    model.freeze()
    model.train()
    assert not any(p.requires_grad for p in model.parameters()) and not model.bn1.training


def _round_trip(model: ExtractorBase, build: Callable[..., ExtractorBase], path: Path, side: int) -> None:
    torch.save(model.state_dict(), path)
    images = torch.randn(2, 3, side, side)
    clone = build(weights=path)
    assert clone.state_dict().keys() == model.state_dict().keys()
    torch.testing.assert_close(clone.extract(images), model.extract(images), rtol=0, atol=0)


def test_state_dict_round_trips(tmp_path: Path) -> None:
    registry = get_registry()
    for name, side in (("resnet18", 32), ("vits16", 32), ("small_cnn", 16)):
        build = registry.load("extractor", name)
        _round_trip(build(), build, tmp_path / f"{name}.pt", side)

    def mlp(weights: object = None) -> ExtractorBase:
        return ExtractorWithMLP("small_cnn", mlp_features=[32, 8], weights=weights)  # type: ignore[arg-type]

    _round_trip(mlp(), mlp, tmp_path / "mlp.pt", 16)


def test_weights_may_be_a_path_a_string_or_a_state_dict(tmp_path: Path) -> None:
    model = SmallCNN(feat_dim=8)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")  # a Lightning-style wrapper
    for weights in (tmp_path / "ckpt.pt", str(tmp_path / "ckpt.pt"), model.state_dict()):
        clone = SmallCNN(feat_dim=8, weights=weights)
        for key, value in model.state_dict().items():
            assert torch.equal(clone.state_dict()[key], value), key
    assert SmallCNN(feat_dim=8).load_weights(None).feat_dim == 8


def test_clip_state_dict_round_trip_in_memory() -> None:
    model = ViTCLIPExtractor("vitb32_clip")
    clone = ViTCLIPExtractor("vitb32_clip", weights=model.state_dict())
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(clone.extract(images), model.extract(images), rtol=0, atol=0)


def test_gem_against_the_formula_and_its_limits() -> None:
    features = torch.rand(2, 5, 3, 4) + 0.1
    for p in (1.0, 3.0, 7.5):
        expected = torch.stack([torch.stack([(c**p).mean() ** (1 / p) for c in image]) for image in features])
        torch.testing.assert_close(GeM(p)(features), expected)
    torch.testing.assert_close(GeM(1.0)(features), GlobalAvgPool()(features))
    assert torch.all(GeM(200.0)(features) <= features.amax(dim=(2, 3)) + 1e-5)
    assert torch.all(GeM(3.0)(-features) > 0)  # clamped, no NaN from negative activations
    with pytest.raises(ValueError, match="positive"):
        GeM(0.0)


def test_vit_attention_against_a_naive_softmax() -> None:
    attention = Attention(dim=12, heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = attention.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attention(x), expected)


def test_clip_attention_matches_torch_multihead_attention() -> None:
    ours = CLIPAttention(width=16, heads=4)
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    reference.load_state_dict(ours.state_dict())  # OpenAI's CLIP uses nn.MultiheadAttention: same keys
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(ours(x), reference(x, x, x, need_weights=False)[0])


def test_position_embedding_interpolation() -> None:
    table = torch.randn(1, 1 + 14 * 14, 8)
    assert interpolate_pos_embed(table, (14, 14)) is table
    resized = interpolate_pos_embed(table, (3, 5))
    assert resized.shape == (1, 1 + 15, 8)
    torch.testing.assert_close(resized[:, 0], table[:, 0])
    constant = torch.ones(1, 1 + 4, 8)
    torch.testing.assert_close(interpolate_pos_embed(constant, (6, 2)), torch.ones(1, 13, 8))
    grid = table[0, 1:].reshape(14, 14, 8).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, scale_factor=(3.1 / 14, 5.1 / 14), mode="bicubic")[0].permute(1, 2, 0)  # DINO's
    torch.testing.assert_close(resized[0, 1:], expected.reshape(15, 8))
    with pytest.raises(ValueError, match="square"):
        interpolate_pos_embed(torch.randn(1, 1 + 6, 8), (2, 2))


def test_vit_runs_on_non_square_inputs_and_other_sizes() -> None:
    model = ViTExtractor("vits16").eval()
    assert model(torch.randn(1, 3, 48, 80)).shape == (1, 384)
    assert model.tokens(torch.randn(1, 3, 48, 80)).shape == (1, 1 + 3 * 5, 384)
    big = ViTExtractor("vits16", img_size=64)
    assert big.pos_embed.shape == (1, 17, 384)


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match=r"Unknown ResNet arch 'resnet19'.*resnet18"):
        ResNetExtractor("resnet19")
    with pytest.raises(ValueError, match="Unknown ViT arch"):
        ViTExtractor("vitl16")
    with pytest.raises(ValueError, match="Unknown CLIP arch"):
        ViTCLIPExtractor("vith14_clip")
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        ViTExtractor("vits16", img_size=100)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        SmallCNN()(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="mlp_features"):
        ExtractorWithMLP("small_cnn", mlp_features=[])
    with pytest.raises(TypeError, match="feat_dim"):
        ExtractorWithMLP(nn.Linear(2, 2), mlp_features=[4])
    with pytest.raises(CheckpointError, match=r"neither a checkpoint file nor a zoo name.*vits16_dino"):
        ViTExtractor("vits16", weights="vits16_dyno")
