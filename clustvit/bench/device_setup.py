"""What the device check records about its machine, and the SUIM samples it runs on (converted if raw)."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from clustvit.data.prep_suim import convert_suim


def describe_device(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "capability": list(torch.cuda.get_device_capability(device)),
                "memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def describe_torch() -> dict[str, Any]:
    return {"version": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "python": platform.python_version()}


def suim_root(src: Path, work: Path) -> Path:
    """``src`` if its test split has label PNGs, else a copy of its raw samples converted in ``work``."""
    if any((src / d / "masks_label").is_dir() for d in ("TEST", "test")):
        return src
    split = next((d for d in ("TEST", "test") if (src / d / "masks").is_dir()), None)
    if split is None:
        raise FileNotFoundError(f"{src}: expected TEST/images with TEST/masks (raw SUIM) or TEST/masks_label")
    root = work / "suim"
    shutil.copytree(src / split / "images", root / split / "images")
    (root / split / "masks").mkdir(parents=True)
    for mask in (src / split / "masks").iterdir():
        if mask.is_file():
            shutil.copy(mask, root / split / "masks" / mask.name)
    report = convert_suim(root, progress=False)
    if report.errors:
        raise ValueError(f"{src}: SUIM conversion failed: {report.errors[0]}")
    return root
