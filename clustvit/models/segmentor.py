"""The segmentor: normalise -> backbone -> head -> logits, plus whole / sliding-window inference and loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.models.losses import clust_loss, seg_loss
from clustvit.models.vit import BackboneOutput

# (crops (n, 3, h, w), guide crops (n, h, w) or None) -> logits (n, n_cls, h', w'): see predict_logits.
RunCrops = Callable[[Tensor, Tensor | None], Tensor]


@dataclass
class SegmentorOutput:
    logits: Tensor  # (B, n_cls, h, w) at the head's resolution
    backbone: BackboneOutput


class Segmentor(nn.Module):
    """Encoder-decoder segmentor around any backbone/head pair."""

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        num_classes: int,
        clust_loss_weight: float = 0.1,
        ignore_index: int = 255,
        test_mode: str = "whole",
        crop_size: Sequence[int] = (512, 512),
        stride: Sequence[int] = (480, 480),
        mean: Sequence[float] = (127.5, 127.5, 127.5),
        std: Sequence[float] = (127.5, 127.5, 127.5),
    ) -> None:
        super().__init__()
        if test_mode not in ("whole", "slide"):
            raise ValueError(f"test_mode must be 'whole' or 'slide', got {test_mode!r}")
        self.backbone, self.decode_head = backbone, decode_head
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.clust_loss_weight = clust_loss_weight
        self.test_mode, self.crop_size, self.stride = test_mode, tuple(crop_size), tuple(stride)
        # Buffers, so that benchmarks time the whole pipeline and .to(device) moves them.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def num_clusters(self) -> int:
        return getattr(self.backbone, "num_clusters", 0)

    def normalise(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in 0..255 (uint8 or float) -> normalised float."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: Tensor, cluster_ids: Tensor | None = None) -> SegmentorOutput:
        """Args:
            images: (B, 3, H, W) RGB, 0..255.
            cluster_ids: (B, N) ids for a ClustViT backbone instead of its Cluster module's (the oracle
                analysis mode, ``models.oracle``); other backbones do not take them.
        """
        x = self.normalise(images)
        feats = self.backbone(x) if cluster_ids is None else self.backbone(x, cluster_ids=cluster_ids)
        return SegmentorOutput(self.decode_head(feats.features), feats)

    def loss(self, images: Tensor, masks: Tensor, cluster_ids: Tensor | None = None) -> dict[str, Tensor]:
        """Training losses; masks (B, H, W) int64 with ``ignore_index`` at unlabelled pixels. ``cluster_ids``
        as in ``forward``; the clustering loss is computed either way."""
        out = self(images, cluster_ids)
        losses = {"loss_seg": seg_loss(out.logits, masks, self.ignore_index)}
        if out.backbone.clust_logits is not None:
            losses["loss_clust"] = clust_loss(out.backbone.clust_logits, masks, self.num_clusters,
                                              self.clust_loss_weight, self.backbone.patch_size)
        losses["loss"] = sum(losses.values())
        return losses

    def predict_logits(self, images: Tensor, guide: Tensor | None = None, run: RunCrops | None = None) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, n_cls, H, W), whole-image or sliding-window per ``test_mode``.

        Args:
            guide: (B, H, W), a per-pixel map cut into exactly the crops the image is cut into, for ``run``.
            run: replaces ``self(crops).logits`` for each batch of crops: ``run(crops (n, 3, h, w), guide
                crops (n, h, w) or None) -> (n, n_cls, h', w')`` (the oracle analysis mode runs the crops
                with their masks' pseudo-labels as clusters, ``models.oracle.oracle_logits``).
        """
        run = run or (lambda crops, _guide: self(crops).logits)
        if self.test_mode == "whole":
            logits = run(images, guide)
            return F.interpolate(logits, tuple(images.shape[2:]), mode="bilinear", align_corners=False)
        return self.slide_logits(images, guide, run)

    def predict(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, H, W) int64 labels."""
        return self.predict_logits(images).argmax(1)

    def slide_logits(self, images: Tensor, guide: Tensor | None, run: RunCrops) -> Tensor:
        """Overlapping crops (mmseg's grid), run as one batch per image, averaged where they overlap.

        The stitching is memory-bound (a 150-class ADE20K canvas is 210 MB): each window's logits are
        upsampled a few classes at a time, so no window's full-resolution logits exist at once, and
        the sum is divided in place. Upsampling is per class, so the numbers do not depend on it.
        """
        B, _, H, W = images.shape
        (ch, cw), (sh, sw) = self.crop_size, self.stride
        boxes = sliding_windows(H, W, ch, cw, sh, sw)
        out = images.new_zeros(B, self.num_classes, H, W, dtype=torch.float32)
        count = images.new_zeros(1, 1, H, W, dtype=torch.float32)
        for b in range(B):
            # Every window of an image has the same size, so the windows stack into one batch.
            crops = torch.stack([images[b, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
            crop_guide = None if guide is None else torch.stack([guide[b, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
            logits = run(crops, crop_guide).float()  # (n_win, n_cls, h', w')
            for i, (y1, y2, x1, x2) in enumerate(boxes):
                for c in range(0, self.num_classes, _STITCH_CLASSES):
                    part = logits[i : i + 1, c : c + _STITCH_CLASSES]  # (1, <=16, h', w')
                    up = F.interpolate(part, crops.shape[2:], mode="bilinear", align_corners=False)  # (1, <=16, h, w)
                    out[b, c : c + _STITCH_CLASSES, y1:y2, x1:x2] += up[0]
        for y1, y2, x1, x2 in boxes:
            count[..., y1:y2, x1:x2] += 1
        return out.div_(count)


# Classes upsampled at a time when stitching windows (16 x 512 x 512 floats = 16 MB at a time).
_STITCH_CLASSES = 16


def sliding_windows(H: int, W: int, ch: int, cw: int, sh: int, sw: int) -> list[tuple[int, int, int, int]]:
    """mmseg's window grid: (y1, y2, x1, x2) boxes of size min(crop, image) covering the image."""
    rows = max(H - ch + sh - 1, 0) // sh + 1
    cols = max(W - cw + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, H), min(c * sw + cw, W)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes
