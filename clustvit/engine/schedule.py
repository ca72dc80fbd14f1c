"""The learning-rate curve, precomputed once for the whole run and indexed by iteration."""

from __future__ import annotations

import torch
from torch import Tensor


def poly_lr_curve(base_lr: float, max_iters: int, power: float = 0.9, min_lr: float = 1e-4,
                  warmup_iters: int = 0) -> Tensor:
    """Poly decay (mmseg ``PolyLR`` with ``eta_min``), optionally after a linear warm-up.

    ``lr[i] = (base_lr - min_lr) * (1 - i / max_iters) ** power + min_lr`` for iteration ``i``
    (0-based: the lr used by the i-th optimizer step). With the official 160k schedule the lr goes
    from 1e-3 at step 0 to ~1.0e-4 at step 159999.

    Args:
        base_lr: lr at iteration 0 (after warm-up).
        max_iters: number of iterations.
        power: decay exponent.
        min_lr: the floor the curve decays to.
        warmup_iters: iterations of linear warm-up from 0 to the poly value (0 = none).

    Returns:
        (max_iters,) float64 learning rates.
    """
    it = torch.arange(max_iters, dtype=torch.float64)
    lr = (base_lr - min_lr) * (1.0 - it / max_iters) ** power + min_lr  # (max_iters,)
    if warmup_iters > 0:
        ramp = torch.clamp((it + 1) / warmup_iters, max=1.0)
        lr = lr * ramp
    return lr
