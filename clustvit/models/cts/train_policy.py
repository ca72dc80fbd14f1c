"""Training the CTS policy network on ground truth (``clustvit policy train`` runs it on a config's dataset).

Target of a 32x32 super-patch: 1 ("share") when all its labelled pixels hold one class, else 0;
ignore when it holds no labelled pixel. The loss is cross-entropy over super-patches.

    images uint8 (B,3,H,W) -> normalise -> PolicyNet -> logits (B,2,H/32,W/32) <- superpatch_labels(masks)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from clustvit.models.cts.policy import PolicyNet

CELL = 32  # pixels per super-patch side: 2 x patch 16, and Lite0's output stride
IGNORE_INDEX = 255


def normalise(images: Tensor) -> Tensor:
    """uint8 / float RGB 0..255 (B, 3, H, W) -> (x - 127.5) / 127.5, what the segmentor feeds CTSViT."""
    return (images.float() - 127.5) / 127.5


def prepare(images: Tensor, masks: Tensor, cell: int = CELL) -> tuple[Tensor, Tensor]:
    """Policy input and masks: normalise, then pad bottom/right to a multiple of ``cell``.

    The image is padded with 0 after normalising (what CTSViT's patch grid padding does), masks with
    ignore. The input is channels-last: the depthwise convs train several times faster so on CPU.

    Args:
        images: (B, 3, H, W) RGB 0..255; masks: (B, H, W).

    Returns:
        (B, 3, H', W') input and (B, H', W') masks, H' and W' multiples of ``cell``.
    """
    images = normalise(images)
    ph, pw = -images.shape[-2] % cell, -images.shape[-1] % cell
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
        masks = F.pad(masks, (0, pw, 0, ph), value=IGNORE_INDEX)
    return images.contiguous(memory_format=torch.channels_last), masks


def superpatch_labels(masks: Tensor, cell: int = CELL, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-super-patch policy target.

    Args:
        masks: (B, H, W) int64 class ids, ``ignore_index`` = unlabelled; H, W multiples of ``cell``.

    Returns:
        (B, H/cell, W/cell) int64: 1 = one class only, 0 = several classes, ``ignore_index`` = no label.
    """
    B, H, W = masks.shape
    if H % cell or W % cell:
        raise ValueError(f"mask size {H}x{W} is not a multiple of the super-patch size {cell}")
    cells = masks.reshape(B, H // cell, cell, W // cell, cell).transpose(2, 3).flatten(3)  # (B, h, w, cell^2)
    valid = cells != ignore_index
    hi = torch.where(valid, cells, torch.full_like(cells, -1)).amax(-1)
    lo = torch.where(valid, cells, torch.full_like(cells, torch.iinfo(cells.dtype).max)).amin(-1)
    labels = (hi == lo).long()  # (B, h, w)
    return torch.where(valid.any(-1), labels, torch.full_like(labels, ignore_index))


def policy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of (B, 2, h, w) logits against (B, h, w) targets (ignore excluded)."""
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


class PolicyScore:
    """Accumulates super-patch confusion counts: accuracy, chance (majority class) and share precision."""

    def __init__(self) -> None:
        self.counts = torch.zeros(2, 2, dtype=torch.long)  # [target, prediction]

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Args: logits (B, 2, h, w); labels (B, h, w)."""
        keep = labels != IGNORE_INDEX
        idx = labels[keep] * 2 + logits.argmax(1)[keep]
        self.counts += torch.bincount(idx.cpu(), minlength=4).reshape(2, 2)

    def result(self) -> dict[str, float]:
        """``accuracy``, ``chance`` (always predicting the majority target), ``share_precision``
        (homogeneous among the cells predicted "share": what token sharing relies on), ``share_rate``."""
        c = self.counts.double()
        total = c.sum().clamp(min=1)
        return {
            "accuracy": float(c.trace() / total),
            "chance": float(c.sum(1).max() / total),
            "share_precision": float(c[1, 1] / c[:, 1].sum().clamp(min=1)),
            "share_rate": float(c.sum(1)[1] / total),
            "cells": int(c.sum()),
        }


def cycle(batches: Iterable[dict]) -> Iterator[dict]:
    """Repeat ``batches`` (a list or a DataLoader, re-iterated each pass) without end."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("policy training: the batch source yielded nothing")


def poly_lr(base_lr: float, it: int, max_iters: int, power: float = 1.0, warmup: int = 0) -> float:
    """Linear warm-up, then polynomial decay to 0 (as the segmentation schedules)."""
    if it < warmup:
        return base_lr * (it + 1) / warmup
    return base_lr * (1 - (it - warmup) / max(max_iters - warmup, 1)) ** power


def train_policy(
    model: PolicyNet,
    batches: Iterable[dict],
    iters: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup: int = 0,
    bn_batches: int = 8,
    log: Callable[[str], None] | None = None,
    log_interval: int = 50,
) -> PolicyNet:
    """Train the policy net in place for ``iters`` steps (AdamW, poly schedule), then re-estimate
    its BatchNorm statistics on ``bn_batches`` further batches.

    Args:
        batches: yields ``{"image": uint8 (B,3,H,W), "mask": int64 (B,H,W)}``; cycled if it runs out.
        log: called with one progress line every ``log_interval`` iterations.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = next(model.parameters()).device
    model.to(memory_format=torch.channels_last).train()  # matches prepare()'s input layout
    stream = cycle(batches)
    start = time.perf_counter()
    for it in range(iters):
        batch = next(stream)
        inputs, masks = prepare(batch["image"].to(device), batch["mask"].to(device))
        labels = superpatch_labels(masks)  # (B, H/32, W/32)
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(lr, it, iters, warmup=warmup)
        loss = policy_loss(model(inputs), labels)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"policy training: non-finite loss {loss.item()} at iteration {it}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log is not None and ((it + 1) % log_interval == 0 or it + 1 == iters):
            log(f"iter {it + 1}/{iters} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                f"{time.perf_counter() - start:.0f}s")
    if bn_batches:
        recalibrate_bn(model, (next(stream) for _ in range(bn_batches)))
    model.eval()
    return model


@torch.no_grad()
def recalibrate_bn(model: PolicyNet, batches: Iterable[dict]) -> None:
    """Replace the BN running statistics by their exact average over ``batches`` ("precise BN").

    The exponential running average lags far behind the weights in short schedules, and eval mode
    then sees wrong statistics; a cumulative average over a few batches at the final weights fixes it.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # None = cumulative moving average
    device = next(model.parameters()).device
    model.train()
    seen = 0
    for batch in batches:
        model(prepare(batch["image"].to(device), batch["mask"].to(device))[0])
        seen += 1
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    if seen == 0:
        raise ValueError("recalibrate_bn: no batches given")


@torch.no_grad()
def evaluate_policy(model: PolicyNet, batches: Iterable[dict]) -> dict[str, float]:
    """Score the policy on held-out batches (masks are resized, nearest, to the image when they differ)."""
    model.eval()
    device = next(model.parameters()).device
    score = PolicyScore()
    for batch in batches:
        images, masks = batch["image"].to(device), batch["mask"].to(device)
        if masks.shape[-2:] != images.shape[-2:]:
            # Test pipelines resize only the image; bring the labels to the image grid.
            masks = F.interpolate(masks[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0].long()
        inputs, masks = prepare(images, masks)
        score.update(model(inputs), superpatch_labels(masks))
    return score.result()
