"""``nn.Linear`` that runs CPU inference on oneDNN, optionally on pre-reordered (prepacked) weights.

Measured on the 2-thread AMD EPYC CI hosts (``tools/bench_kernels.py``; docs/BENCHMARKS.md, "kernel
rates"): PyTorch sends float32 ``F.linear`` to MKL's sgemm, which reaches 151-214 GFLOP/s on the ViT-B
shapes on both hosts seen so far, while oneDNN's inner product holds the host's practical peak from
222 rows (a merged ClustViT sequence) to 1025 (a full one): 196-221 GFLOP/s on host A (1.04-1.32x
MKL), 445-464 on host B (2.1-2.3x MKL). bfloat16 already goes to oneDNN. Either way oneDNN
reorders the weight into its blocked layout on every call; :func:`prepack` keeps a reordered copy
instead. Same parameters and state-dict keys as ``nn.Linear``; float32 results differ from MKL only
in summation order (about 1e-6 relative), and prepacked results equal unpacked ones bitwise.
"""

from __future__ import annotations

import os
import weakref
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

# Below ~8M multiply-adds oneDNN's per-call overhead (~20 us) loses to MKL (tools/bench_kernels.py:
# width 96 x 65 tokens runs 0.04 ms on MKL, 0.06 ms on oneDNN; they tie at width 192 x 65 tokens).
MIN_MACS = 1 << 23
# This torch build has oneDNN's inner product (the op every oneDNN path here calls).
HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# Module-level switch: False times PyTorch's default path (float32 on MKL) in the same process.
ONEDNN_FP32 = HAS_ONEDNN_LINEAR
CAN_PREPACK = HAS_ONEDNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _plain_cpu_inference(x: Tensor, weight: Tensor) -> bool:
    """CPU, no autograd, no tracing, export or dispatch mode (FLOP counting, fake tensors), and big
    enough: the oneDNN op has no backward, no ONNX or compile lowering we rely on, no FLOP formula."""
    return (
        x.device.type == "cpu"
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and _get_current_dispatch_mode() is None
        # Last: under export the row count is symbolic, and the checks above have already said no.
        and x.numel() // max(x.shape[-1], 1) * weight.numel() >= MIN_MACS
    )


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    """oneDNN instead of MKL: float32 inference outside autocast."""
    return (
        ONEDNN_FP32
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and _plain_cpu_inference(x, weight)
    )


def _use_packed_bf16(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """bf16 autocast inference on weights already cast to bf16 (``models.amp.cast_for_amp_inference``).
    Asked only of prepacked layers, so oneDNN is there."""
    return (
        weight.dtype == torch.bfloat16
        and (bias is None or bias.dtype == torch.bfloat16)
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and _plain_cpu_inference(x, weight)
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN inner product, no checks (inference only). x: (..., in) -> (..., out)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


class Linear(nn.Linear):
    """Drop-in ``nn.Linear`` (same parameters and keys): ``F.linear``, except float32 CPU inference,
    which runs on oneDNN where that is faster and safe (:func:`_use_onednn`).

    After :func:`prepack` it runs float32 and bf16-autocast CPU inference on a pre-reordered weight.
    """

    prepacked: bool = False

    def forward(self, x: Tensor) -> Tensor:
        # Weights made under torch.inference_mode have no version counter to tell a stale copy by.
        packed = self.prepacked and CAN_PREPACK and not self.weight.is_inference()
        if packed and _use_packed_bf16(x, self.weight, self.bias):
            # What autocast does (x to bf16, oneDNN on the bf16 weight), minus the reorder: same bits.
            return onednn_linear(x.to(torch.bfloat16), packed_weight(self), self.bias)
        if not _use_onednn(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        return onednn_linear(x, packed_weight(self) if packed else self.weight, self.bias)


# Module -> ((weight, its version, data pointer, dtype), blocked weight), the weight held weakly.
# Kept outside the module so that state_dict, deepcopy and pickling never see the opaque oneDNN
# tensor, and freed with the module.
_PACKED: WeakKeyDictionary[Linear, tuple[tuple, Tensor]] = WeakKeyDictionary()
# The row count oneDNN picks the blocked layout for: about one 512² image's tokens. Results do not
# depend on it from 7 rows up (bitwise, measured); 1-row products may differ in the last bit.
PACK_ROWS = 1024


def reorder_weight(w: Tensor) -> Tensor:
    """(out, in) weight -> oneDNN's blocked layout for :func:`onednn_linear` (an opaque tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(w, PACK_ROWS)


def packed_weight(m: Linear) -> Tensor:
    """``m.weight`` reordered into oneDNN's blocked layout, packed again whenever the weight changed:
    in place (``load_state_dict``, an optimizer step bump its version), moved (``.to()``, ``.data =``)
    or replaced by another tensor (even one that reuses the freed memory of the packed one)."""
    w = m.weight
    hit = _PACKED.get(m)
    if hit is None or hit[0][0]() is not w or hit[0][1:] != (w._version, w.data_ptr(), w.dtype):
        key = (weakref.ref(w), w._version, w.data_ptr(), w.dtype)
        hit = (key, reorder_weight(w.detach()))
        _PACKED[m] = hit
    return hit[1]


def prepack(model: nn.Module) -> int:
    """Run every :class:`Linear` of ``model`` on a pre-reordered weight in CPU inference.

    Measured on the 2-thread CI hosts (docs/BENCHMARKS.md): ViT-b 2-5% (float32) and 6-13% (bf16) faster
    per image, ClustViT-b 4-9%, logits bitwise identical. Costs one more copy of the linear weights (float32
    Segmenter ViT-b: +384 MiB resident), made on the first call that uses it; training, export and
    FLOP counting never use it. ``DYNSEG_NO_PREPACK=1`` turns it off. Returns the number of layers
    marked (0 where oneDNN cannot prepack, or when turned off).

    Changes made behind autograd's version counter (through ``weight.data`` or a numpy view of the
    same memory) are not seen: change weights with ``load_state_dict`` or under ``torch.no_grad()``,
    or do not prepack a model whose weights change that way.
    """
    if not CAN_PREPACK or os.environ.get("DYNSEG_NO_PREPACK"):
        return 0
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    for m in layers:
        m.prepacked = True
    return len(layers)
