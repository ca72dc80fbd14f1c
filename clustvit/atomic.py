"""Write a file so that readers see the old version or the whole new one, never half of it.

A write that fails for lack of room or permission (full disk, quota, read-only file system, file-size
limit) raises :class:`WriteError`: one line naming the file, the reason, and the space it needed and
found, instead of a traceback from whichever library was writing.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# errno values that mean "this file system will not take the bytes", as opposed to a bug in the writer.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


class WriteError(OSError):
    """A file could not be written: no space, quota, read-only, file-size limit, permission.

    An ``OSError`` (``errno`` kept), so that existing ``except OSError`` handlers still see it, with a
    one-line ``str()``: ``PATH: cannot write (REASON); needs about N bytes, M bytes free in FOLDER``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None,
                 needed: int | None = None) -> None:
        super().__init__(code or 0, reason)
        self.path, self.needed = Path(path), needed
        self.free = free_bytes(self.path.parent)
        parts = [f"needs about {needed:,} bytes" if needed is not None else None,
                 f"{self.free:,} bytes free in {self.path.parent}" if self.free is not None else None]
        detail = ", ".join(p for p in parts if p)
        self.message = f"{self.path}: cannot write ({reason})" + (f"; {detail}" if detail else "")

    def __str__(self) -> str:
        return self.message


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged process may still write on `folder`'s file system (None if unknown)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def write_failure(exc: BaseException) -> OSError | None:
    """The OSError with a :data:`WRITE_ERRNOS` code behind `exc`, or None.

    Looks at `exc` and its ``__cause__``/``__context__`` chain: torch's zip writer, for one, reports a
    failed write as ``RuntimeError('... unexpected pos ...')`` raised while handling the OSError.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def check_space(path: str | os.PathLike, needed: int) -> None:
    """Raise :class:`WriteError` before writing when `path`'s file system has fewer than `needed` bytes free."""
    free = free_bytes(Path(path).parent)
    if free is not None and needed > free:
        raise WriteError(path, os.strerror(errno.ENOSPC), errno.ENOSPC, needed)


@contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str = ".tmp", mode: int = 0o644, fsync: bool = False
) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed over ``path``.

    The folder is created if needed. The temporary file gets ``mode`` (``mkstemp`` creates 0600) and
    is removed if the block raises, so a failed write leaves neither a partial file nor a stray temp.
    ``suffix`` matters to writers that pick the format from the name. ``fsync`` flushes the data to
    disk before the rename, so that a crash cannot leave the new name on empty contents. A write that
    fails for want of space or permission (:data:`WRITE_ERRNOS`) is re-raised as :class:`WriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise WriteError(path, e.strerror, e.errno) from None
        raise
    os.close(fd)
    os.chmod(tmp, mode)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        failure = write_failure(e)
        if failure is None or isinstance(e, WriteError):
            raise
        os.unlink(tmp)  # before WriteError measures the free space
        raise WriteError(path, failure.strerror, failure.errno) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str, fsync: bool = False) -> None:
    """``Path(path).write_text(text)``, through :func:`atomic_path`."""
    with atomic_path(path, fsync=fsync) as tmp:
        Path(tmp).write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: object, indent: int = 2, fsync: bool = False) -> None:
    """``obj`` as indented JSON plus a final newline, through :func:`atomic_path`."""
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n", fsync=fsync)
