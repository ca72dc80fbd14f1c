"""Process-level tuning for inference runs: keep freed heap memory instead of returning it to the OS.

A ViT forward allocates and frees the same large activations (a 1025 x 3072 float32 MLP output is
12.6 MB) on every block. glibc's default serves allocations above a threshold with fresh ``mmap``s
and trims freed heap top back to the OS, so every block touches new pages: 11k page faults per image
for Segmenter ViT-b and 19k for ClustViT-b at 512² on the CI host (its varying sequence lengths reuse
memory worse). Keeping up to 32 MB per allocation on the heap and never trimming below 1 GB removes
them (tests/test_runtime.py). The wall-time gain is smaller than the CI host's drift between runs:
one pair of runs gained, another lost (docs/BENCHMARKS.md).
The inference commands (``clustvit test``, ``clustvit predict``, the ``clustvit bench`` timings) call
:func:`tune_malloc`; a library user may call it too. It changes no result, only where memory comes from.
The cost: the process holds on to freed heap (up to 1 GB above its live data) instead of returning it,
so its resident size stays near its peak. Set ``CLUSTVIT_NO_MALLOC_TUNING=1`` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 128 << 20


def tune_malloc() -> bool:
    """Apply the settings above through glibc's ``mallopt``; False (nothing changed) on other C libraries,
    or when ``CLUSTVIT_NO_MALLOC_TUNING`` is set."""
    if os.environ.get("CLUSTVIT_NO_MALLOC_TUNING"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
