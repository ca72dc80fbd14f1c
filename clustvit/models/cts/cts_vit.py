"""CTS backbone: a ViT whose input sequence shares one token per homogeneous 2x2 super-patch.

Data flow (Lu et al., "Content-aware Token Sharing for Efficient Semantic Segmentation", CVPR 2023):

    image -> frozen policy net -> share score per 32x32 super-patch -> top-``budget`` cells shared
          -> patch-embed kept 16x16 patches + 2x-downsampled shared cells -> + pos-embed (by grid position)
          -> all blocks on the short sequence -> final norm -> shared tokens copied back to their 2x2 cells

At 512x512: 103 of 256 super-patches shared -> 612 + 103 = 715 tokens instead of 1024 (30% fewer).
Parameter names are the ViT's plus ``policy_net.*``, so ViT checkpoints load the same way.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clustvit.models.cts.policy import PolicyNet
from clustvit.models.cts.sharing import (
    gather_patches,
    plan_sharing,
    shared_budget,
    super_grid,
    superpatch_region,
    unshare_tokens,
)
from clustvit.models.vit import BackboneOutput, VisionTransformer, resample_pos_embed, to_map


class CTSViT(VisionTransformer):
    """ViT backbone with content-aware token sharing; returns full-grid maps like the plain ViT."""

    def __init__(
        self, num_shared: int = 103, policy_weights: str | os.PathLike | None = None, **vit_kwargs: Any
    ) -> None:
        """Args:
            num_shared: super-patches shared per image at ``img_size`` (103 of 256 at 512x512); other
                input sizes share the same fraction, rounded to an exact count.
            policy_weights: policy-net weights (``clustvit policy train`` output, or an official / timm
                checkpoint). None keeps a randomly initialised policy (tests; weights loaded later).
            vit_kwargs: the ``VisionTransformer`` arguments (img_size, patch_size, embed_dim, depth, ...).
        """
        super().__init__(**vit_kwargs)
        shared_budget(self.grid, num_shared, self.grid)  # validates num_shared against img_size
        self.num_shared = num_shared
        self.policy_net = PolicyNet.from_pretrained(policy_weights) if policy_weights else PolicyNet(self.patch_embed.proj.in_channels)
        # The policy is trained separately on ground truth and stays frozen (official CTS).
        self.policy_net.requires_grad_(False)
        self.policy_net.eval()

    def train(self, mode: bool = True) -> CTSViT:
        """Switch the ViT's mode; the frozen policy net always stays in eval mode (BN statistics)."""
        super().train(mode)
        self.policy_net.eval()
        return self

    def share_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Policy logits and share probability of every complete super-patch.

        Args:
            x: (B, 3, H, W) normalised image.

        Returns:
            logits (B, 2, sh, sw) and scores (B, sh, sw), with (sh, sw) = patch grid // 2.
        """
        p = self.patch_embed.patch_size
        sh, sw = super_grid((math.ceil(x.shape[2] / p), math.ceil(x.shape[3] / p)))
        if sh * sw == 0:
            logits = x.new_zeros(x.shape[0], 2, sh, sw)
        else:
            with torch.no_grad():
                logits = self.policy_net(superpatch_region(x, p))  # (B, 2, sh, sw) when p = 16
            if logits.shape[2:] != (sh, sw):
                # Policy stride is 32 px; other patch sizes map its grid onto theirs.
                logits = F.interpolate(logits, size=(sh, sw), mode="nearest")
        return logits, logits.float().softmax(dim=1)[:, 1]

    def forward(self, x: Tensor) -> BackboneOutput:
        """(B, 3, H, W) normalised image -> BackboneOutput with full-grid (B, C, h, w) maps.

        ``extra`` holds ``policy_logits`` (B, 2, h//2, w//2) and ``shared_mask`` (B, h//2, w//2) bool.
        """
        p = self.patch_embed.patch_size
        B = x.shape[0]
        grid = (math.ceil(x.shape[2] / p), math.ceil(x.shape[3] / p))
        logits, scores = self.share_scores(x)
        plan = plan_sharing(scores, grid, shared_budget(grid, self.num_shared, self.grid))

        tokens, _ = self.patch_embed(gather_patches(x, plan, p))  # (B, L, C)
        pos = resample_pos_embed(self.pos_embed, self.grid, grid)  # (1, 1+h*w, C)
        tokens = tokens + pos[0, 1:][plan.pos_ids]  # each token at its (top-left) grid position
        cls = (self.cls_token + pos[:, :1]).expand(B, -1, -1)
        x = torch.cat([cls, tokens], dim=1)  # (B, 1+L, C)

        # Every position gets the token that stands for it: (B, L, C) -> (B, C, h, w) on the full grid.
        x, features = self.run_blocks(x, lambda patches: to_map(unshare_tokens(patches, plan), grid))

        shared_mask = torch.zeros(B, scores.shape[1] * scores.shape[2], dtype=torch.bool, device=x.device)
        shared_mask.scatter_(1, plan.shared_idx, True)
        return BackboneOutput(
            features=features,
            tokens_per_block=torch.full((B, self.depth), x.shape[1], dtype=torch.long, device=x.device),
            extra={"policy_logits": logits, "shared_mask": shared_mask.reshape(scores.shape)},
        )
