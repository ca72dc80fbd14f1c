"""One run per work dir: an exclusive OS lock on ``WORK_DIR/.lock`` for as long as the run lives.

The lock is ``flock(LOCK_EX)`` on an open file, not the file's existence: the kernel drops it when the
last descriptor of it closes, so it ends with the run whatever ends the run (return, exception, SIGKILL,
power loss) and never goes stale. The file holds the owner's pid, for the message of the run refused.
Processes forked by the run (DataLoader workers) inherit the descriptor; :meth:`WorkDirLock.close_inherited`
drops their copy so that the lock does not outlive the run's main process.
"""

from __future__ import annotations

import errno
import os
import time
import warnings
from pathlib import Path

from clustvit.atomic import WriteError, write_failure

try:
    import fcntl
except ImportError:  # Windows: no flock; runs go unlocked (with a warning)
    fcntl = None

LOCK_NAME = ".lock"


class WorkDirLockedError(RuntimeError):
    """Another live process holds the work dir's lock; one line naming the folder and that process's pid."""


class WorkDirLock:
    """Exclusive lock of one work dir; ``acquire`` fails at once (no waiting) if another process holds it."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.work = Path(work_dir)
        self.path = self.work / LOCK_NAME
        self.fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open lock file

    def acquire(self) -> WorkDirLock:
        """Takes the lock (creating the folder); raises WorkDirLockedError naming the holder's pid, or
        clustvit.atomic.WriteError when the folder cannot be written (read-only, full).

        On a file system without ``flock`` support (some Lustre mounts) it warns and runs unlocked.
        """
        if fcntl is None:
            warnings.warn("no flock on this platform: nothing stops a second run from writing "
                          f"{self.work}", stacklevel=2)
            return self
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:  # a read-only or full file system: the run could not write anything there
            if write_failure(e) is None:
                raise
            raise WriteError(self.path, e.strerror, e.errno) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                warnings.warn(f"{self.path}: cannot lock ({e.strerror}); nothing stops a second run from "
                              "writing this work dir", stacklevel=2)
                return self
            raise WorkDirLockedError(
                f"{self.work}: in use by another run (pid {holder or 'unknown'}, holding {self.path}); "
                "wait for it to end, stop it, or choose another --work-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        st = os.fstat(fd)
        self.fd, self._identity = fd, (st.st_dev, st.st_ino)
        return self

    def release(self) -> None:
        """Drops the lock (the file stays: removing it would race with a run locking it right now)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close_inherited(self) -> None:
        """In a forked child: close this process's copy of the descriptor (the parent keeps the lock).

        Checks that the descriptor number still refers to the lock file: under ``spawn`` or ``forkserver``
        the child did not inherit it and the number may belong to something else.
        """
        if self.fd is None or self._identity is None:
            return
        try:
            st = os.fstat(self.fd)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            os.close(self.fd)
        self.fd = None

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str | None:
    """The pid written in the lock file; the holder writes it right after locking, so wait a moment for it."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return None
