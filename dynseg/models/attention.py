"""Scaled dot-product attention, with faster CPU inference paths for full-length sequences.

PyTorch's fused CPU kernel runs its matmuls through the BLAS (MKL for float32) and reaches 156-181
GFLOP/s at 1025 tokens in float32, and no more in bfloat16, on this project's 2-thread CI hosts, while
oneDNN's matmuls run at the host's peak (float32 218-490 GFLOP/s, bfloat16 twice that, depending on
the host). So CPU inference computes attention head by head, as two oneDNN matmuls around a softmax
whose (l, l) map fits in the last-level cache, where that was measured to be faster
(``tools/bench_kernels.py --tokens ...``; docs/BENCHMARKS.md):

* bfloat16, 256-2048 tokens: 1.2-1.6x the fused kernel at 257 tokens, 1.5-2.7x from 385 to 2049;
* float32, 385-2048 tokens: 1.3x at 385, 1.4-1.5x from 513 to 2049 (1.0x at 257; 0.5x at 3073, where
  a head's 38 MB float32 map outgrows the 32 MB last-level cache).

Shorter sequences (ClustViT's merged ones) and longer ones keep the fused kernel, and so do autograd,
GPUs and compiled or exported graphs.

Numerics: float32 head by head is exact softmax attention in float32, as close to a float64 reference
as the fused kernel (tested). In bfloat16 the logits are rounded to bfloat16 before the softmax, as in
explicit attention under autocast (the official implementation's form); that doubles the attention
output's deviation from a float64 reference, and through a trained model the predictions agree with
float32 as often as the fused kernel's do (docs/BENCHMARKS.md, "Numerics").
``DYNSEG_FUSED_ATTENTION=1`` keeps the fused kernel everywhere.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .linear import HAS_ONEDNN_LINEAR, onednn_linear

# Sequence lengths (inclusive) where head by head beats the fused CPU kernel, per dtype (sweeps of
# tools/bench_kernels.py --tokens on two hosts: bfloat16 0.7x at 129 tokens, 1.2-1.6x at 257, 1.5-2.7x
# from 385 to 2049, 0.8-0.9x at 4097 on the slower host; float32 1.0x at 257, 1.3x at 385, 1.4-1.5x
# from 513 to 2049, 0.5x at 3073).
PER_HEAD_RANGE: dict[torch.dtype, tuple[int, int]] = {torch.bfloat16: (256, 2048)}
if HAS_ONEDNN_LINEAR:  # float32 needs oneDNN's matmul: torch.matmul sends float32 to MKL, no faster than fused
    PER_HEAD_RANGE[torch.float32] = (385, 2048)
# Module-level switch (False: the fused kernel everywhere), so one process can time both paths.
PER_HEAD = os.environ.get("DYNSEG_FUSED_ATTENTION") != "1"


def _per_head_applies(q: Tensor) -> bool:
    """CPU inference in eager mode (no autograd, autocast of float32, tracing, compile, export or
    dispatch mode) at a length where head by head is faster for q's dtype."""
    span = PER_HEAD_RANGE.get(q.dtype)
    return (
        PER_HEAD
        and span is not None
        and q.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not (q.dtype == torch.float32 and torch.is_autocast_enabled("cpu"))
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and _get_current_dispatch_mode() is None
        # Last: under export the length is symbolic, and the checks above have already said no.
        and span[0] <= q.shape[-2] <= span[1]
    )


def per_head_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v one (sequence, head) pair at a time.

    float32 runs its two matmuls as oneDNN inner products (q k^T is q against k as weights; p v is p
    against v^T); bfloat16 through ``torch.matmul``, which already goes to oneDNN.

    Args:
        q, k, v: (n, h, l, d), any strides (typically views into one packed qkv projection).

    Returns:
        (n, h, l, d) contiguous, in q's dtype.
    """
    n, h, _, d = q.shape
    q = q * d**-0.5  # scale once, on the (n, h, l, d) queries rather than on every (l, l) map
    out = v.new_empty(q.shape)
    if q.dtype == torch.float32:
        k, vt = k.contiguous(), v.transpose(-1, -2).contiguous()  # oneDNN weights: (l, d) and (d, l) rows
        for b in range(n):
            for i in range(h):
                logits = onednn_linear(q[b, i], k[b, i])  # (l, l)
                out[b, i] = onednn_linear(logits.softmax(-1), vt[b, i])  # (l, d)
        return out
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
