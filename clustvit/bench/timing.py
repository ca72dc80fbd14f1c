"""The one timing loop of the efficiency tools (the shape of ToMe's ``utils.benchmark``).

Warm-up calls first (untimed: lazy initialisation, allocator growth, compilation), then every timed call
between two device synchronisations, so that the clock measures the queued device work itself and not
just its launch. Callers summarise the per-call seconds (median and mean: :func:`summarise_runs`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from clustvit.accel.dtype import amp_dtype


def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (a no-op on CPU or None), so a timer measures the work itself."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """``--amp``: autocast in :func:`clustvit.accel.dtype.amp_dtype` of ``device``; else a no-op."""
    return torch.autocast(device.type, dtype=amp_dtype(device)) if amp else nullcontext()


def time_once(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Seconds of one synchronised call of ``fn``."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def time_passes(fn: Callable[[], object], repeats: int, warmup: int = 1,
                device: torch.device | None = None) -> list[float]:
    """``warmup`` untimed calls of ``fn``, then the seconds of each of ``repeats`` synchronised calls."""
    for _ in range(warmup):
        fn()
    return [time_once(fn, device) for _ in range(repeats)]


def time_interleaved(passes: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of ``repeats`` passes of each side, the sides alternating in an order that flips every repeat.

    Each side's callable runs one pass and returns its seconds (:func:`time_once`, or a number another
    process measured). Alternating in one process makes a host's slow speed drift hit every side alike;
    flipping the order cancels the advantage of going first. ``warmup`` untimed passes per side first.
    """
    order = list(passes)
    for _ in range(warmup):
        for k in order:
            passes[k]()
    seconds: dict[str, list[float]] = {k: [] for k in order}
    for r in range(repeats):
        for k in order if r % 2 == 0 else order[::-1]:
            seconds[k].append(passes[k]())
    return seconds


def summarise_runs(seconds: Sequence[float], num_images: int) -> dict:
    """img/s statistics of timed passes over ``num_images`` images each."""
    rates = [num_images / s for s in seconds]
    return {
        "img_s_median": statistics.median(rates),
        "img_s_mean": statistics.fmean(rates),
        "img_s_std": statistics.pstdev(rates),
        "ms_per_img_median": 1000.0 * statistics.median(seconds) / num_images,
        "runs_s": list(seconds),
        "num_images": num_images,
    }
