"""Losses: pixel cross-entropy and the Cluster module's pseudo-label cross-entropy.

Pseudo-labels (official semantics): each patch (16x16 by default) whose pixels all carry one class gets that class,
mixed or ignore patches get none. Per image, the K classes covering the most homogeneous patches map to
cluster ids 1..K (largest first); every other patch gets id 0 = "keep the token".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH = 16  # the official ClustLoss never passes a patch size: it is the ViT's 16


def patch_values(masks: Tensor, patch: int = PATCH) -> Tensor:
    """The raw value of every homogeneous patch (the ignore value included), or -1 for mixed patches.

    Args:
        masks: (B, H, W) integer labels. Trailing rows/columns beyond a multiple of ``patch`` are dropped.

    Returns:
        (B, H // patch, W // patch) int64.
    """
    masks = masks.long()  # signed: the -1 sentinel must not wrap around as it would in uint8
    B, H, W = masks.shape
    h, w = H // patch, W // patch
    tiles = masks[:, : h * patch, : w * patch].reshape(B, h, patch, w, patch).permute(0, 1, 3, 2, 4)
    tiles = tiles.reshape(B, h, w, patch * patch)  # (B, h, w, p*p)
    lo, hi = tiles.amin(-1), tiles.amax(-1)
    return torch.where(lo == hi, lo, torch.full_like(lo, -1))


def pseudo_labels(masks: Tensor, num_clusters: int, patch: int = PATCH, ignore_index: int = 255) -> Tensor:
    """Cluster targets in {0..K}: the K most frequent homogeneous classes -> 1..K, the rest -> 0.

    Ties in the patch counts are broken towards the smaller class value (a stable sort), so the
    result is deterministic; the official code uses an unstable ``argsort`` there.

    Args:
        masks: (B, H, W) integer labels.

    Returns:
        (B, H // patch, W // patch) int64.
    """
    values = patch_values(masks, patch)  # (B, h, w)
    values = values.masked_fill(values == ignore_index, -1)  # all-ignore patches carry no class
    B = values.shape[0]
    flat = values.reshape(B, -1)  # (B, n)
    # Count every class without reading the label range on the host: sort each image's values, count
    # each value's run, keep one entry per class (its first), then order the classes by count.
    ordered, _ = torch.sort(flat, dim=1)  # (B, n)
    runs = torch.searchsorted(ordered, ordered, right=True) - torch.searchsorted(ordered, ordered)  # (B, n)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    counts = torch.where(first & (ordered >= 0), runs, 0)  # (B, n): each class's count once, at its first entry
    top = torch.sort(-counts, dim=1, stable=True).indices[:, :num_clusters]  # (B, <=K), ties: smaller class first
    top_values = torch.gather(ordered, 1, top)  # (B, <=K)
    present = torch.gather(counts, 1, top) > 0  # (B, <=K) absent classes take no cluster
    match = (flat[:, :, None] == top_values[:, None, :]) & present[:, None, :]  # (B, n, <=K)
    rank = torch.arange(1, top.shape[1] + 1, device=flat.device)  # cluster ids 1..K, most frequent first
    labels = (match.long() * rank).sum(-1)  # (B, n): 0 where the class is not among the top K
    return labels.reshape(values.shape)


def clust_loss(
    logits: Tensor, masks: Tensor, num_clusters: int, loss_weight: float = 0.1, patch: int = PATCH
) -> Tensor:
    """Cross-entropy of the Cluster module's logits against the pseudo-labels, mean over all tokens.

    Args:
        logits: (B, N, K+1) with N = (H // patch) * (W // patch) in row-major order.
        masks: (B, H, W) labels.
        patch: the backbone's patch size.
    """
    target = pseudo_labels(masks, num_clusters, patch).flatten(1)  # (B, N)
    if target.shape != logits.shape[:2]:
        raise ValueError(f"clust_loss: {tuple(logits.shape[:2])} logits but {tuple(target.shape)} mask patches")
    return loss_weight * F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())


def seg_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255) -> Tensor:
    """Pixel cross-entropy, logits resized bilinearly to the mask.

    As the official mmseg ``CrossEntropyLoss`` (``avg_non_ignore=False``): ignored pixels contribute zero
    and the sum is divided by *all* pixels.

    Args:
        logits: (B, n_cls, h, w).
        masks: (B, H, W) int64, ``ignore_index`` marks pixels without a label.
    """
    logits = F.interpolate(logits, masks.shape[-2:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(logits.float(), masks.long(), ignore_index=ignore_index, reduction="none")
    return per_pixel.mean()
