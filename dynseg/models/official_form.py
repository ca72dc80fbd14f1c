"""The official implementation's kernels and padding, for timing it against ours in one process.

The official ClustViT runs mmseg's ViT, whose attention is torch's ``nn.MultiheadAttention`` called
through mmcv's ``MultiheadAttention`` wrapper (``batch_first=True``). The wrapper transposes query, key
and value one by one, so torch receives three distinct tensors, and it leaves ``need_weights=True``.
torch then takes its general path: three separate in-projections, explicit ``bmm`` + softmax + ``bmm``,
and the head-averaged attention map it returns beside the output. Every linear layer is ``F.linear``
(MKL on the CPU). A batch of reduced ClustViT sequences is padded to the longest one, and the padding
is masked out of attention (``key_padding_mask``).

With :data:`ENABLED` set, every :class:`~dynseg.models.vit.Block` in inference runs that way: the same
weights and the same outputs up to float rounding (tested against the reference fixtures, padded batch
included), on the official code's kernels. ``tools/benchmark.py --official-form-a`` uses it, together
with ``dynseg.models.linear.ONEDNN_FP32 = False``, so that "x times the official latency" is a ratio
measured in one run on one host, not a comparison with milliseconds measured on another.

What it does not reproduce: the official merge bookkeeping (ours is vectorised; 0.25-0.4% of
ClustViT-b's time, docs/BENCHMARKS.md), and the official batch rule that also reduces an image whose
tokens share one id (here such an image keeps its full length, as in our model). Packed sequences are padded at the
entry of every block and unpacked at its exit, which adds two small copies per block that the official
code, padding once, does not have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

# Module-level switch, like dynseg.models.linear.ONEDNN_FP32, so one process can time both forms.
ENABLED = False


def attention(attn: nn.Module, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """Self-attention through ``F.multi_head_attention_forward`` as mmcv's wrapper calls it.

    Args:
        attn: a :class:`~dynseg.models.vit.Attention` (its ``qkv`` holds torch's packed in-projection).
        x: (B, L, C).
        key_padding_mask: (B, L) bool, True where a key is padding.

    Returns:
        (B, L, C).
    """
    C = x.shape[-1]
    # Three transposes, three tensors (mmcv's batch_first handling): torch cannot see that this is
    # self-attention, so it projects q, k and v with three GEMMs instead of one.
    q, k, v = x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1)  # 3 x (L, B, C)
    out, _ = F.multi_head_attention_forward(
        q, k, v, C, attn.num_heads,
        attn.qkv.weight, attn.qkv.bias, None, None, False, 0.0,
        attn.proj.weight, attn.proj.bias,
        training=False, key_padding_mask=key_padding_mask, need_weights=True,  # mmcv never asks for False
    )
    return out.transpose(0, 1)  # (B, L, C)


def block_forward(block: nn.Module, x: Tensor, seqlens: Sequence[int] | None = None) -> Tensor:
    """A pre-norm block, official form: packed sequences run padded to the longest, with a key-padding mask.

    Args:
        block: a :class:`~dynseg.models.vit.Block` in eval mode.
        x: (B, L, C), or (1, T, C) packed with ``seqlens``.

    Returns:
        The same shape as ``x``.
    """
    mask = None
    if seqlens is not None and len(seqlens) > 1:  # equal lengths too: the images must not attend to each other
        lengths = torch.tensor(list(seqlens), device=x.device)
        x = pad_sequence(list(x[0].split(list(seqlens))), batch_first=True)  # (n, M, C), zero padding
        mask = torch.arange(x.shape[1], device=x.device)[None] >= lengths[:, None]  # (n, M)
    x = x + attention(block.attn, block.norm1(x), mask)
    x = x + block.mlp(block.norm2(x))
    if mask is not None:
        x = x[~mask][None]  # (1, T, C), the images' tokens back in packed order
    return x
