"""FLOP counting with ``torch.utils.flop_counter.FlopCounterMode``, attention included.

What counts, and why (this reproduces the paper's tables, which the official code measured with
``torch.profiler(with_flops=True)`` on a model with explicit-bmm attention):

* matmuls, linear layers, convolutions and attention: 2 FLOPs per multiply-add. FlopCounterMode already
  counts 2 per MAC for mm/addmm/bmm/conv; attention (QK^T and AV, 2 x 2·B·heads·Lq·Lk·d) is counted
  by registering a formula for the fused SDPA kernels, including the CPU one that FlopCounterMode
  knows nothing about (``aten._scaled_dot_product_flash_attention_for_cpu``).
* out-of-place ``add`` and ``mul``: one FLOP per element of the first operand (what the profiler
  counts; residual adds, the position embedding). Worth 0.03 of the 252.33 GFLOPs of Segmenter ViT-B,
  so it only matters for matching the printed digits. ``count_elementwise=False`` drops it.
* packed variable-length attention (``clustvit.packed_attention``): every sequence's QK^T and AV, as SDPA.
* nothing else (norms, softmax, GELU, resizes, divisions are free), as in the paper; ClustViT's
  cluster means are a one-hot matmul here (counted: 2·K·L·C per image, 0.005 GFLOPs for ViT-B at 512²)
  where the official code's scatter counts none.

The paper's figures (512², batch 1), ours in brackets: Segmenter ViT-B 252.33 with the official 9-class
SUIM head (252.32), 252.07 with 3 classes (252.06), 258.62 with 150 (258.61); UPerNet ViT-B, channels
768, 3 classes 348.23 (348.22). The 0.01 left is the official attention's explicit ``q * scale``
multiply, which the fused SDPA kernel does not dispatch. Which ops the elementwise part sees depends on
how they are dispatched (e.g. a linear layer on a strided 3-D input, or on the meta device, adds its bias
separately: +1 FLOP per output element); the matmul part does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import clustvit.models.attention  # noqa: F401  (registers the clustvit.packed_attention op counted below)

aten = torch.ops.aten


def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """2 x MACs of softmax(QK^T) V for (B, heads, L, d) query/key/value shapes."""
    return sdpa_flop_count(query, key, value)


def _packed_attention_flops(qkv: Any, cu_seqlens: Any, max_seqlen: int, num_heads: int, *args: Any,
                            out_val: Any = None, **kwargs: Any) -> int:
    """``clustvit.packed_attention``: each packed sequence's QK^T and AV, 4 * l^2 * C FLOPs (as SDPA's count).

    Its cost depends on the sequence lengths, so it reads the offsets (``_get_raw``: FlopCounterMode then
    passes the tensors themselves instead of their shapes).
    """
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return int(4 * (lengths * lengths).sum().item() * (qkv.shape[1] // 3))


_packed_attention_flops._get_raw = True  # type: ignore[attr-defined]


def _pointwise_flops(self_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """One FLOP per element of the first operand (torch.profiler's rule for add/mul)."""
    return math.prod(self_shape) if isinstance(self_shape, torch.Size | tuple | list) else 1


def _attention_ops() -> list[Any]:
    """Packets of the fused SDPA kernels in this torch build (CPU flash, CUDA flash/efficient/cuDNN)."""
    names = [
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
    ]
    # The math kernel needs no formula: it is composite, and FlopCounterMode counts its bmm's.
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def flop_formulas(count_elementwise: bool = True) -> dict[Any, Callable[..., int]]:
    """Extra formulas for ``FlopCounterMode(custom_mapping=...)``: attention, and optionally add/mul."""
    formulas: dict[Any, Callable[..., int]] = {op: _sdpa_flops for op in _attention_ops()}
    formulas[torch.ops.clustvit.packed_attention] = _packed_attention_flops  # registered by clustvit.models.attention
    if count_elementwise:
        # Keys are op packets (FlopCounterMode looks ops up that way): every overload of add / mul,
        # but not the in-place add_ / mul_, which the profiler does not count either.
        formulas[aten.add] = _pointwise_flops
        formulas[aten.mul] = _pointwise_flops
    return formulas


def count_flops(
    fn: Callable[..., Any], *args: Any, count_elementwise: bool = True, **kwargs: Any
) -> tuple[int, dict[str, dict[str, int]]]:
    """Run ``fn(*args, **kwargs)`` once under no_grad and count its FLOPs (2 x MACs, attention included).

    Args:
        fn: the callable to measure (a module, or e.g. ``seg.predict_logits``).
        *args, **kwargs: passed to ``fn``.
        count_elementwise: also count out-of-place add/mul, one per element (the paper's convention).

    Returns:
        (total FLOPs, {"by_op": {op name: FLOPs}, "by_module": {dotted module path: FLOPs}}). Module
        paths are hierarchical (a parent includes its children), rooted at the outermost module's class
        name, e.g. ``"Segmentor.backbone.blocks.3"``.
    """
    counter = FlopCounterMode(display=False, custom_mapping=flop_formulas(count_elementwise))
    with counter, torch.no_grad():
        fn(*args, **kwargs)
    counts = counter.get_flop_counts()
    by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items() if n}
    by_module = {name: int(sum(ops.values())) for name, ops in counts.items() if name != "Global"}
    return int(counter.get_total_flops()), {"by_op": by_op, "by_module": by_module}
