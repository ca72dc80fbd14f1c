"""CPU inference kernels on oneDNN, installed per module instance by :func:`clustvit.accel.accelerate`.

* :class:`OneDNNLinear`: float32 linear layers through oneDNN's inner product instead of the BLAS
  sgemm that ``F.linear`` calls (MKL), for inference-sized products.
* :class:`HeadByHeadAttention`: full-length attention as two matmuls per (sequence, head) around a
  softmax whose (l, l) map stays in the last-level cache, in float32 (oneDNN inner products) and
  bfloat16 (``torch.matmul``, itself on oneDNN), within :data:`PER_HEAD_RANGE` tokens; installed by
  default only where ATen runs AVX-512 code (:func:`default_kernels`).

Both are subclasses that change ``forward``'s kernel only, so parameters, state-dict keys, autograd,
``torch.compile``, export and FLOP counting see the plain module: whenever a call records autograd,
is traced, compiled, exported, runs under a dispatch mode, or is off CPU, the plain path runs.
docs/BENCHMARKS.md says what each buys on a measured host (``tools/bench_kernels.py``).

This is the one place that calls private torch APIs (``torch.ops.mkldnn._linear_pointwise`` and the
dispatch-mode probe); :func:`onednn_available` tells whether this torch build has them, and
:func:`install` installs nothing where it does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from clustvit.models.attention import sequence_attention
from clustvit.models.vit import Attention

# Below ~8M multiply-adds oneDNN's per-call overhead loses to the BLAS (tools/bench_kernels.py).
MIN_MACS = 1 << 23
# Sequence lengths (inclusive) where head by head beats the fused CPU kernel, per dtype
# (``tools/bench_kernels.py --tokens ...`` sweeps; docs/BENCHMARKS.md).
PER_HEAD_RANGE: dict[torch.dtype, tuple[int, int]] = {torch.bfloat16: (256, 2048), torch.float32: (385, 2048)}


KINDS = ("onednn_linear", "head_by_head_attention")


def default_kernels() -> tuple[str, ...]:
    """The kernels that pay on this CPU, as measured (docs/BENCHMARKS.md): oneDNN linears wherever
    oneDNN is; head-by-head attention only where ATen runs AVX-512 code (on an AVX2 host the fused
    kernel was faster)."""
    wide = torch.backends.cpu.get_cpu_capability() == "AVX512"
    return ("onednn_linear", "head_by_head_attention") if wide else ("onednn_linear",)


def native_bf16() -> bool:
    """oneDNN has bfloat16 kernels for this CPU (else bfloat16 matmuls are emulated, several times
    slower than float32)."""
    return onednn_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def onednn_available() -> bool:
    """This torch build has oneDNN and the inner-product op the kernels here call."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def eager_inference(x: Tensor) -> bool:
    """CPU, no autograd recording, nothing tracing or intercepting the call (compile, export, ONNX,
    jit, dispatch modes such as FLOP counting): where a private op is safe and invisible."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and _get_current_dispatch_mode() is None
    )


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """oneDNN inner product, no checks (inference only). x: (..., in) -> (..., out)."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose float32 eager CPU inference runs on oneDNN (same parameters and keys)."""

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.dtype == self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and eager_inference(x)
            and x.numel() // max(x.shape[-1], 1) * self.weight.numel() >= MIN_MACS
        ):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def per_head_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v one (sequence, head) pair at a time.

    float32 runs its two matmuls as oneDNN inner products (q k^T is q against k as weights; p v is p
    against v^T); bfloat16 through ``torch.matmul``, which already goes to oneDNN. In bfloat16 the
    logits are rounded to bfloat16 before the softmax, as explicit attention under autocast does.

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


class HeadByHeadAttention(Attention):
    """``Attention`` whose eager CPU inference runs head by head at the lengths of :data:`PER_HEAD_RANGE`."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        span = PER_HEAD_RANGE.get(q.dtype)
        if span is not None and eager_inference(q) and span[0] <= q.shape[-2] <= span[1]:
            return per_head_attention(q, k, v)
        return super().attend(q, k, v)

    def attend_packed(self, qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        if not eager_inference(qkv):
            return super().attend_packed(qkv, cu_seqlens, max_seqlen)
        return sequence_attention(qkv, cu_seqlens, self.num_heads, self.attend)  # (T, C), head by head per length


def install(model: nn.Module, kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
    """Swap the class of every plain ``nn.Linear`` and ``Attention`` in ``model`` (in place), for the
    kernels named in ``kinds``.

    Returns:
        How many modules each kernel was installed into (all 0 where oneDNN is missing).
    """
    counts = {"onednn_linear": 0, "head_by_head_attention": 0}
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kernels {sorted(unknown)}: expected some of {', '.join(KINDS)}")
    if not onednn_available():
        return counts
    for m in model.modules():
        if type(m) is nn.Linear and "onednn_linear" in kinds:
            m.__class__ = OneDNNLinear
            counts["onednn_linear"] += 1
        elif type(m) is Attention and "head_by_head_attention" in kinds:
            m.__class__ = HeadByHeadAttention
            counts["head_by_head_attention"] += 1
    return counts


def uninstall(model: nn.Module, kinds: tuple[str, ...] = KINDS) -> None:
    """Give the modules :func:`install` swapped their plain class back (those of ``kinds``; in place)."""
    for m in model.modules():
        if type(m) is OneDNNLinear and "onednn_linear" in kinds:
            m.__class__ = nn.Linear
        elif type(m) is HeadByHeadAttention and "head_by_head_attention" in kinds:
            m.__class__ = Attention
