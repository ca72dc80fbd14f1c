"""ClustViT backbone: a ViT that merges tokens into semantic clusters after block ``injection_point``.

    image -> patch tokens + pos-embed -> blocks[:ip]
          -> Cluster module (MLP on patch tokens -> K+1 logits, arg-max: 0 keep, 1..K merge)
          -> merge each cluster into its mean token -> blocks[ip:] on [cls, kept, K clusters]
          -> Regenerator (MLP on concat[token before merging, its cluster token]) -> final norm -> maps
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from clustvit.models.merging import exporting, merge, plan_merge, regenerate
from clustvit.models.vit import VIT_SIZES, BackboneOutput, Mlp, Packing, VisionTransformer, ordered, to_map


class ClustViT(VisionTransformer):
    """ViT with a Cluster module and a Regenerator (Montello et al., ICRA 2026)."""

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
        num_clusters: int = 3,
        injection_point: int = 3,
        cluster_mlp_size: int = 3072,
    ) -> None:
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, out_indices=out_indices, final_norm=final_norm,
            drop_path_rate=drop_path_rate,
        )
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        if not 0 <= injection_point < depth:
            raise ValueError(f"injection_point must lie in [0, {depth}) for a {depth}-block ViT, got {injection_point}")
        self.num_clusters, self.injection_point = num_clusters, injection_point
        # Cluster module: C -> hidden -> K+1 logits (column 0 = keep the token).
        self.cluster = Mlp(embed_dim, cluster_mlp_size, num_clusters + 1, act=nn.ReLU)
        # Regenerator: concat[token before merging, its cluster token] (2C) -> C -> C.
        self.regenerator = Mlp(2 * embed_dim, embed_dim, embed_dim)
        for m in (*self.cluster.modules(), *self.regenerator.modules()):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(
        self, x: Tensor, cluster_ids: Tensor | None = None, return_intermediates: bool = False
    ) -> BackboneOutput:
        """Args:
            x: (B, 3, H, W) normalised image.
            cluster_ids: (B, N) oracle ids replacing the Cluster module's arg-max (analysis mode).
            return_intermediates: also return every block's output sequence and the merge plan in ``extra``.

        Returns:
            BackboneOutput with maps (B, C, H/16, W/16), ``clust_logits`` (B, N, K+1), the ids used, and
            the sequence length each block ran on.
        """
        ip, last = self.injection_point, self.depth - 1
        x, hw = self.embed(x)  # (B, 1+N, C)
        B, L, _ = x.shape
        features, blocks_out = [], []
        for i in range(ip):
            x = self.blocks[i](x)  # (B, 1+N, C)
            blocks_out.append(x)
            if i in self.out_indices:
                features.append((i, to_map(x[:, 1:], hw)))

        logits = self.cluster(x[:, 1:])  # (B, N, K+1)
        ids = logits.argmax(-1) if cluster_ids is None else cluster_ids.to(x.device, torch.long)
        if ids.shape != logits.shape[:2]:
            raise ValueError(f"cluster_ids must have shape {tuple(logits.shape[:2])}, got {tuple(ids.shape)}")
        plan = plan_merge(ids, self.num_clusters)
        x_inj = x
        # Under torch.export the merge is always traced (an unreduced image packs to itself, unchanged), so
        # the graph keeps the data-dependent path instead of branching on the data.
        merging = exporting() or plan.any_reduced
        y = merge(x, plan) if merging else x  # (1, T, C) packed, or (B, 1+N, C) untouched
        packing = None  # one image packs into one plain sequence
        if merging and B > 1:
            packing = Packing(plan.cu_seqlens, plan.max_seqlen, plan.segments() if self.training else None)

        for i in range(ip, self.depth):
            y = self.blocks[i](y, packing)
            blocks_out.append(y)
            if i in self.out_indices or i == last:
                full = regenerate(y, x_inj, plan, self.regenerator) if merging else y  # (B, 1+N, C)
                if i == last and self.final_norm:
                    full = self.norm(full)
                if i in self.out_indices:
                    features.append((i, to_map(full[:, 1:], hw)))

        lengths = plan.lengths  # (B,)
        tokens = torch.cat([torch.full((B, ip), L, device=x.device), lengths[:, None].expand(B, self.depth - ip)], 1)
        extra = dict(block_outputs=blocks_out, tokens_at_injection=x_inj, plan=plan) if return_intermediates else {}
        return BackboneOutput(
            features=ordered(features, self.out_indices),
            clust_logits=logits,
            cluster_ids=ids,
            merged=plan.reduced,
            tokens_per_block=tokens,
            extra=extra,
        )


def _clustvit(size: str, **kwargs) -> ClustViT:
    return ClustViT(**{**VIT_SIZES[size], **kwargs})


def clustvit_tiny(**kwargs) -> ClustViT:
    return _clustvit("tiny", **kwargs)


def clustvit_small(**kwargs) -> ClustViT:
    return _clustvit("small", **kwargs)


def clustvit_base(**kwargs) -> ClustViT:
    return _clustvit("base", **kwargs)


def clustvit_large(**kwargs) -> ClustViT:
    return _clustvit("large", **kwargs)
