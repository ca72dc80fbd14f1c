"""``nn.Linear`` that runs float32 CPU inference on oneDNN instead of MKL.

Measured on the 2-thread AMD EPYC CI host (``tools/bench_kernels.py``; docs/BENCHMARKS.md, "kernel
rates"): PyTorch sends float32 ``F.linear`` to MKL's sgemm, which reaches 151-195 GFLOP/s on the ViT-B
shapes (its rate swings with the shape), while oneDNN's inner product holds 196-208 GFLOP/s, the
host's practical peak, from 222 rows (a merged ClustViT sequence) to 1025 (a full one). bfloat16 already goes to oneDNN. Same parameters and state-dict keys
as ``nn.Linear``; results differ from MKL only in summation order (about 1e-6 relative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

# Below ~8M multiply-adds oneDNN's per-call overhead (~20 us) loses to MKL (tools/bench_kernels.py:
# width 96 x 65 tokens runs 0.04 ms on MKL, 0.06 ms on oneDNN; they tie at width 192 x 65 tokens).
MIN_MACS = 1 << 23
# Module-level switch: False times PyTorch's default path (float32 on MKL) in the same process.
ONEDNN_FP32 = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    """oneDNN only for plain float32 CPU inference. Autograd, autocast, tracing, export and dispatch
    modes (FLOP counting, fake tensors) keep ``F.linear``: the oneDNN op has no backward, no ONNX or
    compile lowering we rely on, and no FLOP formula."""
    return (
        ONEDNN_FP32
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and _get_current_dispatch_mode() is None
        # Last: under export the row count is symbolic, and the checks above have already said no.
        and x.numel() // max(x.shape[-1], 1) * weight.numel() >= MIN_MACS
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN inner product, no checks (inference only). x: (..., in) -> (..., out)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` with the oneDNN fast path where it is faster and safe. x: (..., in) -> (..., out)."""
    return onednn_linear(x, weight, bias) if _use_onednn(x, weight) else F.linear(x, weight, bias)


class Linear(nn.Linear):
    """Drop-in ``nn.Linear`` (same parameters and keys) using :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
