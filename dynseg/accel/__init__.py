"""Faster kernels for a *built* model: ``accelerate(model, device, dtype)``.

The model files (``dynseg/models/``) are plain PyTorch. This optional layer swaps in a device's faster
kernels per instance, keeping every parameter and state-dict key. Inference entry points call it by
default; training never needs it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.amp import prepare_for_inference


def accelerate(
    model: nn.Module, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """Install ``device``'s fast inference kernels into ``model`` in place and return it.

    Args:
        model: a built model (eval mode); its parameters and state-dict keys are kept.
        device: where it runs (default: where its parameters are).
        dtype: ``None`` for float32 inference; ``torch.bfloat16`` / ``torch.float16`` to store the matmul
            weights in that dtype for inference under ``torch.autocast`` of the same dtype.
    """
    return prepare_for_inference(model, dtype)


__all__ = ["accelerate"]
