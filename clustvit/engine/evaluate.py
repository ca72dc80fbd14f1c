"""Evaluation: predict each test image, score at the mask's original resolution, optional outputs.

Test samples carry the image resized by the test pipeline and the mask at its original size
(mmseg evaluates there), so logits are resized to the mask before the arg-max.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from clustvit.accel.dtype import amp_dtype
from clustvit.atomic import atomic_path
from clustvit.engine.metrics import IoUAccumulator, SizeStratifiedRecall
from clustvit.inference.predictor import upsampled_argmax
from clustvit.viz.draw import colorize

IGNORE_COLOUR = (255, 255, 255)  # ignore pixels in the ground-truth panel


class TokenCounter:
    """Records the share of tokens the backbone kept, from each forward's ``tokens_per_block``.

    "Tokens kept" = sequence length of the last block / of the first block, in percent (100 for a
    plain ViT). A forward hook reads the backbone's own output: no second forward pass.
    """

    def __init__(self, model: nn.Module) -> None:
        self.kept = 0.0  # sum over images of the kept share
        self.images = 0
        self._last: float | None = None
        self._handle = model.backbone.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, out: Any) -> None:
        tpb = getattr(out, "tokens_per_block", None)  # (B, depth) sequence length per block
        if tpb is None:
            share = torch.ones(out.features[0].shape[0])  # (B,) a plain ViT keeps every token
        else:
            tpb = tpb.detach().float()
            share = tpb[:, -1] / tpb[:, 0]  # (B,)
        self.kept += float(share.sum())
        self.images += share.numel()
        self._last = 100.0 * float(share.mean())

    def last_percent(self) -> float | None:
        """Tokens kept (%) in the most recent forward."""
        return self._last

    def mean_percent(self) -> float:
        """Tokens kept (%) averaged over every image (sliding windows count each window)."""
        return 100.0 * self.kept / max(self.images, 1)

    def remove(self) -> None:
        self._handle.remove()


def _panel(image: Tensor, mask: np.ndarray, pred: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    """image | ground truth | prediction, all at the mask's (original) resolution."""
    h, w = mask.shape
    img = F.interpolate(image[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
    img = img.clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    return np.concatenate([img, colorize(mask, palette, IGNORE_COLOUR), colorize(pred, palette, IGNORE_COLOUR)], axis=1)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, device: torch.device, amp: bool = False, rank: int = 0,
             world_size: int = 1, show_dir: str | Path | None = None, out_dir: str | Path | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Scores `model` on `dataset` (images ``rank::world_size`` here, results summed over ranks).

    Args:
        model: a ``Segmentor`` in eval mode.
        dataset: test-split dataset; ``dataset[i]`` -> image (3, h, w) uint8, mask (H, W) int64, path.
        device: where the model runs.
        amp: autocast in ``accel.amp_dtype(device)``.
        rank, world_size: DDP sharding of the images.
        show_dir: write ``image | ground truth | prediction`` PNG panels here.
        out_dir: write the predicted label maps as PNGs here.
        progress: show a progress bar.

    Returns:
        aAcc, mIoU, mAcc, IoU, Acc (percent), recall_<size>, tokens_kept (%), img_s, num_images.
    """
    iou = IoUAccumulator(model.num_classes, model.ignore_index)
    recall = SizeStratifiedRecall(model.num_classes)
    tokens = TokenCounter(model)
    palette = list(getattr(dataset, "palette", [])) or [(i * 37 % 256, i * 91 % 256, i * 53 % 256) for i in range(256)]
    for d in (show_dir, out_dir):
        if d is not None:
            Path(d).mkdir(parents=True, exist_ok=True)
    indices = range(rank, len(dataset), world_size)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="test", unit="img")
    dtype = amp_dtype(device)
    seconds = 0.0
    try:
        for i in indices:
            sample = dataset[i]
            image = sample["image"][None].to(device)  # (1, 3, h, w) uint8, test-pipeline size
            mask = sample["mask"][None].to(device)  # (1, H, W) original size
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                logits = model.predict_logits(image).float()  # (1, n_cls, h, w)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            # At the mask's size, without holding n_cls x H x W upsampled logits (ADE20K: 150 classes).
            pred = upsampled_argmax(logits[0], mask.shape[-2:])[None]  # (1, H, W)
            iou.update(pred, mask)
            recall.update(pred, mask)
            stem = Path(str(sample.get("path", f"{i:06d}"))).stem
            if show_dir is not None:
                panel = _panel(sample["image"], mask[0].cpu().numpy(), pred[0].cpu().numpy(), palette)
                _save_png(panel, Path(show_dir) / f"{stem}.png")
            if out_dir is not None:
                _save_png(pred[0].cpu().numpy().astype(np.uint8), Path(out_dir) / f"{stem}.png")
    finally:
        tokens.remove()
    iou.sync()
    recall.sync()
    n = len(range(rank, len(dataset), world_size))
    return {**iou.compute(), **recall.compute(), "tokens_kept": tokens.mean_percent(),
            "img_s": n / seconds if seconds > 0 else float("nan"), "num_images": len(dataset)}
