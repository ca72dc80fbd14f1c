"""Peak memory of a block of work, in MiB: CUDA's allocator statistics, or the CPU process's peak RSS."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak may then read low
        pass


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Measure the extra memory the block needs at its peak, in MiB (``result["peak_mib"]``).

    CUDA: ``max_memory_allocated`` above what was allocated before. CPU: the process's peak resident
    set (VmHWM, reset through /proc/self/clear_refs) above the resident set before, after returning
    freed heap to the OS (glibc ``malloc_trim``); NaN where Linux does not allow the reset.
    """
    result: dict = {"peak_mib": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    try:
        _malloc_trim()  # hand freed heap back to the OS so the pass's own peak shows in the RSS
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        before = _proc_status_kib("VmRSS")
    except OSError:
        before = None
    yield result
    if before is not None:
        result["peak_mib"] = (_proc_status_kib("VmHWM") - before) / 1024
