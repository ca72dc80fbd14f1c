"""Write a file so that readers see the old version or the whole new one, never half of it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str = ".tmp", mode: int = 0o644, fsync: bool = False
) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed over ``path``.

    The folder is created if needed. The temporary file gets ``mode`` (``mkstemp`` creates 0600) and
    is removed if the block raises, so a failed write leaves neither a partial file nor a stray temp.
    ``suffix`` matters to writers that pick the format from the name. ``fsync`` flushes the data to
    disk before the rename, so that a crash cannot leave the new name on empty contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
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
