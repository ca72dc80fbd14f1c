"""Mixed-precision inference: store matmul weights in the autocast dtype once, not once per forward."""

from __future__ import annotations

import torch
from torch import nn

from .linear import prepack


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on CPU (avx512_bf16 / AMX kernels), float16 on CUDA."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def cast_for_amp_inference(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Cast Linear/Conv weights to ``dtype`` in place; norms, embeddings and buffers stay float32.

    Autocast casts every float32 weight to the low-precision dtype on *every* forward: for ViT-B that
    is 86M parameters copied per image, 43% of a bf16 forward on CPU. Weights that are already in the
    autocast dtype are used as they are. Run the model under ``torch.autocast`` afterwards (inference
    only: training keeps float32 master weights).
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.to(dtype)
    return model


def prepare_for_inference(model: nn.Module, amp_dtype: torch.dtype | None = None) -> nn.Module:
    """The inference-only weight layout every inference entry point uses: matmul weights cast once to
    ``amp_dtype`` (when given) and CPU linears prepacked (``models.linear.prepack``). In place."""
    if amp_dtype is not None:
        cast_for_amp_inference(model, amp_dtype)
    prepack(model)
    return model
