"""Faster kernels for a *built* model: ``accelerate(model, device, dtype)``.

The model files (``clustvit/models/``) are plain PyTorch. This optional layer changes how a built model
runs, per instance, keeping every parameter and state-dict key:

* ``dtype``: matmul weights stored once in the autocast dtype (``dtype.cast_weights``);
* CPU: per shape and dtype, the fastest of the library kernels and the hand-written ones of
  ``accel.cpu`` (oneDNN linears; head-by-head or batched-matmul attention), timed on this host by
  ``accel.tune`` and cached, where this torch has oneDNN;
* CUDA: nothing to install: SDPA picks the fused kernels itself, and packed attention its varlen one;
* ``compile=True``: ``torch.compile`` of the backbone and the head (dynamic sequence length).

The inference entry points (``clustvit.load``, test.py, predict, the timing tools) call it unless told
not to (``accel=False`` / ``--no-accel``); training never needs it. A benchmark A/B is two models,
one accelerated.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from clustvit.accel import cpu
from clustvit.accel import tune as tuning
from clustvit.accel.dtype import amp_dtype, cast_weights, warn_if_emulated
from clustvit.accel.tune import Choice, Tuner

CHOICES = "clustvit_kernel_choices"  # the attribute of an accelerated model that holds its decisions


class KernelReport(dict[str, int]):
    """:func:`describe`'s answer: modules per kernel kind (a plain dict of :data:`cpu.KINDS` -> count), and
    in ``choices`` the decisions behind them (:class:`clustvit.accel.tune.Choice`: per op, shape and
    dtype, the kernel, why, and the median ms and GFLOP/s of every candidate timed)."""

    def __init__(self, counts: dict[str, int], choices: list[Choice]) -> None:
        super().__init__(counts)
        self.choices = choices

    def lines(self) -> list[str]:
        """One line per decision, for printing."""
        return [c.line() for c in self.choices]


def accelerate(
    model: nn.Module,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = False,
    kernels: tuple[str, ...] | Mapping[str, str] | str | None = None,
    tune: bool | Tuner = True,
) -> nn.Module:
    """Install ``device``'s fast inference kernels into ``model`` in place and return it.

    On CPU each plain ``nn.Linear`` and ``Attention`` gets the kernel measured fastest for its shape and
    ``dtype`` on this host (:mod:`clustvit.accel.tune`: candidates, lengths, timing, cache); where no
    hand-written kernel beats the library one by the tuner's margin the module stays plain. Accelerating
    again re-plans from the plain modules.

    Args:
        model: a built model (a ``Segmentor`` or any module made of ``clustvit.models`` parts).
        device: where it runs (default: where its parameters are).
        dtype: ``None`` for float32 inference; ``torch.bfloat16`` / ``torch.float16`` to store the matmul
            weights in that dtype, for inference under ``torch.autocast`` of the same dtype.
        compile: also ``torch.compile`` the backbone and head (or the model, if it has neither).
        kernels: the one way to pin kernels on CPU: ``{"linear": "f_linear" | "onednn", "attention":
            "sdpa" | "head_by_head" | "bmm"}`` or the same as text (``"linear=onednn,attention=sdpa"``);
            a pinned op runs that kernel everywhere, an op left out (or ``auto``) is measured. ``None``: the
            ``CLUSTVIT_KERNELS`` environment variable (same text), else everything measured. A tuple of
            :data:`cpu.KINDS` names forces exactly those kernels at every size, unmeasured
            (:func:`cpu.install`: the parity checks force them all).
        tune: ``True``: time what the cache lacks (:class:`Tuner` defaults); ``False``: never time (cached
            times, else the library kernels); a :class:`Tuner`: its cache path, timing function, budget
            and margin.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if dtype is not None:
        cast_weights(model, dtype)
        if dtype == torch.bfloat16:
            warn_if_emulated(device)
    if device.type == "cpu":
        cpu.uninstall(model)  # re-plan from the plain modules
        choices: list[Choice] = []
        if isinstance(kernels, tuple | list):
            cpu.install(model, tuple(kernels))
        elif cpu.onednn_available():
            spec, origin = (kernels, "kernels") if kernels is not None else (tuning.env_pins(), tuning.ENV)
            pins = tuning.parse_pins(spec, origin)
            tuner = tune if isinstance(tune, Tuner) else Tuner() if tune else Tuner(measure=None)
            choices = tuning.apply(model, dtype, pins, tuner)
        setattr(model, CHOICES, choices)
    if compile:
        parts = [getattr(model, name) for name in ("backbone", "decode_head") if hasattr(model, name)]
        for part in parts or [model]:
            part.compile(dynamic=None)  # automatic dynamic: a second sequence length makes T symbolic
    return model


def describe(model: nn.Module) -> KernelReport:
    """How many modules of ``model`` run each accelerated kernel kind (0 everywhere: a plain model), and in
    ``.choices`` what :func:`accelerate` chose for each op, shape and dtype and why."""
    return KernelReport(cpu.kernel_counts(model), list(getattr(model, CHOICES, [])))


def plain(model: nn.Module, kinds: tuple[str, ...] = cpu.KINDS) -> nn.Module:
    """Undo the kernel swaps of :func:`accelerate` (all, or the ``kinds`` of :func:`describe`); weights
    keep their dtype. In place."""
    cpu.uninstall(model, kinds)
    return model


__all__ = ["Tuner", "accelerate", "amp_dtype", "cast_weights", "describe", "plain"]
