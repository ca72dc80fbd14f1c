"""Attention over packed variable-length sequences, as one operation.

ClustViT's reduced sequences have different lengths per image. They are packed along one token axis
(no padding in the linear layers) and described by ``cu_seqlens``, an int tensor of cumulative offsets
``[0, l_0, l_0 + l_1, ..., T]``; sequences never attend to each other.

:func:`packed_attention` takes the packed ``(T, 3C)`` qkv projection and the offsets *as a tensor*, so
that no Python list of lengths (a host synchronisation on a GPU) is needed. Its upper bound on a
sequence's length, ``max_seqlen``, is known without the data (``1 + N + K`` for ClustViT).

Per device (one ``torch.library`` custom op, so ``torch.compile`` sees a single opaque op):

* CPU: one ``F.scaled_dot_product_attention`` per sequence (the offsets are read on the host, where
  that costs nothing); sequences of equal length run as one batch. Traced by ``torch.compile`` with
  autograd recording (compiled training), it pads instead, as below, so no graph depends on the lengths.
* CUDA, float16 / bfloat16: PyTorch's fused variable-length kernel
  (``torch.nn.attention.varlen.varlen_attn``) where this torch has it;
* anything else (CUDA float32, older torch): :func:`padded_attention`, every sequence padded to
  ``max_seqlen`` with the padding masked out, entirely on the device.

With autograd recording the same choice runs inline, as differentiable PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def split_heads(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(..., L, 3C) packed projection (``nn.MultiheadAttention`` order) -> q, k, v (..., h, L, d) views."""
    *lead, L, C3 = qkv.shape
    d = C3 // (3 * num_heads)
    q, k, v = qkv.reshape(*lead, L, 3, num_heads, d).movedim(-3, 0).transpose(-2, -3)
    return q, k, v


def merge_heads(out: Tensor) -> Tensor:
    """(..., h, L, d) -> (..., L, h*d)."""
    return out.transpose(-2, -3).flatten(-2)


def token_positions(cu_seqlens: Tensor, total: int) -> tuple[Tensor, Tensor]:
    """Sequence index and position inside it of every packed token.

    Args:
        cu_seqlens: (n+1,) cumulative offsets.
        total: T, the packed length.

    Returns:
        seq (T,) and pos (T,), int64.
    """
    t = torch.arange(total, device=cu_seqlens.device)
    seq = torch.searchsorted(cu_seqlens[1:].to(torch.long), t, right=True)  # (T,)
    return seq, t - cu_seqlens.to(torch.long)[seq]


def padded_attention(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, num_heads: int) -> Tensor:
    """Packed attention by padding every sequence to ``max_seqlen`` (keys masked): no host sync.

    Args:
        qkv: (T, 3C).
        cu_seqlens: (n+1,) int offsets, ``cu_seqlens[-1] == T``.
        max_seqlen: an upper bound on every sequence's length.

    Returns:
        (T, C).
    """
    T, C3 = qkv.shape
    n = cu_seqlens.shape[0] - 1
    seq, pos = token_positions(cu_seqlens, T)
    padded = qkv.new_zeros(n, max_seqlen, C3).index_put((seq, pos), qkv)  # (n, M, 3C)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.long)  # (n,)
    valid = torch.arange(max_seqlen, device=qkv.device) < lengths[:, None]  # (n, M)
    q, k, v = split_heads(padded, num_heads)  # 3 x (n, h, M, d)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])  # (n, h, M, d)
    return merge_heads(out)[seq, pos]  # (T, C)


def sequence_attention(
    qkv: Tensor, cu_seqlens: Tensor, num_heads: int,
    attend: Callable[[Tensor, Tensor, Tensor], Tensor] = F.scaled_dot_product_attention,
) -> Tensor:
    """Packed attention one sequence at a time, the offsets read on the host: (T, 3C) -> (T, C).

    ``attend`` maps (n, h, l, d) q, k, v to (n, h, l, d) (default: SDPA; ``clustvit.accel`` passes its own).
    """
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    if len(set(lengths)) == 1:  # equal lengths reshape to a batch for free
        q, k, v = split_heads(qkv.reshape(len(lengths), lengths[0], -1), num_heads)  # 3 x (n, h, l, d)
        return merge_heads(attend(q, k, v)).reshape(qkv.shape[0], -1)
    return torch.cat([merge_heads(attend(*split_heads(part[None], num_heads)))[0] for part in qkv.split(lengths)])


def packed_attention_impl(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, num_heads: int) -> Tensor:
    """The per-device choice of :func:`packed_attention` (differentiable PyTorch on every path)."""
    if qkv.device.type == "cpu" and not torch.compiler.is_compiling():  # traced: lengths would specialise
        return sequence_attention(qkv, cu_seqlens, num_heads)  # the offsets are in host memory: no sync
    varlen_attn = _varlen_attn() if qkv.dtype in (torch.float16, torch.bfloat16) else None
    if qkv.device.type != "cuda" or varlen_attn is None:
        return padded_attention(qkv, cu_seqlens, max_seqlen, num_heads)
    return varlen_packed_attention(qkv, cu_seqlens, max_seqlen, num_heads, varlen_attn)


def varlen_packed_attention(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, num_heads: int,
                            varlen_attn: Callable[..., Tensor]) -> Tensor:
    """Packed attention through a kernel with ``torch.nn.attention.varlen.varlen_attn``'s interface.

    ``varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k)`` takes (T, h, d) q, k, v and int32 offsets and
    returns (T, h, d); q, k and v are strided views of ``qkv`` (last dimension contiguous), no copies.
    (T, 3C) -> (T, C).
    """
    T, C3 = qkv.shape
    q, k, v = qkv.view(T, 3, num_heads, C3 // (3 * num_heads)).unbind(1)  # 3 x (T, h, d)
    cu = cu_seqlens.to(torch.int32)
    return varlen_attn(q, k, v, cu, cu, max_seqlen, max_seqlen).reshape(T, C3 // 3)  # (T, C)


def _varlen_attn():
    """PyTorch's fused variable-length attention (torch >= 2.10), or None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@torch.library.custom_op("clustvit::packed_attention", mutates_args=())
def _packed_attention_op(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, num_heads: int) -> Tensor:
    return packed_attention_impl(qkv, cu_seqlens, max_seqlen, num_heads)


@_packed_attention_op.register_fake
def _packed_attention_fake(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, num_heads: int) -> Tensor:
    return qkv.new_empty(qkv.shape[0], qkv.shape[1] // 3)


def packed_attention(qkv: Tensor, cu_seqlens: Tensor, max_seqlen: int, num_heads: int) -> Tensor:
    """Self-attention of packed sequences that never attend to each other.

    Inference calls one custom op (opaque to ``torch.compile``, so the CPU path's host-side read of
    the offsets is no graph break); with autograd recording, its differentiable body runs inline.

    Args:
        qkv: (T, 3C) packed in-projection (q, k, v, each head-major as ``nn.MultiheadAttention``).
        cu_seqlens: (n+1,) integer offsets of the n sequences along T (0 first, T last).
        max_seqlen: upper bound on any sequence's length (need not be tight).
        num_heads: h.

    Returns:
        (T, C), in qkv's dtype.
    """
    if torch.is_grad_enabled() and qkv.requires_grad:
        return packed_attention_impl(qkv, cu_seqlens, max_seqlen, num_heads)
    return _packed_attention_op(qkv, cu_seqlens, max_seqlen, num_heads)
