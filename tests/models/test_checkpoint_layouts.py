"""Checkpoints in the public key layouts (torchvision, DINO, OpenAI CLIP, MoCo, OML) load with nothing missing or extra.

The layouts in ``fixtures/`` were written by ``fixtures/generate_key_layouts.py`` from torchvision's, DINO's,
OpenAI's and OML's own implementations (not from omlcore). Big models are built on the ``meta`` device:
keys and shapes are checked exactly, without allocating gigabytes.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from omlcore.models import (
    CheckpointError,
    ExtractorBase,
    ExtractorWithMLP,
    ResNetExtractor,
    UnsafeCheckpointError,
    ViTCLIPExtractor,
    ViTExtractor,
    load_checkpoint,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def layout(name: str) -> dict[str, tuple[int, ...]]:
    """``key -> shape`` of a public layout."""
    shapes = {}
    for line in (FIXTURES / f"{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, shape = line.partition(" ")
            shapes[key] = tuple(int(size) for size in shape.split(",") if size)
    return shapes


def meta_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def on_meta(build: Callable[[], ExtractorBase]) -> ExtractorBase:
    with torch.device("meta"):
        return build()


def own_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


TORCHVISION = [18, 34, 50, 101, 152]
DINO = ["vits16", "vits8", "vitb16", "vitb8"]
CLIP = ["vitb32", "vitb16", "vitl14"]


@pytest.mark.parametrize("depth", TORCHVISION)
def test_torchvision_resnet_layout_is_ours_without_the_classifier(depth: int) -> None:
    public = layout(f"torchvision_resnet{depth}")
    model = on_meta(lambda: ResNetExtractor(f"resnet{depth}"))
    assert own_shapes(model) == {k: v for k, v in public.items() if not k.startswith("fc.")}
    model.load_weights(meta_state_dict(public))  # the classifier fc.* is dropped, everything else fits


@pytest.mark.parametrize("arch", DINO)
def test_dino_vit_layout_is_exactly_ours(arch: str) -> None:
    public = layout(f"dino_{arch}")
    model = on_meta(lambda: ViTExtractor(arch))
    assert own_shapes(model) == public
    model.load_state_dict(meta_state_dict(public), strict=True)  # no renaming at all


@pytest.mark.parametrize("arch", CLIP)
def test_openai_clip_visual_layout_is_exactly_ours_and_full_clip_files_load(arch: str) -> None:
    visual = layout(f"openai_clip_{arch}_visual")
    model = on_meta(lambda: ViTCLIPExtractor(f"{arch}_clip"))
    assert own_shapes(model) == visual
    model.load_state_dict(meta_state_dict(visual), strict=True)
    full = {f"visual.{key}": shape for key, shape in visual.items()}
    full |= {"token_embedding.weight": (49408, 512), "logit_scale": (), "input_resolution": ()}
    full |= {"transformer.resblocks.0.attn.in_proj_weight": (1536, 512), "ln_final.weight": (512,)}
    model.load_weights(meta_state_dict(full))  # the text tower and OpenAI's scalars are left out


def test_oml_vit_checkpoint_in_a_lightning_wrapper_loads() -> None:
    public = layout("oml_vit_extractor_vits16")
    assert all(key.startswith("model.") for key in public)
    model = on_meta(lambda: ViTExtractor("vits16"))
    state_dict = meta_state_dict(public) | {"criterion.weight": torch.empty(10, 384, device="meta")}
    model.load_weights({"state_dict": state_dict, "epoch": 7})


def test_oml_resnet_checkpoint_loads() -> None:
    model = on_meta(lambda: ResNetExtractor("resnet50"))
    model.load_weights(meta_state_dict(layout("oml_resnet_extractor_resnet50")))


def test_oml_extractor_with_mlp_checkpoint_loads() -> None:
    public = layout("oml_extractor_with_mlp_vits16_384")
    model = on_meta(lambda: ExtractorWithMLP("vits16", mlp_features=[384]))
    assert set(own_shapes(model)) == {key.replace("extractor.model.", "extractor.") for key in public}
    model.load_weights({"state_dict": meta_state_dict(public)})


def test_moco_v2_checkpoint_gives_the_query_encoder() -> None:
    public = layout("moco_v2_resnet50")
    model = on_meta(lambda: ResNetExtractor("resnet50", gem_p=5.0))
    model.load_weights({"epoch": 800, "arch": "resnet50", "state_dict": meta_state_dict(public)})


def test_dino_training_checkpoint_uses_the_teacher_backbone() -> None:
    backbone = layout("dino_vits16")
    teacher = {f"backbone.{key}": shape for key, shape in backbone.items()} | {"head.mlp.0.weight": (2048, 384)}
    student = {f"module.{key}": shape for key, shape in teacher.items()}
    model = on_meta(lambda: ViTExtractor("vits16"))
    model.load_weights({"teacher": meta_state_dict(teacher), "student": meta_state_dict(student), "epoch": 100})


def test_files_in_public_layouts_load_with_their_values(tmp_path: Path) -> None:
    torch.manual_seed(0)
    resnet = {
        key: torch.tensor(5) if key.endswith("num_batches_tracked") else torch.randn(shape)
        for key, shape in layout("torchvision_resnet18").items()
    }
    torch.save(resnet, tmp_path / "resnet18-f37072fd.pth")
    model = ResNetExtractor("resnet18", weights=tmp_path / "resnet18-f37072fd.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, resnet[key]), key

    dino = {f"model.{key}": torch.randn(shape) for key, shape in layout("dino_vits16").items()}
    torch.save({"state_dict": dino}, tmp_path / "vits16_oml.ckpt")
    vit = ViTExtractor("vits16", weights=str(tmp_path / "vits16_oml.ckpt"))
    assert torch.equal(vit.pos_embed, dino["model.pos_embed"]) and torch.equal(vit.norm.bias, dino["model.norm.bias"])


class _Node(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


def _module_with_keys(keys: list[str], dtype: torch.dtype) -> nn.Module:
    """A module whose state-dict keys are ``keys`` (every tensor of shape (1,)), for a TorchScript archive."""
    root = _Node()
    for key in keys:
        *path, leaf = key.split(".")
        node: nn.Module = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, _Node())
            node = getattr(node, part)
        node.register_parameter(leaf, nn.Parameter(torch.ones(1, dtype=dtype)))
    return root


def test_openai_torchscript_archive_gives_the_visual_tower(tmp_path: Path) -> None:
    visual_keys = list(layout("openai_clip_vitb32_visual"))
    full_keys = [f"visual.{key}" for key in visual_keys] + ["token_embedding.weight", "logit_scale"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_module_with_keys(full_keys, torch.float16)), str(tmp_path / "ViT-B-32.pt"))
    checkpoint = load_checkpoint(tmp_path / "ViT-B-32.pt")
    assert set(checkpoint) == set(full_keys) and checkpoint["visual.proj"].dtype == torch.float16
    model = on_meta(lambda: ViTCLIPExtractor("vitb32_clip"))
    assert list(model.convert_state_dict(checkpoint)) == visual_keys


def test_weights_that_do_not_fit_are_explained() -> None:
    small = meta_state_dict(layout("dino_vits16"))
    base = on_meta(lambda: ViTExtractor("vitb16"))
    with pytest.raises(CheckpointError, match=r"shape mismatches .*cls_token \(1, 1, 384\) vs \(1, 1, 768\)"):
        base.load_weights(small)
    vit = on_meta(lambda: ViTExtractor("vits16"))
    partial = {key: value for key, value in small.items() if not key.startswith("blocks.11.")}
    with pytest.raises(CheckpointError, match=r"missing keys \(12\): blocks\.11\.norm1\.weight"):
        vit.load_weights(partial)
    with pytest.raises(CheckpointError, match="no 'cls_token' entry, so it is of another family"):
        vit.load_weights(meta_state_dict(layout("torchvision_resnet18")))
    twice = {f"a.{key}": value for key, value in small.items()} | {f"b.{key}": value for key, value in small.items()}
    with pytest.raises(CheckpointError, match="several models"):
        vit.load_weights(twice)


def test_unsafe_pickles_are_not_unpickled_without_the_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMLCORE_ALLOW_UNSAFE_PICKLE", raising=False)
    path = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "config": _Node}, path)  # a class: needs full unpickling
    with pytest.raises(UnsafeCheckpointError, match=r"_Node(.|\n)*allow_pickle=True"):
        load_checkpoint(path)
    assert torch.equal(load_checkpoint(path, allow_pickle=True)["state_dict"]["w"], torch.ones(1))
    monkeypatch.setenv("OMLCORE_ALLOW_UNSAFE_PICKLE", "1")
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(1))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
    torch.save([torch.ones(1)], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_checkpoint(tmp_path / "list.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "list.ckpt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt cannot be read as a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.ckpt")


class _Block(nn.Module):
    """The shape of OpenAI CLIP's ResidualAttentionBlock: nn.MultiheadAttention, LayerNorms, an MLP, a plain mask."""

    def __init__(self, width: int, attn_mask: Tensor | None) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, 2)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 2 * width), c_proj=nn.Linear(2 * width, width)))
        self.ln_2 = nn.LayerNorm(width)
        self.attn_mask = attn_mask  # a tensor attribute, neither a parameter nor a buffer: not in the state dict

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _TinyCLIP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.visual = nn.Sequential(_Block(8, None), _Block(8, None))
        self.transformer = nn.Sequential(_Block(8, torch.full((3, 3), float("-inf")).triu(1)))
        self.proj = nn.Parameter(torch.randn(8, 4))
        self.register_buffer("proj_rows", self.proj.data[2:5])  # a view: the same storage at an offset
        self.register_buffer("transposed", torch.randn(4, 6).t())  # not contiguous
        self.register_buffer("input_resolution", torch.tensor(224))

    def forward(self, x: Tensor) -> Tensor:
        return (self.visual(x) + self.transformer(x)) @ self.proj + self.proj_rows.sum() + self.transposed.sum()


@pytest.mark.parametrize("compile_", [torch.jit.trace, torch.jit.script], ids=["traced", "scripted"])
def test_torchscript_archives_give_what_torch_jit_load_gives_without_running_them(
    tmp_path: Path, compile_: Callable[..., torch.jit.ScriptModule]
) -> None:
    torch.manual_seed(0)
    model = _TinyCLIP().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = compile_(model, torch.randn(3, 1, 8)) if compile_ is torch.jit.trace else compile_(model)
        scripted.visual.half()
        torch.jit.save(scripted, str(tmp_path / "clip.pt"))
        expected = torch.jit.load(str(tmp_path / "clip.pt")).state_dict()
    checkpoint = load_checkpoint(tmp_path / "clip.pt")
    assert list(checkpoint) == list(expected) and "transformer.0.attn_mask" not in checkpoint
    for key, value in expected.items():
        got = checkpoint[key]
        assert got.dtype == value.dtype and got.shape == value.shape and got.stride() == value.stride(), key
        assert torch.equal(got, value), key
    assert checkpoint["visual.0.ln_1.weight"].dtype == torch.float16


class _Armed(nn.Module):
    """A TorchScript module that restores itself with its own code, which torch.jit.load runs."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((2,), 3.0))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[Tensor, bool]:
        return self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[Tensor, bool]) -> None:
        print("ARMED: this TorchScript code ran")
        self.weight = state[0]
        self.training = state[1]


def test_torchscript_code_runs_only_with_the_opt_in(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMLCORE_ALLOW_UNSAFE_PICKLE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_Armed()), str(tmp_path / "armed.pt"))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(tmp_path / "armed.pt")
    assert "ARMED" not in capfd.readouterr().out
    message = str(info.value)
    assert "armed.pt" in message and "_Armed" in message and "__setstate__" in message
    assert "allow_pickle=True" in message and "OMLCORE_ALLOW_UNSAFE_PICKLE=1" in message and "torch.jit.load" in message
    checkpoint = load_checkpoint(tmp_path / "armed.pt", allow_pickle=True)
    assert "ARMED" in capfd.readouterr().out and torch.equal(checkpoint["weight"], torch.full((2,), 3.0))
