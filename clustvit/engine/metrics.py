"""Segmentation metrics: confusion-matrix IoU/accuracy and size-stratified recall.

Both accumulators keep only additive integer state (a confusion matrix, per-bucket pixel counts), so
results from several processes merge by summation (`sync()` does the all-reduce under DDP).

Semantics follow mmseg's `IoUMetric`: per class, IoU = TP / (TP + FP + FN) and Acc = TP / (TP + FN);
a class with an empty denominator is NaN and left out of the mean (a class that is predicted but
absent from the ground truth therefore has IoU 0, which does count, and Acc NaN, which does not).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
from scipy import ndimage
from torch import Tensor

# The official size-stratified recall buckets: share of the image area covered by one connected
# ground-truth object, as half-open intervals [lo, hi).
SIZE_BUCKETS: dict[str, tuple[float, float]] = {
    "small": (0.0, 0.05),
    "medium": (0.05, 0.15),
    "large": (0.15, 0.30),
    "huge": (0.30, math.inf),
}


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"metrics: expected pred and target of the same shape (B, H, W), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def _allreduce(t: Tensor) -> Tensor:
    """Sum `t` over all DDP ranks (identity without an initialised process group); same device back."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return t
    # NCCL only reduces CUDA tensors; a rank that saw no batch may still hold a CPU tensor.
    work = t.cuda() if dist.get_backend() == "nccl" else t.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(t.device)


class IoUAccumulator:
    """Accumulates a (num_classes, num_classes) confusion matrix; rows = ground truth, cols = prediction.

    Works on any device: the matrix lives where the first update's tensors live.

    Args:
        num_classes: number of real classes (labels 0..num_classes-1).
        ignore_index: ground-truth label whose pixels are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"IoUAccumulator: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion: Tensor = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.confusion = torch.zeros_like(self.confusion)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: (B, H, W) integer predicted labels in [0, num_classes).
            target: (B, H, W) integer ground truth; `ignore_index` pixels are skipped.
        """
        _check_pair(pred, target)
        n = self.num_classes
        valid = target != self.ignore_index
        t = target[valid].long()  # (P,)
        p = pred[valid].long()  # (P,)
        if t.numel():
            # One sync per batch buys a clear error instead of a silently wrong matrix.
            lo, hi = int(torch.minimum(t.min(), p.min())), int(torch.maximum(t.max(), p.max()))
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"IoUAccumulator.update: labels must be in [0, {n}) or {self.ignore_index} "
                    f"(target only), got values in [{lo}, {hi}]"
                )
        # Flat index gt * n + pred turns the 2-D histogram into one bincount.
        counts = torch.bincount(t * n + p, minlength=n * n).reshape(n, n)  # (n, n)
        if self.confusion.device != counts.device:
            self.confusion = self.confusion.to(counts.device)
        self.confusion += counts

    def merge(self, other: IoUAccumulator) -> None:
        """Add another accumulator's counts (e.g. gathered from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"IoUAccumulator.merge: {other.num_classes} classes vs {self.num_classes}")
        self.confusion += other.confusion.to(self.confusion.device)

    def sync(self) -> None:
        """Sum the confusion matrix over DDP ranks; every rank then computes the same result."""
        self.confusion = _allreduce(self.confusion)

    def compute(self) -> dict[str, float | list[float]]:
        """Return aAcc, mIoU, mAcc (scalars) and per-class IoU, Acc (lists); all in percent, NaN-safe."""
        cm = self.confusion.double().cpu()
        tp = cm.diag()
        gt = cm.sum(1)
        pr = cm.sum(0)
        union = gt + pr - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan) * 100
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan) * 100
        total = cm.sum()
        return {
            "aAcc": float(tp.sum() / total * 100) if total > 0 else float("nan"),
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }


def _nanmean(x: Tensor) -> float:
    keep = ~torch.isnan(x)
    return float(x[keep].mean()) if keep.any() else float("nan")


def size_stratified_counts(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    buckets: dict[str, tuple[float, float]] = SIZE_BUCKETS,
) -> np.ndarray:
    """Per-bucket pixel counts of ground-truth objects and of their correctly predicted pixels.

    An object is a 4-connected component of one class in the ground truth; its size is its share of
    the whole image area (ignore pixels included in the area, as the official metric does).

    Args:
        pred: (H, W) predicted labels.
        target: (H, W) ground-truth labels (labels outside [0, num_classes) are never objects).
        num_classes: number of real classes.
        buckets: name -> [lo, hi) share of the image.

    Returns:
        (len(buckets), 2) int64: column 0 = object pixels predicted as their class, column 1 = object pixels.
    """
    out = np.zeros((len(buckets), 2), dtype=np.int64)
    area = target.shape[0] * target.shape[1]
    edges = list(buckets.values())
    for c in np.unique(target):
        if not 0 <= c < num_classes:
            continue
        components, n = ndimage.label(target == c)  # (H, W) component ids, 0 = not class c
        if n == 0:
            continue
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]  # (n,)
        hits = np.bincount(components[pred == c], minlength=n + 1)[1:]  # (n,) correctly predicted
        shares = sizes / area
        for b, (lo, hi) in enumerate(edges):
            sel = (shares >= lo) & (shares < hi)
            out[b, 0] += hits[sel].sum()
            out[b, 1] += sizes[sel].sum()
    return out


class SizeStratifiedRecall:
    """Pixel recall of ground-truth objects, pooled over the dataset per object-size bucket.

    Args:
        num_classes: number of real classes.
        buckets: name -> [lo, hi) share of the image area (default: the official small/medium/large/huge).
    """

    def __init__(self, num_classes: int, buckets: dict[str, tuple[float, float]] = SIZE_BUCKETS) -> None:
        self.num_classes = num_classes
        self.buckets = dict(buckets)
        self.counts: Tensor = torch.zeros(len(self.buckets), 2, dtype=torch.int64)  # (buckets, [tp, total])

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch: pred and target are (B, H, W) integer labels on any device."""
        _check_pair(pred, target)
        p, t = pred.cpu().numpy(), target.cpu().numpy()
        for b in range(p.shape[0]):
            self.counts += torch.from_numpy(size_stratified_counts(p[b], t[b], self.num_classes, self.buckets))

    def merge(self, other: SizeStratifiedRecall) -> None:
        self.counts += other.counts

    def sync(self) -> None:
        """Sum the counts over DDP ranks; every rank then computes the same result."""
        self.counts = _allreduce(self.counts)

    def compute(self) -> dict[str, float]:
        """Return {"recall_<bucket>": percent} (NaN for a bucket with no objects)."""
        res = {}
        for (name, _), (tp, total) in zip(self.buckets.items(), self.counts.tolist(), strict=True):
            res[f"recall_{name}"] = 100.0 * tp / total if total > 0 else float("nan")
        return res
