"""Vision Transformer extractors in DINO's layout (vits16, vits8, vitb16, vitb8): the CLS token is the embedding.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR 2021
(https://arxiv.org/abs/2010.11929); the layout and the checkpoints are those of DINO: Caron et al.,
"Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (https://arxiv.org/abs/2104.14294).
The state-dict keys are DINO's (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.attn.qkv``,
``norm``), so DINO's files load unchanged and OML's (``model.`` prefix) through ``load_weights``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omlcore.models.base import ExtractorBase, Weights, strip_prefix

__all__ = [
    "VIT_ARCHS",
    "Attention",
    "Block",
    "Mlp",
    "PatchEmbed",
    "ViTExtractor",
    "interpolate_pos_embed",
    "vitb8",
    "vitb16",
    "vits8",
    "vits16",
]

VIT_ARCHS: dict[str, tuple[int, int, int, int]] = {
    "vits16": (16, 384, 12, 6),
    "vits8": (8, 384, 12, 6),
    "vitb16": (16, 768, 12, 12),
    "vitb8": (8, 768, 12, 12),
}
"""``arch -> (patch size, width, depth, heads)`` of DINO's ViT-S and ViT-B."""


def interpolate_pos_embed(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Resample position embeddings ``(1, 1 + n * n, D)`` (class token first) to a ``grid = (rows, cols)`` of patches.

    The class token's embedding is kept; the ``n x n`` patch embeddings are resized bicubically, so that a
    model trained at one input size runs at another (and on non-square images). As in DINO, the scale factor
    is ``(grid + 0.1) / n``, which reproduces DINO's (and OML's) embeddings at every input size.
    """
    patches = pos_embed.shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"position embeddings of {patches} patches do not form a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    dim = pos_embed.shape[-1]
    square = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = ((grid[0] + 0.1) / side, (grid[1] + 0.1) / side)
    resized = F.interpolate(square.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    resized = resized.to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches -> tokens ``(B, rows * cols, D)`` by a strided convolution."""

    def __init__(self, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with a hidden width of ``4 * dim``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTExtractor(ExtractorBase):
    """A DINO-style ViT; the embedding is the final-normed CLS token (384-d for ViT-S, 768-d for ViT-B).

    Any input size divisible by the patch size works: the position embeddings (learned for ``img_size``)
    are interpolated to the input's grid of patches.

    Args:
        arch: ``"vits16"``, ``"vits8"``, ``"vitb16"`` or ``"vitb8"``.
        weights: a zoo name (``"vits16_dino"``, ``"vits16_inshop"``, ...), a checkpoint file or a state dict
            (DINO, OML and omlcore layouts), or None for random weights.
        normalise_features: L2-normalise the embeddings.
        img_size: the input size the position embeddings are stored for (224 in every public checkpoint).
        in_channels: channels of the input images.
    """

    def __init__(
        self,
        arch: str = "vits16",
        weights: Weights = None,
        normalise_features: bool = False,
        img_size: int = 224,
        in_channels: int = 3,
    ) -> None:
        if arch not in VIT_ARCHS:
            raise ValueError(f"Unknown ViT arch {arch!r}; choose one of {', '.join(VIT_ARCHS)}")
        patch_size, dim, depth, heads = VIT_ARCHS[arch]
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} must be a multiple of the patch size {patch_size}")
        super().__init__(arch, dim, normalise_features)
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (img_size // patch_size) ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()
        self.load_weights(weights)

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def tokens(self, images: Tensor) -> Tensor:
        """All output tokens after the final norm, ``(B, 1 + patches, D)``; index 0 is the CLS token."""
        batch, _, height, width = images.shape
        grid = (height // self.patch_size, width // self.patch_size)
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = x + interpolate_pos_embed(self.pos_embed, grid)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, images: Tensor) -> Tensor:
        return self.tokens(images)[:, 0]

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """DINO / OML layouts -> this model: strip a prefix (``model.``, ``backbone.``), drop DINO's ``head``."""
        return strip_prefix(state_dict, "cls_token", ignore=("head.", "criterion."))


def vits16(
    weights: Weights = None, normalise_features: bool = False, img_size: int = 224, in_channels: int = 3
) -> ViTExtractor:
    """ViT-S/16 (384-d); the arguments are those of :class:`ViTExtractor`."""
    return ViTExtractor("vits16", weights, normalise_features, img_size, in_channels)


def vits8(
    weights: Weights = None, normalise_features: bool = False, img_size: int = 224, in_channels: int = 3
) -> ViTExtractor:
    """ViT-S/8 (384-d); the arguments are those of :class:`ViTExtractor`."""
    return ViTExtractor("vits8", weights, normalise_features, img_size, in_channels)


def vitb16(
    weights: Weights = None, normalise_features: bool = False, img_size: int = 224, in_channels: int = 3
) -> ViTExtractor:
    """ViT-B/16 (768-d); the arguments are those of :class:`ViTExtractor`."""
    return ViTExtractor("vitb16", weights, normalise_features, img_size, in_channels)


def vitb8(
    weights: Weights = None, normalise_features: bool = False, img_size: int = 224, in_channels: int = 3
) -> ViTExtractor:
    """ViT-B/8 (768-d); the arguments are those of :class:`ViTExtractor`."""
    return ViTExtractor("vitb8", weights, normalise_features, img_size, in_channels)
