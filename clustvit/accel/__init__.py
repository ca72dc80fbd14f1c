"""Faster kernels for a *built* model: ``accelerate(model, device, dtype)``.

The model files (``clustvit/models/``) are plain PyTorch. This optional layer changes how a built model
runs, per instance, keeping every parameter and state-dict key:

* ``dtype``: matmul weights stored once in the autocast dtype (``dtype.cast_weights``);
* CPU: oneDNN float32 linears and head-by-head attention (``accel.cpu``), where this torch has oneDNN;
* CUDA: nothing to install: SDPA picks the fused kernels itself, and packed attention its varlen one;
* ``compile=True``: ``torch.compile`` of the backbone and the head (dynamic sequence length).

The inference entry points (``clustvit.load``, test.py, predict, the timing tools) call it unless told
not to (``accel=False`` / ``--no-accel``); training never needs it. A benchmark A/B is two models,
one accelerated.
"""

from __future__ import annotations

import torch
from torch import nn

from clustvit.accel import cpu
from clustvit.accel.dtype import amp_dtype, cast_weights, warn_if_emulated


def accelerate(
    model: nn.Module,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = False,
    kernels: tuple[str, ...] | None = None,
) -> nn.Module:
    """Install ``device``'s fast inference kernels into ``model`` in place and return it.

    Args:
        model: a built model (a ``Segmentor`` or any module made of ``clustvit.models`` parts).
        device: where it runs (default: where its parameters are).
        dtype: ``None`` for float32 inference; ``torch.bfloat16`` / ``torch.float16`` to store the matmul
            weights in that dtype, for inference under ``torch.autocast`` of the same dtype.
        compile: also ``torch.compile`` the backbone and head (or the model, if it has neither).
        kernels: on CPU, the kernels of :func:`describe` to install (default: ``cpu.default_kernels()``,
            those that pay on this CPU).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if dtype is not None:
        cast_weights(model, dtype)
        if dtype == torch.bfloat16:
            warn_if_emulated(device)
    if device.type == "cpu":
        cpu.install(model, cpu.default_kernels() if kernels is None else tuple(kernels))
    if compile:
        parts = [getattr(model, name) for name in ("backbone", "decode_head") if hasattr(model, name)]
        for part in parts or [model]:
            part.compile(dynamic=None)  # automatic dynamic: a second sequence length makes T symbolic
    return model


def describe(model: nn.Module) -> dict[str, int]:
    """How many modules of ``model`` run each accelerated kernel (0 everywhere: a plain model)."""
    kinds = {"onednn_linear": cpu.OneDNNLinear, "head_by_head_attention": cpu.HeadByHeadAttention}
    return {name: sum(type(m) is cls for m in model.modules()) for name, cls in kinds.items()}


def plain(model: nn.Module, kinds: tuple[str, ...] = cpu.KINDS) -> nn.Module:
    """Undo the kernel swaps of :func:`accelerate` (all, or the ``kinds`` of :func:`describe`); weights
    keep their dtype. In place."""
    cpu.uninstall(model, kinds)
    return model


__all__ = ["accelerate", "amp_dtype", "cast_weights", "describe", "plain"]
