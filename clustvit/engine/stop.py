"""Graceful stop: a stop signal makes training end after the current step, with a checkpoint.

Cluster schedulers pre-empt a job with a signal and a grace period (SLURM: SIGTERM, or SIGUSR1 with
``--signal``; Kubernetes: SIGTERM); a terminal sends SIGINT on Ctrl-C. While :class:`StopRequest` is
active those signals only record themselves; the training loop reads the record once per step (all
ranks agree through one all-reduce) and stops cleanly. A repeated signal changes nothing: the step and
the checkpoint are already under way. SIGKILL still stops at once, and the checkpoints stay atomic.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

# SIGUSR1 is POSIX only: elsewhere the default is the other two.
DEFAULT_STOP_SIGNALS = tuple(name for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


def parse_signals(names: Sequence[str]) -> tuple[signal.Signals, ...]:
    """``["TERM", "sigint", "10"]`` -> the signals; ValueError naming a name that is none.

    SIGKILL and SIGSTOP cannot be caught and are refused too.
    """
    out = []
    for name in names:
        text = str(name).strip().upper()
        try:
            sig = signal.Signals(int(text)) if text.isdigit() else signal.Signals[
                text if text.startswith("SIG") else f"SIG{text}"]
        except (KeyError, ValueError):
            raise ValueError(f"stop signal {name!r}: not a signal name, expected e.g. TERM, INT, USR1") from None
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"stop signal {name!r}: {sig.name} cannot be caught")
        if sig not in out:
            out.append(sig)
    return tuple(out)


class StopRequest:
    """Context manager: while active, `signals` set :attr:`received` instead of their usual action.

    Handlers can only be installed from the main thread; elsewhere (training started from a worker
    thread) nothing is installed and the signals keep their usual action. Leaving restores the
    handlers that were there before.
    """

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        self.signals = tuple(signals)
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:  # the first one names the stop; printing here could re-enter stderr
            self.received = signal.Signals(signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class WorkerSignals:
    """What DataLoader workers do with the stop signals, so that the main process alone stops the run.

    A scheduler may signal every process of a job (SLURM does), and a terminal's Ctrl-C reaches the
    whole foreground process group. A worker killed by that signal makes the main process fail
    ("DataLoader worker ... killed by signal") before it can checkpoint, so workers ignore the stop
    signals while the run lives. SIGTERM is special: multiprocessing itself sends it to end leftover
    workers when the main process exits, so a worker ignores it only until :meth:`release` (called when
    the run ends, however it ends) and is terminated by it afterwards.
    """

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        import multiprocessing

        self.signals = tuple(signals)
        # Shared memory that forked and spawned workers both see (passed with the worker's arguments).
        self._released = multiprocessing.RawValue("b", 0)

    def worker_init(self) -> None:
        """In a worker (``worker_init_fn``): replace the handlers inherited from the main process."""
        for sig in self.signals:
            signal.signal(sig, self._on_term if sig == signal.SIGTERM else signal.SIG_IGN)

    def _on_term(self, signum: int, frame: object) -> None:
        if self._released.value:  # the run is over: this is multiprocessing ending the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    def release(self) -> None:
        """In the main process, when the run ends: workers die on SIGTERM again."""
        self._released.value = 1
