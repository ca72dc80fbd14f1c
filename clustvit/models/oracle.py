"""Oracle clusters: ClustViT's analysis mode, where the ground truth's pseudo-labels replace the Cluster module.

It shows the reduction a perfectly trained Cluster module would reach, and lets speed be measured on real
images with random weights (the efficiency tools' ``--oracle-clusters``). Only ClustViT takes cluster ids;
the functions here compute them from masks and hand them to its forward.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.models.losses import pseudo_labels


def oracle_cluster_ids(masks: Tensor, num_clusters: int, patch_size: int, ignore_index: int = 255) -> Tensor:
    """The cluster ids a perfect Cluster module assigns: the masks' pseudo-labels on the patch grid.

    Args:
        masks: (B, H, W) labels at the image's size. They are padded with ``ignore_index`` up to whole
            patches, as the patch embedding zero-pads the image, so padded patches get id 0 (keep).

    Returns:
        (B, N) int64 ids, N = ceil(H / p) * ceil(W / p), row-major.
    """
    pad_h, pad_w = -masks.shape[-2] % patch_size, -masks.shape[-1] % patch_size
    masks = F.pad(masks, (0, pad_w, 0, pad_h), value=ignore_index)
    return pseudo_labels(masks, num_clusters, patch_size, ignore_index).flatten(1)


def seg_cluster_ids(seg: nn.Module, masks: Tensor) -> Tensor:
    """``oracle_cluster_ids`` for a segmentor's ClustViT backbone; (B, H, W) -> (B, N)."""
    if not seg.num_clusters:
        raise ValueError("oracle clusters need a ClustViT backbone")
    return oracle_cluster_ids(masks, seg.num_clusters, seg.backbone.patch_size, seg.ignore_index)


def oracle_logits(seg: nn.Module, images: Tensor, masks: Tensor) -> Tensor:
    """``seg.predict_logits(images)`` with oracle clusters, each crop (whole image or sliding window) with
    the pseudo-labels of its own part of ``masks``.

    Args:
        images: (B, 3, H, W) RGB 0..255.
        masks: (B, H, W) labels at the images' size.

    Returns:
        (B, n_cls, H, W) logits.
    """
    return seg.predict_logits(images, masks, lambda crops, crop_masks: seg(crops, seg_cluster_ids(seg, crop_masks)).logits)


def oracle_loss(seg: nn.Module, images: Tensor, masks: Tensor) -> dict[str, Tensor]:
    """``seg.loss`` with oracle clusters (a ClustViT; other segmentors train as they are)."""
    return seg.loss(images, masks, seg_cluster_ids(seg, masks) if seg.num_clusters else None)
