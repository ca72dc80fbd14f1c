"""Fetch a zoo checkpoint once into torch.hub's cache, never caching a broken file.

Cache: ``torch.hub.get_dir()/checkpoints/<name>-<last part of the URL>.pth`` (``TORCH_HOME`` or
``torch.hub.set_dir`` move it). A cached file is used without any request. A download goes to a
temporary file beside its destination and is moved into place only when
  * as many bytes arrived as the server announced (``Content-Length``),
  * its SHA-256 starts with the hash prefix of the file name, when the name carries one (torch.hub's
    ``name-<hex>.ext`` convention; the released files' names are plain numbers, so no hash is known),
  * and it reads as a checkpoint (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import torch

from clustvit.convert.weights import CheckpointError, read_checkpoint
from clustvit.zoo.table import ZooEntry

_HASH = re.compile(r"-([a-f0-9]{8,64})\.[a-z]+$")  # torch.hub's convention, with at least 8 hex digits
_CHUNK = 1 << 20


class ZooError(ValueError):
    """A zoo checkpoint that cannot be fetched or is broken; the message is one line."""


def cache_path(entry: ZooEntry) -> Path:
    """Where ``entry``'s checkpoint lives in torch.hub's cache (whether or not it is there)."""
    stem = entry.url.rstrip("/").rsplit("/", 1)[-1]
    name = stem if stem.startswith(entry.name) else f"{entry.name}-{stem}"
    if not Path(name).suffix:
        name += ".pth"
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def is_cached(entry: ZooEntry) -> bool:
    return cache_path(entry).is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, tmp: Path, progress: bool) -> tuple[int, int | None]:
    """Stream ``url`` into ``tmp``; (bytes received, bytes announced or None)."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "clustvit"})
    with urllib.request.urlopen(request, timeout=60) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with open(tmp, "wb") as f, tqdm(total=total, disable=not progress, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=tmp.name.split(".part")[0]) as bar:
            while True:
                try:
                    block = response.read(_CHUNK)
                except http.client.IncompleteRead as e:  # the connection closed before the announced end
                    f.write(e.partial)
                    received += len(e.partial)
                    break
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
    return received, total


def fetch(entry: ZooEntry, progress: bool = True) -> Path:
    """The local path of ``entry``'s checkpoint, downloading it first if it is not cached."""

    dst = cache_path(entry)
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.part{os.getpid()}")
    try:
        try:
            received, total = _download(entry.url, tmp, progress)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise ZooError(f"{entry.name}: cannot download {entry.url} ({reason}); download it by hand and "
                           f"put it at {dst}") from None
        if total is not None and received != total:
            raise ZooError(f"{entry.name}: download of {entry.url} truncated ({received} of {total} bytes); "
                           f"nothing cached, try again or put the file at {dst}")
        match = _HASH.search(dst.name)
        if match and not _sha256(tmp).startswith(match.group(1)):
            raise ZooError(f"{entry.name}: {entry.url} does not match the hash prefix {match.group(1)} of "
                           f"{dst.name}; nothing cached")
        try:
            read_checkpoint(tmp)
        except CheckpointError as e:
            raise ZooError(f"{entry.name}: the file downloaded from {entry.url} does not load ({e}); "
                           "nothing cached") from None
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
