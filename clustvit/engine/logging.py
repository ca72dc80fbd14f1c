"""Run logging: a console line with ETA, TensorBoard scalars, and ``log.jsonl`` (one record per log step)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from clustvit.atomic import WriteError, write_failure, write_text_atomic


def format_eta(seconds: float) -> str:
    """``3725.0`` -> ``'1:02:05'``; days are shown when needed (``'2 days, 3:00:00'``)."""
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days} days, {text}" if days else text


def truncate_jsonl(path: Path, last_iter: int) -> None:
    """Keeps only records with ``iter <= last_iter`` (resume: drop steps redone after the checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= last_iter:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by a killed process
    write_text_atomic(path, "".join(line + "\n" for line in keep))


class RunLogger:
    """Writes training records to the console, TensorBoard and ``log.jsonl`` (main process only).

    Args:
        work_dir: the run folder.
        max_iters: total iterations (for the ETA).
        start_iter: first iteration of this process (0, or the resumed checkpoint's).
        enabled: False on non-main DDP ranks: everything becomes a no-op.
        tensorboard: also write TensorBoard event files under ``work_dir/tb``.
    """

    def __init__(self, work_dir: str | os.PathLike, max_iters: int, start_iter: int = 0,
                 enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled, self.max_iters = enabled, max_iters
        self.work = Path(work_dir)
        self.t0, self.it0 = time.perf_counter(), start_iter
        self.writer = None
        if not enabled:
            return
        self.work.mkdir(parents=True, exist_ok=True)
        for name in ("log.jsonl", "val.jsonl"):
            truncate_jsonl(self.work / name, start_iter)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: slow, optional

            self.writer = SummaryWriter(str(self.work / "tb"), purge_step=start_iter + 1)

    def _append(self, name: str, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode()
        path = self.work / name
        with open(path, "ab", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                rest = memoryview(line)
                while rest:  # an unbuffered write may take part of it: the next one reports why
                    rest = rest[f.write(rest):]
            except OSError as e:
                # A full disk may take part of the line: cut it off again, so the log stays whole lines.
                f.truncate(end)
                if write_failure(e) is None:
                    raise
                raise WriteError(path, e.strerror, e.errno, len(line)) from None

    def log_train(self, it: int, losses: dict[str, float], lr: float, extra: dict[str, float]) -> None:
        """One training record for completed iteration `it` (1-based).

        Args:
            it: completed iterations.
            losses: ``{"loss": ..., "loss_seg": ..., ...}`` plain floats.
            lr: the lr used by this step.
            extra: other scalars (tokens kept, skipped steps, memory ...).
        """
        if not self.enabled:
            return
        record = {"iter": it, **losses, "lr": lr, **extra}
        self._append("log.jsonl", record)
        if self.writer is not None:
            for k, v in record.items():
                if k != "iter":
                    self.writer.add_scalar(f"train/{k}", v, it)
        done = it - self.it0
        rate = (time.perf_counter() - self.t0) / max(done, 1)  # seconds per iteration in this process
        terms = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
        more = "  ".join(f"{k} {v:.3g}" for k, v in extra.items())
        print(f"iter {it:>{len(str(self.max_iters))}}/{self.max_iters}  {terms}  lr {lr:.3e}  {more}  "
              f"{rate:.3f}s/it  eta {format_eta(rate * (self.max_iters - it))}", flush=True)

    def log_val(self, it: int, metrics: dict[str, Any]) -> None:
        """One validation record (scalars only) after iteration `it`."""
        if not self.enabled:
            return
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self._append("val.jsonl", {"iter": it, **scalars})
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(f"val/{k}", v, it)
        print(f"val @ iter {it}: " + "  ".join(f"{k} {v:.2f}" for k, v in scalars.items()), flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
