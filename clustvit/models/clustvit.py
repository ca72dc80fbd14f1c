"""ClustViT backbone: a ViT that merges tokens into semantic clusters after block ``injection_point``.

    image -> patch tokens + pos-embed -> blocks[:ip]
          -> Cluster module (MLP on patch tokens -> K+1 logits, arg-max: 0 keep, 1..K merge)
          -> merge each cluster into its mean token -> blocks[ip:] on [cls, kept, K clusters]
          -> Regenerator (MLP on concat[token before merging, its cluster token]) -> final norm -> maps
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clustvit.models.merging import MergePlan, exporting, merge, plan_merge, regenerate
from clustvit.models.vit import VIT_SIZES, BackboneOutput, Mlp, Packing, VisionTransformer, to_map


@dataclass
class Intermediates:
    """What ``ClustViT.forward_intermediates`` records beside the output (the analysis tools read it)."""

    block_outputs: list[Tensor] = field(default_factory=list)  # after each block: (B, 1+N, C) up to ip;
    # after it the sequence the block ran on: (1, T, C) packed, or (B, 1+N, C) when nothing merged
    tokens_at_injection: Tensor | None = None  # (B, 1+N, C): the sequence the Cluster module assigned
    plan: MergePlan | None = None  # the merge plan (``models.merging``)


class ClustViT(VisionTransformer):
    """ViT with a Cluster module and a Regenerator (Montello et al., ICRA 2026)."""

    def __init__(
        self, num_clusters: int = 3, injection_point: int = 3, cluster_mlp_size: int = 3072, **vit_kwargs: Any
    ) -> None:
        """Args:
            num_clusters: K, the clusters tokens can merge into (the Cluster module has K+1 outputs: keep, 1..K).
            injection_point: ip, the blocks that run before the Cluster module, in [0, depth).
            cluster_mlp_size: hidden width of the Cluster module.
            vit_kwargs: the ``VisionTransformer`` arguments (img_size, patch_size, embed_dim, depth, ...).
        """
        super().__init__(**vit_kwargs)
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        if not 0 <= injection_point < self.depth:
            raise ValueError(f"injection_point must lie in [0, {self.depth}) for a {self.depth}-block ViT, "
                             f"got {injection_point}")
        self.num_clusters, self.injection_point = num_clusters, injection_point
        C = self.embed_dim
        # Cluster module: C -> hidden -> K+1 logits (column 0 = keep the token).
        self.cluster = Mlp(C, cluster_mlp_size, num_clusters + 1, act=nn.ReLU)
        # Regenerator: concat[token before merging, its cluster token] (2C) -> C -> C.
        self.regenerator = Mlp(2 * C, C, C)
        for m in (*self.cluster.modules(), *self.regenerator.modules()):
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, cluster_ids: Tensor | None = None, record: Intermediates | None = None) -> BackboneOutput:
        """Args:
            x: (B, 3, H, W) normalised image.
            cluster_ids: (B, N) ids replacing the Cluster module's arg-max: the oracle analysis mode (the
                ground truth's pseudo-labels, ``models.oracle``). Only ClustViT takes them.
            record: filled with the block outputs and the merge plan (``forward_intermediates``).

        Returns:
            BackboneOutput with maps (B, C, H/p, W/p), ``clust_logits`` (B, N, K+1), the ids used, and the
            sequence length each block ran on.
        """
        ip, last = self.injection_point, self.depth - 1
        x, hw = self.embed(x)  # (B, 1+N, C)
        maps: dict[int, Tensor] = {}  # block index -> (B, C, h, w)

        for i in range(ip):  # blocks[:ip] on the whole sequence
            x = self._block(i, x, None, record)  # (B, 1+N, C)
            if i in self.out_indices:
                maps[i] = to_map(x[:, 1:], hw)

        logits, ids = self.assign(x, cluster_ids)  # Cluster module: (B, N, K+1), (B, N)
        plan = plan_merge(ids, self.num_clusters)
        # Under torch.export the merge is always traced (an unreduced image packs to itself, unchanged), so
        # the graph keeps the data-dependent path instead of branching on the data.
        merging = exporting() or plan.any_reduced
        y = merge(x, plan) if merging else x  # (1, T, C): per image [cls, kept, K cluster means]; or untouched
        packing = self._packing(plan) if merging else None

        for i in range(ip, self.depth):  # blocks[ip:] on the short sequence
            y = self._block(i, y, packing, record)
            if i in self.out_indices:
                full = regenerate(y, x, plan, self.regenerator) if merging else y  # Regenerator: (B, 1+N, C)
                if i == last and self.final_norm:
                    full = self.norm(full)
                maps[i] = to_map(full[:, 1:], hw)

        if record is not None:
            record.tokens_at_injection, record.plan = x, plan
        return BackboneOutput(
            features=[maps[i] for i in self.out_indices],
            clust_logits=logits,
            cluster_ids=ids,
            merged=plan.reduced,
            tokens_per_block=self._tokens_per_block(x.shape[1], plan.lengths),
        )

    def forward_intermediates(self, x: Tensor, cluster_ids: Tensor | None = None) -> tuple[BackboneOutput, Intermediates]:
        """``forward``, plus every block's output sequence, the tokens at injection and the merge plan."""
        record = Intermediates()
        return self(x, cluster_ids, record), record

    def assign(self, x: Tensor, cluster_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The Cluster module on the patch tokens of ``x`` (B, 1+N, C).

        Returns:
            logits (B, N, K+1), and the ids (B, N): their arg-max (0 keep, 1..K a cluster), or
            ``cluster_ids`` when given (the logits are still computed, for the clustering loss).
        """
        logits = self.cluster(x[:, 1:])  # (B, N, K+1)
        if cluster_ids is None:
            return logits, logits.argmax(-1)
        if cluster_ids.shape != logits.shape[:2]:
            raise ValueError(f"cluster_ids must have shape {tuple(logits.shape[:2])}, got {tuple(cluster_ids.shape)}")
        return logits, cluster_ids.to(x.device, torch.long)

    def _block(self, i: int, x: Tensor, packing: Packing | None, record: Intermediates | None) -> Tensor:
        x = self.blocks[i](x, packing)
        if record is not None:
            record.block_outputs.append(x)
        return x

    def _packing(self, plan: MergePlan) -> Packing | None:
        """How the merged sequences lie along the packed axis; None for one image (one plain sequence)."""
        if plan.shape[0] == 1:
            return None
        return Packing(plan.cu_seqlens, plan.max_seqlen, plan.segments() if self.training else None)

    def _tokens_per_block(self, full: int, lengths: Tensor) -> Tensor:
        """(B, depth): ``full`` (1+N) for the blocks before ip, each image's merged length after."""
        B, ip = lengths.shape[0], self.injection_point
        return torch.cat([torch.full((B, ip), full, device=lengths.device, dtype=lengths.dtype),
                          lengths[:, None].expand(B, self.depth - ip)], 1)


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
