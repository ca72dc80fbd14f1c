"""Training checkpoints: self-describing, written atomically, the last few kept, the latest complete found.

A checkpoint is ``iter_{N}.pth`` in the work dir, N = completed iterations. It is written to a hidden
temp file, fsynced, then renamed over the final name (``os.replace`` is atomic on POSIX), so a
process killed at any moment leaves either the previous set of checkpoints or the new one, never a
half-written ``iter_*.pth``. Loading uses ``weights_only=True``: a checkpoint cannot run code.
A checkpoint that the disk cannot take (full, quota, read-only) raises ``clustvit.atomic.WriteError``, one line
with the bytes it needs, before any byte is written when the free space is known to be short; the previous
checkpoints are untouched and no temp file is left behind either way.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clustvit.atomic import WriteError, check_space, write_failure
from clustvit.convert.weights import CheckpointError, read_checkpoint

FORMAT = "clustvit-v1"
LEGACY_FORMATS = ("dynseg-v1",)  # written before the package was named clustvit: still read
_NAME = re.compile(r"^iter_(\d+)\.pth$")
REQUIRED = ("model", "config", "iter", "optimizer", "format")


class CheckpointFileError(ValueError):
    """An unreadable or foreign checkpoint file; one line naming it."""


def rng_state() -> dict[str, Any]:
    """Every RNG the run touches, as weights_only-loadable values (tensors, ints, tuples)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(work_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (by name) in `work_dir`, oldest first."""
    work = Path(work_dir)
    if not work.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in work.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def checkpoint_bytes(state: Any) -> int:
    """About the size of ``torch.save(state)``: every tensor storage once, plus the zip records and pickle.

    torch stores each storage whole (a view saves its whole base) in a 64-byte aligned zip record; the
    pickled structure (config, lr, rng tuples) stays well under the fixed 64 KiB allowance.
    """
    storages: dict[tuple[int, int], int] = {}
    stack = [state]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            st = obj.untyped_storage()
            storages[(st.data_ptr(), st.nbytes())] = st.nbytes()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
    return sum(storages.values()) + 256 * len(storages) + (64 << 10)


def save_checkpoint(state: dict[str, Any], work_dir: str | os.PathLike, keep: int = 3) -> Path:
    """Writes ``iter_{state['iter']}.pth`` atomically, then deletes older ones: `keep` remain, this one included.

    Args:
        state: the checkpoint dict (``REQUIRED`` keys; ``format`` is added).
        work_dir: the run's folder.
        keep: how many checkpoints to keep (the newest).

    Returns:
        The path written.

    Raises:
        WriteError: the file system has no room for it (checked first, from the state's tensor sizes) or
            refuses the write; nothing is left behind and no older checkpoint is deleted.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"iter_{state['iter']}.pth"
    tmp = work / f".{path.name}.{os.getpid()}.tmp"
    needed = checkpoint_bytes(state)
    check_space(path, needed)  # older checkpoints stay until this one is complete: it needs its own room
    try:
        with open(tmp, "wb") as f:
            torch.save({**state, "format": FORMAT}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer turns a failed write into a RuntimeError
        failure = write_failure(e)
        if failure is None:
            raise
        tmp.unlink(missing_ok=True)  # before WriteError measures what is free
        raise WriteError(path, failure.strerror, failure.errno, needed) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(work)  # make the rename itself durable before older checkpoints go
    # Prune only checkpoints older than this one: a higher-numbered file can only be one that --resume
    # found unreadable, and counting it among the newest would delete the checkpoint just written.
    older = [p for n, p in list_checkpoints(work) if n < state["iter"]]
    for old in older[: max(len(older) - (keep - 1), 0)] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def read_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Loads one of our training checkpoints (CPU tensors), checking it is complete.

    Raises:
        CheckpointFileError: the file is unreadable, not a dict, or lacks a required key.
    """
    try:
        ckpt = read_checkpoint(path)  # the one weight reader (weights_only=True)
    except CheckpointError as e:  # truncated zip, foreign pickle, code-running pickle refused ...
        raise CheckpointFileError(f"not a readable checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (FORMAT, *LEGACY_FORMATS):
        raise CheckpointFileError(f"{path}: not a clustvit training checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointFileError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return ckpt


def find_latest(work_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in `work_dir` that loads completely, or None.

    A file that fails to load (e.g. damaged by a disk error) is reported and skipped, so resuming
    falls back to the previous one. Leftover temp files of a killed writer are removed.
    """
    work = Path(work_dir)
    if work.is_dir():
        for tmp in work.glob(".iter_*.pth.*.tmp"):
            tmp.unlink(missing_ok=True)
    for _, path in reversed(list_checkpoints(work)):
        try:
            return path, read_training_checkpoint(path)
        except CheckpointFileError as e:
            warnings.warn(f"skipping {e}", stacklevel=2)
    return None
