"""The segmentor: normalise -> backbone -> head -> logits, plus whole / sliding-window inference and loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustvit.models.losses import clust_loss, pseudo_labels, seg_loss
from clustvit.models.vit import BackboneOutput


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

    def forward(self, images: Tensor, masks: Tensor | None = None, oracle: bool = False) -> SegmentorOutput:
        """Args:
            images: (B, 3, H, W) RGB, 0..255.
            masks: (B, H, W) labels; with ``oracle=True`` their pseudo-labels replace the Cluster module.
        """
        ids = None
        if oracle:
            if masks is None or not self.num_clusters:
                raise ValueError("oracle clusters need masks and a ClustViT backbone")
            # The image is zero-padded bottom/right to whole patches; pad the mask with "ignore" to match,
            # so the padded patches get id 0 (keep) and the oracle grid equals the patch grid.
            pad_h, pad_w = -masks.shape[-2] % 16, -masks.shape[-1] % 16
            masks = F.pad(masks, (0, pad_w, 0, pad_h), value=self.ignore_index)
            ids = pseudo_labels(masks, self.num_clusters, ignore_index=self.ignore_index).flatten(1)  # (B, N)
        feats = self.backbone(self.normalise(images), cluster_ids=ids)
        return SegmentorOutput(self.decode_head(feats.features), feats)

    def loss(self, images: Tensor, masks: Tensor, oracle: bool = False) -> dict[str, Tensor]:
        """Training losses; masks (B, H, W) int64 with ``ignore_index`` at unlabelled pixels. ``oracle``: the
        clusters come from the masks' pseudo-labels (as in ``forward``), the clustering loss is still computed."""
        out = self(images, masks, oracle)
        losses = {"loss_seg": seg_loss(out.logits, masks, self.ignore_index)}
        if out.backbone.clust_logits is not None:
            losses["loss_clust"] = clust_loss(out.backbone.clust_logits, masks, self.num_clusters, self.clust_loss_weight)
        losses["loss"] = sum(losses.values())
        return losses

    def predict_logits(self, images: Tensor, masks: Tensor | None = None, oracle: bool = False) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, n_cls, H, W), whole-image or sliding-window per ``test_mode``."""
        if self.test_mode == "whole":
            return self._logits_at(images, images.shape[2:], masks, oracle)
        return self.slide_logits(images, masks, oracle)

    def predict(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, H, W) int64 labels."""
        return self.predict_logits(images).argmax(1)

    def _logits_at(self, images: Tensor, size: Sequence[int], masks: Tensor | None, oracle: bool) -> Tensor:
        logits = self(images, masks, oracle).logits
        return F.interpolate(logits, tuple(size), mode="bilinear", align_corners=False)

    def slide_logits(self, images: Tensor, masks: Tensor | None = None, oracle: bool = False) -> Tensor:
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
            crop_masks = None if masks is None else torch.stack([masks[b, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
            logits = self(crops, crop_masks, oracle).logits.float()  # (n_win, n_cls, h', w')
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
