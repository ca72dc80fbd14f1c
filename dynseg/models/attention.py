"""Scaled dot-product attention, with a faster bfloat16 CPU inference path.

PyTorch's fused CPU kernel runs no faster in bfloat16 than in float32 (123-148 GFLOP/s at 1025 tokens
on this project's 2-thread CI host), while a oneDNN bfloat16 matmul runs at 400+. So bfloat16
inference on the CPU computes attention head by head, as two oneDNN matmuls around a softmax whose
(l, l) map fits in the last-level cache: 1.2x the fused kernel at 257 tokens, 1.5-1.7x from 385 to
2049 (``tools/bench_kernels.py``; docs/BENCHMARKS.md). Shorter sequences (ClustViT's merged ones) and
longer ones (whose map no longer fits in that cache: 0.8-0.9x at 4097) keep the fused kernel, and
so do float32, autograd, GPUs and compiled or exported graphs.

The price: the logits are rounded to bfloat16 before the softmax, as in explicit attention under
autocast (the official implementation's form). That doubles the attention output's deviation from a
float64 reference; through a trained model the predictions agree with float32 as often as the fused
kernel's do (docs/BENCHMARKS.md, "Numerics"). ``DYNSEG_FUSED_ATTENTION=1`` keeps the fused kernel.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

# Sequence lengths (inclusive) where head-by-head bfloat16 attention beats the fused CPU kernel
# (two sweeps: 0.7x at 129 tokens, 1.2x at 257, 1.5-1.7x from 385 to 2049, 0.8-0.9x at 4097).
PER_HEAD_MIN_LEN, PER_HEAD_MAX_LEN = 256, 2048
# Module-level switch (False: the fused kernel everywhere), so one process can time both paths.
PER_HEAD_BF16 = os.environ.get("DYNSEG_FUSED_ATTENTION") != "1"


def _per_head_applies(q: Tensor) -> bool:
    """bfloat16 CPU inference in eager mode (no autograd, tracing, compile, export or dispatch mode)."""
    return (
        PER_HEAD_BF16
        and q.dtype == torch.bfloat16
        and q.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and _get_current_dispatch_mode() is None
        # Last: under export the length is symbolic, and the checks above have already said no.
        and PER_HEAD_MIN_LEN <= q.shape[-2] <= PER_HEAD_MAX_LEN
    )


def per_head_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v one (sequence, head) pair at a time.

    Args:
        q, k, v: (n, h, l, d), any strides (typically views into one packed qkv projection).

    Returns:
        (n, h, l, d) contiguous, in q's dtype.
    """
    n, h, _, d = q.shape
    q = q * d**-0.5  # scale once, on the (n, h, l, d) queries rather than on every (l, l) map
    out = v.new_empty(q.shape)
    for b in range(n):
        for i in range(h):
            logits = q[b, i] @ k[b, i].transpose(0, 1)  # (l, l)
            torch.matmul(logits.softmax(-1), v[b, i], out=out[b, i])  # (l, d)
    return out


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Multi-head attention without a mask: (n, h, l, d) q, k, v -> (n, h, l, d)."""
    if _per_head_applies(q):
        return per_head_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)
