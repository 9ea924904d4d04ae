"""The visual tower of CLIP (ViT-B/32, ViT-B/16, ViT-L/14) as an extractor, in OpenAI's state-dict layout.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021
(https://arxiv.org/abs/2103.00020). The keys are those of ``model.visual`` in OpenAI's release
(``class_embedding``, ``positional_embedding``, ``conv1``, ``ln_pre``, ``transformer.resblocks.N``,
``ln_post``, ``proj``): OpenAI's TorchScript files, full CLIP state dicts (``visual.`` prefix, the text
tower is dropped) and OML's checkpoints load through ``load_weights``. The embedding is the projected,
normed class token (512-d for ViT-B, 768-d for ViT-L).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omlcore.models.base import ExtractorBase, Weights, strip_prefix
from omlcore.models.vit import interpolate_pos_embed

__all__ = [
    "CLIP_ARCHS",
    "CLIPAttention",
    "CLIPMlp",
    "QuickGELU",
    "ResidualAttentionBlock",
    "Transformer",
    "ViTCLIPExtractor",
    "vitb16_clip",
    "vitb32_clip",
    "vitl14_clip",
]

CLIP_ARCHS: dict[str, tuple[int, int, int, int, int]] = {
    "vitb32_clip": (32, 768, 12, 12, 512),
    "vitb16_clip": (16, 768, 12, 12, 512),
    "vitl14_clip": (14, 1024, 24, 16, 768),
}
"""``arch -> (patch size, width, layers, heads, output dim)`` of OpenAI's CLIP visual towers."""


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 * x)``, the GELU approximation CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class CLIPAttention(nn.Module):
    """Self-attention with the parameter names of ``nn.MultiheadAttention`` (``in_proj_weight``, ``out_proj``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(attended.transpose(1, 2).reshape(batch, tokens, width))


class CLIPMlp(nn.Module):
    """``c_proj(quick_gelu(c_fc(x)))`` with a hidden width of ``4 * width``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CLIPAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = CLIPMlp(width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` (``resblocks``), batch first."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*(ResidualAttentionBlock(width, heads) for _ in range(layers)))

    def forward(self, x: Tensor) -> Tensor:
        return self.resblocks(x)


class ViTCLIPExtractor(ExtractorBase):
    """CLIP's image encoder. Inputs of another size than ``img_size`` get interpolated position embeddings.

    Args:
        arch: ``"vitb32_clip"``, ``"vitb16_clip"`` or ``"vitl14_clip"``.
        weights: a zoo name (``"openai_vitb32_224"``, alias ``"vitb32_clip"``, ...), a checkpoint file
            (OpenAI's TorchScript file, a CLIP or OML state dict) or a state dict, or None for random weights.
        normalise_features: L2-normalise the embeddings (CLIP compares images by cosine similarity).
        img_size: the input size the position embeddings are stored for (224 for OpenAI's files).
    """

    def __init__(
        self,
        arch: str = "vitb32_clip",
        weights: Weights = None,
        normalise_features: bool = False,
        img_size: int = 224,
    ) -> None:
        if arch not in CLIP_ARCHS:
            raise ValueError(f"Unknown CLIP arch {arch!r}; choose one of {', '.join(CLIP_ARCHS)}")
        patch_size, width, layers, heads, output_dim = CLIP_ARCHS[arch]
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of the patch size {patch_size}")
        super().__init__(arch, output_dim, normalise_features)
        self.patch_size = patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + (img_size // patch_size) ** 2, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        self.load_weights(weights)

    def forward_features(self, images: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        grid = (height // self.patch_size, width // self.patch_size)
        x = self.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.to(x.dtype).expand(batch, 1, -1), x], dim=1)
        x = x + interpolate_pos_embed(self.positional_embedding.unsqueeze(0), grid).to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """CLIP / OML layouts -> this model: keep the visual tower (``visual.`` prefix), drop the text tower."""
        return strip_prefix(state_dict, "class_embedding", ignore=("criterion.",))


def vitb32_clip(weights: Weights = None, normalise_features: bool = False, img_size: int = 224) -> ViTCLIPExtractor:
    """CLIP ViT-B/32 visual tower (512-d); the arguments are those of :class:`ViTCLIPExtractor`."""
    return ViTCLIPExtractor("vitb32_clip", weights, normalise_features, img_size)


def vitb16_clip(weights: Weights = None, normalise_features: bool = False, img_size: int = 224) -> ViTCLIPExtractor:
    """CLIP ViT-B/16 visual tower (512-d); the arguments are those of :class:`ViTCLIPExtractor`."""
    return ViTCLIPExtractor("vitb16_clip", weights, normalise_features, img_size)


def vitl14_clip(weights: Weights = None, normalise_features: bool = False, img_size: int = 224) -> ViTCLIPExtractor:
    """CLIP ViT-L/14 visual tower (768-d); the arguments are those of :class:`ViTCLIPExtractor`."""
    return ViTCLIPExtractor("vitl14_clip", weights, normalise_features, img_size)
