"""Plain Vision Transformer backbone (the mmseg/Segmenter ViT, re-written in plain torch).

Data flow: image -> patch conv -> [cls; patches] + pos-embed -> pre-norm blocks -> final norm -> maps.
Our parameter names follow timm (``blocks.{i}.attn.qkv`` ...); ``clustvit.convert.weights`` converts official
mmseg checkpoints to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.models.attention import merge_heads, packed_attention, split_heads


@dataclass
class BackboneOutput:
    """What every backbone returns (see docs/ARCHITECTURE.md)."""

    features: list[Tensor]  # one (B, C, h, w) map per requested block, in order
    clust_logits: Tensor | None = None  # (B, N, K+1) raw Cluster-module logits
    cluster_ids: Tensor | None = None  # (B, N) ids actually used (arg-max, or the oracle ids given)
    merged: Tensor | None = None  # (B,) bool: whether each image was reduced
    tokens_per_block: Tensor | None = None  # (B, depth) sequence length (cls included) per block
    extra: dict = field(default_factory=dict)  # backbone-specific extras (debug tensors, CTS policy)


@dataclass
class Packing:
    """How independent sequences are packed along one token axis (see ``models.attention``)."""

    cu_seqlens: Tensor  # (n+1,) int offsets of the n sequences
    max_seqlen: int  # upper bound on any sequence's length
    segments: Tensor | None = None  # (T,) sequence index of every token (stochastic depth in training)


def drop_path(x: Tensor, p: float, training: bool, packing: Packing | None = None) -> Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability ``p``.

    Args:
        x: (B, L, C) residual branch, or (1, T, C) packed sequences described by ``packing``, in which
            case a packed sequence (an image) is dropped as a whole.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    if packing is None:
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)  # (B, 1, 1)
    else:
        per_image = x.new_empty(packing.cu_seqlens.shape[0] - 1).bernoulli_(keep)  # (n,)
        mask = per_image[packing.segments][None, :, None]  # (1, T, 1)
    return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with packed q, k, v (same packing as ``nn.MultiheadAttention``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, packing: Packing | None = None) -> Tensor:
        """Args:
            x: (B, L, C); or (1, T, C) independent sequences packed along T as ``packing`` says.

        Returns:
            (B, L, C) or (1, T, C). Packed sequences never attend to each other.
        """
        qkv = self.qkv(x)  # (B, L, 3C)
        if packing is None:
            out = merge_heads(self.attend(*split_heads(qkv, self.num_heads)))  # (B, L, C)
        else:
            out = self.attend_packed(qkv[0], packing.cu_seqlens, packing.max_seqlen)[None]  # (1, T, C)
        return self.proj(out)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """softmax(q k^T / sqrt(d)) v: (n, h, l, d) -> (n, h, l, d)."""
        return F.scaled_dot_product_attention(q, k, v)

    def attend_packed(self, qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        """(T, 3C) packed sequences -> (T, C) (``models.attention.packed_attention``)."""
        return packed_attention(qkv, cu_seqlens, max_seqlen, self.num_heads)


class Mlp(nn.Module):
    """Linear -> activation (exact-erf GELU by default) -> Linear."""

    def __init__(
        self, dim: int, hidden: int, out_dim: int | None = None, act: type[nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: Tensor, packing: Packing | None = None) -> Tensor:
        """Args:
            x: (B, L, C), or (1, T, C) packed sequences described by ``packing``.
        """
        x = x + drop_path(self.attn(self.norm1(x), packing), self.drop_path, self.training, packing)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training, packing)
        return x


class PatchEmbed(nn.Module):
    """p x p patch conv; the input is zero-padded bottom/right to a multiple of the patch size."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, bias: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, bias=bias)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B, 3, H, W) -> tokens (B, h*w, C) in row-major order, and the grid (h, w)."""
        p = self.patch_size
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)  # (B, C, h, w)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def resample_pos_embed(
    pos_embed: Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int], num_prefix: int = 1
) -> Tensor:
    """Resize a grid position embedding bicubically (align_corners=False); prefix (cls) entries kept apart.

    Args:
        pos_embed: (1, num_prefix + src_h*src_w, C).

    Returns:
        (1, num_prefix + dst_h*dst_w, C).
    """
    if tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    C = grid.shape[-1]
    if grid.shape[1] != src_hw[0] * src_hw[1]:
        raise ValueError(f"pos_embed has {grid.shape[1]} grid entries, expected {src_hw[0]}x{src_hw[1]}")
    grid = grid.reshape(1, src_hw[0], src_hw[1], C).permute(0, 3, 1, 2)  # (1, C, h0, w0)
    grid = F.interpolate(grid, size=tuple(dst_hw), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, dst_hw[0] * dst_hw[1], C)  # (1, h*w, C)
    return torch.cat([prefix, grid], dim=1)


def to_map(tokens: Tensor, hw: tuple[int, int]) -> Tensor:
    """Patch tokens (B, h*w, C) -> feature map (B, C, h, w)."""
    B, _, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, hw[0], hw[1])


class VisionTransformer(nn.Module):
    """ViT backbone returning (B, C, H/p, W/p) maps (patch size p) after the blocks in ``out_indices``."""

    def __init__(
        self,
        img_size: int | Sequence[int] = (512, 512),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_indices: int | Sequence[int] = -1,
        final_norm: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.grid = (img_size[0] // patch_size, img_size[1] // patch_size)  # the grid pos_embed is stored at
        self.patch_size, self.embed_dim, self.depth = patch_size, embed_dim, depth
        self.out_indices = normalize_out_indices(out_indices, depth)
        self.final_norm = final_norm
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.init_weights()

    def init_weights(self) -> None:
        # N(0, 0.02): the usual ViT init. (timm's trunc_normal_ cuts at +-2 absolute, i.e. 100 std: the same
        # distribution in practice, and its erfinv sampling takes ~15 s for ViT-L on two cores.)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")

    def embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B, 3, H, W) normalised image -> tokens (B, 1+h*w, C) with position embedding, and (h, w)."""
        x, hw = self.patch_embed(x)  # (B, N, C)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, C)
        return x + resample_pos_embed(self.pos_embed, self.grid, hw), hw

    def forward(self, x: Tensor) -> BackboneOutput:
        """(B, 3, H, W) normalised image -> BackboneOutput with one (B, C, h, w) map per out index."""
        x, hw = self.embed(x)  # (B, 1+N, C)
        x, features = self.run_blocks(x, lambda patches: to_map(patches, hw))
        tokens = torch.full((x.shape[0], self.depth), x.shape[1], dtype=torch.long, device=x.device)
        return BackboneOutput(features=features, tokens_per_block=tokens)

    def run_blocks(self, x: Tensor, as_map: Callable[[Tensor], Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Every block on ``x`` (B, 1+L, C), the final norm after the last; returns the output sequence
        and, in ``out_indices`` order, ``as_map(patch tokens (B, L, C))`` after each selected block."""
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.depth - 1 and self.final_norm:
                x = self.norm(x)
            if i in self.out_indices:
                features.append((i, as_map(x[:, 1:])))
        return x, ordered(features, self.out_indices)


def normalize_out_indices(out_indices: int | Sequence[int], depth: int) -> tuple[int, ...]:
    """-1 (or any negative int) means the last block; a list selects blocks in that order."""
    idx = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
    idx = tuple(i + depth if i < 0 else i for i in idx)
    if not idx or any(not 0 <= i < depth for i in idx):
        raise ValueError(f"out_indices {out_indices} must select blocks in [0, {depth})")
    return idx


def ordered(features: list[tuple[int, Tensor]], out_indices: Sequence[int]) -> list[Tensor]:
    """Return the maps in the order ``out_indices`` lists them (it may be unsorted)."""
    by_index = dict(features)
    return [by_index[i] for i in out_indices]


# Sizes of the seed (embed dim, depth, heads); patch 16 throughout.
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}


def vit_tiny(**kwargs) -> VisionTransformer:
    return VisionTransformer(**{**VIT_SIZES["tiny"], **kwargs})


def vit_small(**kwargs) -> VisionTransformer:
    return VisionTransformer(**{**VIT_SIZES["small"], **kwargs})


def vit_base(**kwargs) -> VisionTransformer:
    return VisionTransformer(**{**VIT_SIZES["base"], **kwargs})


def vit_large(**kwargs) -> VisionTransformer:
    return VisionTransformer(**{**VIT_SIZES["large"], **kwargs})


__all__ = [
    "Attention",
    "BackboneOutput",
    "Block",
    "Mlp",
    "Packing",
    "PatchEmbed",
    "VisionTransformer",
    "resample_pos_embed",
    "to_map",
    "vit_tiny",
    "vit_small",
    "vit_base",
    "vit_large",
]
