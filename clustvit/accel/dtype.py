"""Mixed-precision inference: store matmul weights in the autocast dtype once, not once per forward."""

from __future__ import annotations

import sys

import torch
from torch import nn


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The ``--amp`` dtype: bfloat16 on CPU (avx512_bf16 / AMX kernels), float16 on CUDA."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def warn_if_emulated(device: torch.device | str) -> bool:
    """Print one line to stderr if ``--amp`` on ``device`` would run emulated bfloat16 (a CPU without
    bf16 instructions, where it is several times slower than float32); returns whether it did."""
    from clustvit.accel.cpu import native_bf16

    if torch.device(device).type != "cpu" or native_bf16():
        return False
    print(f"clustvit: warning: this CPU has no bfloat16 instructions ({torch.backends.cpu.get_cpu_capability()}): "
          "--amp runs emulated, several times slower than float32 here", file=sys.stderr)
    return True


def cast_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast Linear/Conv weights to ``dtype`` in place; norms, embeddings and buffers stay float32.

    Autocast casts every float32 weight to the low-precision dtype on *every* forward (for ViT-B, 86M
    parameters copied per image); weights already in the autocast dtype are used as they are. Run the
    model under ``torch.autocast`` afterwards (inference only: training keeps float32 master weights).
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.to(dtype)
    return model
