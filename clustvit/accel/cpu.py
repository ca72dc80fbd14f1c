"""CPU inference kernels, installed per module instance by :func:`clustvit.accel.accelerate`.

* :class:`OneDNNLinear`: float32 linear layers through oneDNN's inner product instead of the BLAS
  sgemm that ``F.linear`` calls (MKL), for inference-sized products.
* :class:`KernelAttention`: attention whose kernel is chosen per dtype and sequence length by the
  module's :class:`AttentionPlan`, among :data:`ATTENTION_KERNELS`: fused SDPA (the library kernel, what
  the plain model runs), :func:`per_head_attention` (two matmuls per (sequence, head) around a softmax
  whose (l, l) map stays in the last-level cache) and :func:`bmm_attention` (all heads of a sequence as
  two batched matmuls around an in-place softmax). Lengths the plan does not cover run SDPA.

Which kernel runs where is decided by :mod:`clustvit.accel.tune` (measured on the host) or pinned by the
caller; this module only provides the kernels and the class swaps (:func:`install`, :func:`uninstall`).

Both classes are subclasses that change ``forward``'s kernel only, so parameters, state-dict keys,
autograd, ``torch.compile``, export and FLOP counting see the plain module: whenever a call records
autograd, is traced, compiled, exported, runs under a dispatch mode, or is off CPU, the plain path runs.

This is the one place on the inference path that calls private torch APIs
(``torch.ops.mkldnn._linear_pointwise`` and the dispatch-mode probe; the FLOP forecast's shape-only mode,
``clustvit.bench.forecast``, is analysis); :func:`onednn_available` tells whether this torch build has them, and
:func:`install` installs nothing where it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from clustvit.models.attention import sequence_attention
from clustvit.models.vit import Attention

# Below ~8M multiply-adds a call is too short for the kernel to matter and oneDNN's per-call overhead can
# lose to the BLAS (``clustvit bench kernels``): such calls take F.linear even in a module that chose
# oneDNN, and the tuner does not time them.
MIN_MACS = 1 << 23

# The kinds :func:`install` swaps in and :func:`clustvit.accel.describe` counts.
KINDS = ("onednn_linear", "head_by_head_attention", "bmm_attention")
# Attention kernel name -> the describe() kind that counts it (sdpa, the library kernel, is no kind).
ATTENTION_KINDS = {"head_by_head": "head_by_head_attention", "bmm": "bmm_attention"}
# Dtypes an attention plan covers: float32 inference and ``accelerate(dtype=torch.bfloat16)``.
PLAN_DTYPES = (torch.float32, torch.bfloat16)
LONGEST = 1 << 30  # the upper end of a plan range that covers every length


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


def bmm_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v as two batched matmuls over the heads of one sequence at a time.

    The (h, l, l) logits are one buffer, normalised in place (one map per sequence in memory, not one per
    batch); public ATen ops only (``torch.bmm``, ``torch.softmax``). In bfloat16 the logits are rounded
    to bfloat16 before the softmax, as explicit attention under autocast does.

    Args:
        q, k, v: (n, h, l, d), any strides (typically views into one packed qkv projection).

    Returns:
        (n, h, l, d) contiguous, in q's dtype.
    """
    n, _, _, d = q.shape
    q = q * d**-0.5  # scale the (n, h, l, d) queries once rather than every (l, l) map
    out = v.new_empty(q.shape)
    for b in range(n):
        logits = torch.bmm(q[b], k[b].transpose(1, 2))  # (h, l, l)
        torch.softmax(logits, -1, out=logits)  # in place: no second (h, l, l) buffer
        torch.bmm(logits, v[b], out=out[b])  # (h, l, d)
    return out


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The library kernel, what the plain model runs: ``F.scaled_dot_product_attention``."""
    return F.scaled_dot_product_attention(q, k, v)


# Kernel name -> (n, h, l, d) q, k, v -> (n, h, l, d). "sdpa" first: the library kernel.
ATTENTION_KERNELS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "sdpa": sdpa, "head_by_head": per_head_attention, "bmm": bmm_attention,
}


def attention_candidates(dtype: torch.dtype) -> tuple[str, ...]:
    """The attention kernels that can run in ``dtype`` on this build, the library kernel first
    (float32 head by head calls oneDNN's inner product)."""
    if dtype == torch.float32 and not onednn_available():
        return ("sdpa", "bmm")
    return tuple(ATTENTION_KERNELS)


@dataclass(frozen=True)
class AttentionPlan:
    """Which attention kernel runs at which sequence length, per dtype.

    ``ranges[dtype]`` holds ``(lo, hi, kernel)`` triples, inclusive, disjoint; a (dtype, length) they do
    not cover runs ``"sdpa"`` (the library kernel).
    """

    ranges: dict[torch.dtype, tuple[tuple[int, int, str], ...]] = field(default_factory=dict)

    @classmethod
    def everywhere(cls, kernel: str) -> AttentionPlan:
        """``kernel`` at every length, in every dtype of :data:`PLAN_DTYPES` (a pin)."""
        return cls({dt: ((0, LONGEST, kernel),) for dt in PLAN_DTYPES})

    def pick(self, dtype: torch.dtype, length: int) -> str:
        """The kernel for a sequence of ``length`` tokens in ``dtype``."""
        for lo, hi, kernel in self.ranges.get(dtype, ()):
            if lo <= length <= hi:
                return kernel
        return "sdpa"

    def kernels(self) -> set[str]:
        """The non-library kernels the plan runs somewhere."""
        return {kernel for spans in self.ranges.values() for _, _, kernel in spans if kernel != "sdpa"}

    def without(self, kernels: set[str]) -> AttentionPlan:
        """The plan with ``kernels`` replaced by the library kernel."""
        return AttentionPlan({dt: tuple(s for s in spans if s[2] not in kernels) for dt, spans in self.ranges.items()})


class KernelAttention(Attention):
    """``Attention`` whose eager CPU inference runs the kernel ``self.kernel_plan`` picks for the dtype and
    sequence length (SDPA elsewhere; same parameters and keys)."""

    kernel_plan: AttentionPlan

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if eager_inference(q):
            return ATTENTION_KERNELS[self.kernel_plan.pick(q.dtype, q.shape[-2])](q, k, v)
        return super().attend(q, k, v)

    def attend_packed(self, qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int) -> Tensor:
        if not eager_inference(qkv):
            return super().attend_packed(qkv, cu_seqlens, max_seqlen)
        return sequence_attention(qkv, cu_seqlens, self.num_heads, self.attend)  # (T, C), a kernel per length



def install_linear(m: nn.Linear) -> None:
    """Make a plain ``nn.Linear`` a :class:`OneDNNLinear` (in place)."""
    m.__class__ = OneDNNLinear


def install_attention(m: Attention, plan: AttentionPlan) -> None:
    """Make a plain ``Attention`` a :class:`KernelAttention` running ``plan`` (in place); a plan of the
    library kernel only leaves it plain."""
    if not plan.kernels():
        return
    m.__class__ = KernelAttention
    m.kernel_plan = plan


def install(model: nn.Module, kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
    """Force the kernels named in ``kinds`` into every plain ``nn.Linear`` and ``Attention`` of ``model``
    (in place), at every size, whether or not they pay.

    An attention kind runs at every length and dtype; several attention kinds are dealt out to the
    attention modules in turn (module i gets ``kinds[i % n]``), so that forcing :data:`KINDS` runs every
    kernel somewhere in one model (the parity checks).

    Returns:
        How many modules each kind was installed into (all 0 where oneDNN is missing).
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kernels {sorted(unknown)}: expected some of {', '.join(KINDS)}")
    counts = dict.fromkeys(KINDS, 0)
    if not onednn_available():
        return counts
    attention = [name for name, kind in ATTENTION_KINDS.items() if kind in kinds]
    i = 0
    for m in model.modules():
        if type(m) is nn.Linear and "onednn_linear" in kinds:
            install_linear(m)
            counts["onednn_linear"] += 1
        elif type(m) is Attention and attention:
            kernel = attention[i % len(attention)]
            install_attention(m, AttentionPlan.everywhere(kernel))
            counts[ATTENTION_KINDS[kernel]] += 1
            i += 1
    return counts


def uninstall(model: nn.Module, kinds: tuple[str, ...] = KINDS) -> None:
    """Take the kernels of ``kinds`` out of the modules :func:`install` swapped (in place): linears get
    their plain class back; attention plans lose those kernels, and a plan left with the library kernel
    only gives the module its plain class back."""
    drop = {name for name, kind in ATTENTION_KINDS.items() if kind in kinds}
    for m in model.modules():
        if type(m) is OneDNNLinear and "onednn_linear" in kinds:
            m.__class__ = nn.Linear
        elif type(m) is KernelAttention and drop:
            plan = m.kernel_plan.without(drop)
            if plan.kernels():
                m.kernel_plan = plan
            else:
                m.__class__ = Attention
                del m.kernel_plan


def kernel_counts(model: nn.Module) -> dict[str, int]:
    """How many modules of ``model`` run each kind of :data:`KINDS` (an attention module counts once for
    every kernel its plan runs somewhere)."""
    counts = dict.fromkeys(KINDS, 0)
    for m in model.modules():
        if type(m) is OneDNNLinear:
            counts["onednn_linear"] += 1
        elif type(m) is KernelAttention:
            for kernel in m.kernel_plan.kernels():
                counts[ATTENTION_KINDS[kernel]] += 1
    return counts
