"""Split a whole-segmentor checkpoint into backbone and head safetensors files, and merge them back.

Official (mmseg) and our own checkpoints are accepted; the parts are written in our parameter names
(``clustvit.convert.weights.convert_state_dict``), without their ``backbone.`` / ``decode_head.`` prefixes, so a
backbone file is a plain backbone state dict. The config of one of our checkpoints travels in the
safetensors metadata, and ``merge_parts`` restores it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from clustvit.atomic import atomic_path
from clustvit.convert.weights import (
    CheckpointError,
    convert_state_dict,
    detect_format,
    read_checkpoint,
    unwrap,
)

PARTS = ("backbone", "decode_head")  # the file stems, and the key prefixes of a whole-segmentor state dict
OTHER = "other"  # anything else (e.g. an official auxiliary head), keys kept whole


def split_state_dict(sd: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """{"backbone": {...}, "decode_head": {...}, "other": {...}}: prefixes stripped, except in "other"."""
    parts: dict[str, dict[str, Tensor]] = {p: {} for p in (*PARTS, OTHER)}
    for key, value in sd.items():
        prefix, _, rest = key.partition(".")
        if prefix in PARTS and rest:
            parts[prefix][rest] = value
        else:
            parts[OTHER][key] = value
    if not parts["backbone"]:
        raise CheckpointError("no 'backbone.' keys: this is not a whole-segmentor checkpoint")
    return parts


def _save_atomic(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        # safetensors refuses views that share storage; contiguous copies are independent.
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)


def split_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Write ``out_dir/backbone.safetensors``, ``out_dir/decode_head.safetensors`` (and ``other.safetensors``).

    Returns:
        A summary: source format, and per part the file, tensor count, parameter count and top-level modules.
    """
    ckpt = read_checkpoint(path)
    raw = unwrap(ckpt)
    fmt = detect_format(raw)
    parts = split_state_dict(convert_state_dict(raw))
    meta = {"source": str(path), "source_format": fmt, "format": "clustvit-part-v1"}
    if isinstance(ckpt.get("config"), Mapping):
        meta["config"] = json.dumps(ckpt["config"])
    summary: dict = {"source": str(path), "format": fmt, "parts": {}}
    for name, tensors in parts.items():
        if name == OTHER and not tensors:
            continue
        file = Path(out_dir) / f"{name}.safetensors"
        _save_atomic(tensors, file, {**meta, "part": name})
        summary["parts"][name] = dict(
            file=str(file),
            tensors=len(tensors),
            params=int(sum(t.numel() for t in tensors.values())),
            modules=sorted({k.split(".", 1)[0] for k in tensors}),
        )
    return summary


def read_part(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A part file's tensors and metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: part file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def merge_parts(part_dir: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Inverse of ``split_checkpoint``: ``part_dir/{backbone,decode_head}.safetensors`` -> one checkpoint.

    The result is ``{"format": "clustvit-v1", "model": state_dict, "config": ...}`` (config ``None`` when the
    parts came from an official checkpoint), loadable by ``clustvit.convert.weights.load_checkpoint``.
    """
    sd: dict[str, Tensor] = {}
    config = None
    for name in (*PARTS, OTHER):
        file = Path(part_dir) / f"{name}.safetensors"
        if name == OTHER and not file.is_file():
            continue
        tensors, meta = read_part(file)
        sd.update(tensors if name == OTHER else {f"{name}.{k}": v for k, v in tensors.items()})
        if config is None and "config" in meta:
            config = json.loads(meta["config"])
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save({"format": "clustvit-v1", "model": sd, "config": config}, tmp)
    return {"file": str(out), "tensors": len(sd), "params": int(sum(t.numel() for t in sd.values()))}


def format_split(summary: dict) -> str:
    """Printable table of ``split_checkpoint``'s summary."""
    lines = [f"{summary['source']} ({summary['format']} format):"]
    for name, p in summary["parts"].items():
        lines.append(f"  {name:<12} {p['tensors']:>5} tensors {p['params'] / 1e6:9.3f} M params -> {p['file']}"
                     f"   [{', '.join(p['modules'])}]")
    return "\n".join(lines)
