"""Content-aware token sharing (CTS) as pure tensor functions.

A *super-patch* is a 2x2 cell of patch tokens (32x32 pixels for patch 16). The policy network scores
every super-patch; the ``num_shared`` highest-scoring ones are each represented by a single token,
embedded from the 2x-downsampled image, and every other patch keeps its own token:

    plan = plan_sharing(share_scores, grid, num_shared)    # which cells are shared, per image
    patches, pos_ids = gather_patches(image, plan, p)      # the mixed sequence, ready for patch_embed
    fine = unshare_tokens(tokens, plan)                    # after the blocks: back to the full grid

Sequence layout (as the official code): the kept fine patches in row-major grid order, then the shared
super-patches in row-major super-grid order. Every image of a batch has the same length, because the
budget is a fixed count. A shared token takes the position embedding of its top-left patch (official
CTS); when scattered back it is copied to all four patches of its cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class SharingPlan:
    """Which tokens an image keeps and where each one comes from.

    Attributes:
        fine_idx: (B, n_fine) row-major index into the (h, w) patch grid of every kept patch.
        shared_idx: (B, n_shared) row-major index into the (h//2, w//2) super grid of every shared cell.
        pos_ids: (B, n_fine + n_shared) patch-grid index whose position embedding each token takes.
        source: (B, h*w) index into the token sequence of the token covering each patch.
        grid: (h, w) patch grid.
    """

    fine_idx: Tensor
    shared_idx: Tensor
    pos_ids: Tensor
    source: Tensor
    grid: tuple[int, int]

    @property
    def num_tokens(self) -> int:
        """Sequence length without the cls token."""
        return self.pos_ids.shape[1]


def super_grid(grid: tuple[int, int]) -> tuple[int, int]:
    """Super-patch grid of a patch grid: only complete 2x2 cells (an odd last row/column stays fine)."""
    return grid[0] // 2, grid[1] // 2


def shared_budget(grid: tuple[int, int], num_shared: int, ref_grid: tuple[int, int]) -> int:
    """Number of super-patches to share on ``grid``, scaled from ``num_shared`` on ``ref_grid``.

    The share fraction is kept: 103 of 256 super-patches at 512x512 (patch grid 32x32) gives
    1024 - 3 * 103 = 715 tokens; a 1024x1024 image shares round(103 * 4) = 412 of 1024.

    Args:
        grid: (h, w) patch grid of the input.
        num_shared: shared super-patches on ``ref_grid``.
        ref_grid: (h, w) patch grid the budget is stated for (the model's ``img_size`` / patch size).
    """
    ref_cells = super_grid(ref_grid)[0] * super_grid(ref_grid)[1]
    if not 0 <= num_shared <= ref_cells:
        raise ValueError(f"num_shared={num_shared} must lie in [0, {ref_cells}] for patch grid {ref_grid}")
    sh, sw = super_grid(grid)
    cells = sh * sw
    if ref_cells == 0 or cells == 0:
        return 0
    # Integer round-half-up of cells * num_shared / ref_cells: exact, no float drift.
    return min(cells, (2 * cells * num_shared + ref_cells) // (2 * ref_cells))


def plan_sharing(share_scores: Tensor, grid: tuple[int, int], num_shared: int) -> SharingPlan:
    """Share the ``num_shared`` highest-scoring super-patches of every image.

    Args:
        share_scores: (B, h//2, w//2) score of each super-patch (higher = share).
        grid: (h, w) patch grid.
        num_shared: exact number of super-patches to share per image.

    Returns:
        The plan; every image has exactly ``h*w - 3*num_shared`` tokens.
    """
    h, w = grid
    sh, sw = super_grid(grid)
    B = share_scores.shape[0]
    if tuple(share_scores.shape[1:]) != (sh, sw):
        raise ValueError(f"share_scores has shape {tuple(share_scores.shape)}, expected (B, {sh}, {sw})")
    if not 0 <= num_shared <= sh * sw:
        raise ValueError(f"num_shared={num_shared} must lie in [0, {sh * sw}] for grid {grid}")
    device = share_scores.device
    top = share_scores.reshape(B, sh * sw).topk(num_shared, dim=1).indices  # (B, S)
    shared = torch.zeros(B, sh * sw, dtype=torch.bool, device=device)
    shared.scatter_(1, top, True)
    shared_idx = shared.nonzero()[:, 1].reshape(B, num_shared)  # (B, S) row-major order

    # Patch-level view: True where the patch is covered by a shared token.
    covered = torch.zeros(B, h, w, dtype=torch.bool, device=device)
    covered[:, : 2 * sh, : 2 * sw] = shared.reshape(B, sh, 1, sw, 1).expand(B, sh, 2, sw, 2).reshape(
        B, 2 * sh, 2 * sw
    )
    covered = covered.reshape(B, h * w)
    n_fine = h * w - 4 * num_shared
    fine_idx = (~covered).nonzero()[:, 1].reshape(B, n_fine)  # (B, F) row-major order

    # Top-left patch of each shared cell: row 2*i, column 2*j.
    si, sj = shared_idx // sw, shared_idx % sw
    top_left = (2 * si) * w + 2 * sj  # (B, S)
    pos_ids = torch.cat([fine_idx, top_left], dim=1)  # (B, F + S)

    # source[b, patch] = sequence position of the token covering that patch.
    source = torch.empty(B, h * w, dtype=torch.long, device=device)
    source.scatter_(1, fine_idx, torch.arange(n_fine, device=device).expand(B, -1))
    cell_tokens = n_fine + torch.arange(num_shared, device=device).expand(B, -1)  # (B, S)
    for dy in (0, 1):
        for dx in (0, 1):
            source.scatter_(1, top_left + dy * w + dx, cell_tokens)
    return SharingPlan(fine_idx, shared_idx, pos_ids, source, (h, w))


def patchify(image: Tensor, patch_size: int) -> Tensor:
    """(B, C, h*p, w*p) -> (B, h*w, C, p, p) patches in row-major order."""
    B, C, H, W = image.shape
    p = patch_size
    x = image.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C, p, p)


def pad_to_grid(image: Tensor, patch_size: int) -> Tensor:
    """Zero-pad bottom/right to a multiple of the patch size (what PatchEmbed does)."""
    pad_h, pad_w = -image.shape[2] % patch_size, -image.shape[3] % patch_size
    return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image


def superpatch_region(image: Tensor, patch_size: int) -> Tensor:
    """The part of the (padded) image covered by complete super-patches: (B, C, 2p*sh, 2p*sw)."""
    image = pad_to_grid(image, patch_size)
    sh, sw = super_grid((image.shape[2] // patch_size, image.shape[3] // patch_size))
    return image[:, :, : 2 * patch_size * sh, : 2 * patch_size * sw]


def gather_patches(image: Tensor, plan: SharingPlan, patch_size: int) -> Tensor:
    """Pixels of every token of the mixed sequence, laid side by side for one patch-embed call.

    Kept patches are cut from the image; shared super-patches from the image downsampled 2x
    (bilinear, align_corners=False), so a 32x32 cell becomes one 16x16 patch.

    Args:
        image: (B, C, H, W) normalised image.
        plan: from ``plan_sharing`` for this image's patch grid.

    Returns:
        (B, C, p, L*p) strip; ``patch_embed`` on it yields the L tokens in sequence order.
    """
    p = patch_size
    B, C = image.shape[:2]
    fine = patchify(pad_to_grid(image, p), p)  # (B, h*w, C, p, p)
    fine = fine.gather(1, plan.fine_idx[:, :, None, None, None].expand(-1, -1, C, p, p))  # (B, F, C, p, p)
    parts = [fine]
    if plan.shared_idx.shape[1]:
        half = F.interpolate(superpatch_region(image, p), scale_factor=0.5, mode="bilinear", align_corners=False)
        coarse = patchify(half, p)  # (B, sh*sw, C, p, p)
        idx = plan.shared_idx[:, :, None, None, None].expand(-1, -1, C, p, p)
        parts.append(coarse.gather(1, idx))  # (B, S, C, p, p)
    patches = torch.cat(parts, dim=1)  # (B, L, C, p, p)
    L = patches.shape[1]
    return patches.permute(0, 2, 3, 1, 4).reshape(B, C, p, L * p)  # (B, C, p, L*p)


def share_tokens(fine_tokens: Tensor, plan: SharingPlan) -> Tensor:
    """Full-grid tokens -> the mixed sequence; a shared token is the mean of its cell's four tokens.

    The inverse of ``unshare_tokens`` on inputs that are constant within each shared cell.

    Args:
        fine_tokens: (B, h*w, C).

    Returns:
        (B, L, C) with L = plan.num_tokens.
    """
    B, N, C = fine_tokens.shape
    count = torch.zeros(B, plan.num_tokens, 1, dtype=fine_tokens.dtype, device=fine_tokens.device)
    count.scatter_add_(1, plan.source[:, :, None], torch.ones_like(fine_tokens[:, :, :1]))
    total = torch.zeros(B, plan.num_tokens, C, dtype=fine_tokens.dtype, device=fine_tokens.device)
    total.scatter_add_(1, plan.source[:, :, None].expand(-1, -1, C), fine_tokens)
    return total / count  # (B, L, C)


def unshare_tokens(tokens: Tensor, plan: SharingPlan) -> Tensor:
    """Mixed sequence -> full grid: every patch takes the token that covered it.

    Args:
        tokens: (B, L, C) without the cls token.

    Returns:
        (B, h*w, C) in row-major patch order.
    """
    return tokens.gather(1, plan.source[:, :, None].expand(-1, -1, tokens.shape[2]))  # (B, h*w, C)
