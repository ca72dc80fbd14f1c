"""Segmenter mask-transformer decoder (Strudel et al., ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.models.vit import Block


class MaskTransformerHead(nn.Module):
    """Class embeddings join the patch tokens; masks are cosine scores between patches and classes.

    Reads the last backbone map (B, C_in, h, w) and returns logits (B, num_classes, h, w).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int = 768,
        depth: int = 2,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dec_proj = nn.Linear(in_channels, embed_dim)
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, embed_dim) * 0.02)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # as torch.linspace
        # The decoder's LayerNorms use torch's default eps (1e-5), unlike the backbone's 1e-6.
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, drop_path=r, norm_eps=1e-5) for r in rates)
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.patch_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.classes_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.mask_norm = nn.LayerNorm(num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        B, _, h, w = x.shape
        x = self.dec_proj(self.dropout(x.flatten(2).transpose(1, 2)))  # (B, N, D)
        x = torch.cat([x, self.cls_emb.expand(B, -1, -1)], dim=1)  # (B, N + n_cls, D): classes appended last
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = F.normalize(self.patch_proj(x[:, : -self.num_classes]), dim=-1)  # (B, N, D)
        classes = F.normalize(self.classes_proj(x[:, -self.num_classes :]), dim=-1)  # (B, n_cls, D)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, N, n_cls)
        return masks.transpose(1, 2).reshape(B, self.num_classes, h, w)
