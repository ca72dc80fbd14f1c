"""Mixed-precision inference: store matmul weights in the autocast dtype once, not once per forward."""

from __future__ import annotations

import sys

import torch
from torch import nn

from clustvit.accel.cpu import native_bf16


def amp_dtype(device: torch.device | str, cuda_bf16: bool | None = None) -> torch.dtype:
    """The ``--amp`` dtype, one rule for training, evaluation, prediction and the timing tools.

    bfloat16 (the float32 exponent range: no overflow, no loss scaling), except on a CUDA GPU without
    bfloat16 (before Ampere), which gets float16 (training then scales the loss). ``cuda_bf16``
    replaces the device query (tests).
    """
    if torch.device(device).type != "cuda":
        return torch.bfloat16
    supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
    return torch.bfloat16 if supported else torch.float16


def warn_if_emulated(device: torch.device | str) -> bool:
    """Print one line to stderr if ``--amp`` on ``device`` would run emulated bfloat16 (a CPU without
    bf16 instructions, where it is several times slower than float32); returns whether it did."""

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
