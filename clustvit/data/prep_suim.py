"""SUIM preparation: RGB ``.bmp`` masks -> single-channel label PNGs in ``masks_label/``.

For every ``{train_val,test,TEST}/masks`` folder under the root, each image in the sibling
``images/`` folder gets ``masks_label/{stem}.png``. Colours are decoded by thresholding each channel
at 128, class = 4*R + 2*G + B (BW 0, HD 1, PF 2, WR 3, RO 4, RI 5, FV 6, SR 7), so slightly off
colours (JPEG-ish noise) still decode. A mask whose size differs from its image is resized (nearest)
with a warning. Every good file is converted; every bad one is reported on one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from clustvit.atomic import atomic_path
from clustvit.data.base import upright_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SPLIT_FOLDERS = ("train_val", "test", "TEST")
MASK_SUFFIXES = (".bmp", ".png")


@dataclass
class Report:
    """What a preparation run did; ``errors`` holds one line per bad file."""

    converted: int = 0
    resized: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def decode_suim_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB mask -> ``(H, W)`` uint8 labels 0..7 (4*R + 2*G + B, channels >= 128)."""
    bits = (rgb >= 128).astype(np.uint8)  # (H, W, 3)
    return bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]


def save_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a uint8 array as PNG via a temp file in the same folder + ``os.replace`` (never half-written)."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for suffix in MASK_SUFFIXES:
        if (mask_dir / f"{stem}{suffix}").is_file():
            return mask_dir / f"{stem}{suffix}"
    return None


def convert_one(image_path: Path, mask_path: Path, out_path: Path, report: Report) -> None:
    """Convert one RGB mask to a label PNG the size of its image; errors raise OSError/ValueError."""
    with Image.open(image_path) as im:
        size = upright_size(im)  # (w, h) from the header, as the dataset will read the image
    with Image.open(mask_path) as m:
        mask = m.convert("RGB")
    if mask.size != size:
        report.resized += 1
        report.warnings.append(f"{mask_path}: mask {mask.size[0]}x{mask.size[1]} differs from image "
                               f"{size[0]}x{size[1]}, resized (nearest)")
        mask = mask.resize(size, Image.Resampling.NEAREST)
    save_png_atomic(decode_suim_rgb(np.asarray(mask)), out_path)


def convert_suim(root: str | Path, progress: bool = True) -> Report:
    """Convert every mask folder under ``root``; see the module docstring."""
    root = Path(root)
    report = Report()
    splits = [root / d for d in SPLIT_FOLDERS if (root / d / "masks").is_dir()]
    if not splits:
        report.errors.append(f"{root}: no masks/ folder found, expected one of "
                             f"{', '.join(d + '/masks' for d in SPLIT_FOLDERS)}")
        return report
    jobs: list[tuple[Path, Path | None, Path]] = []
    for split in splits:
        image_dir, mask_dir, out_dir = split / "images", split / "masks", split / "masks_label"
        if not image_dir.is_dir():
            report.errors.append(f"{image_dir}: not found, expected the images beside {mask_dir}")
            continue
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            report.errors.append(f"{image_dir}: no images found")
        out_dir.mkdir(exist_ok=True)
        jobs += [(p, _find_mask(mask_dir, p.stem), out_dir / f"{p.stem}.png") for p in images]
    bar = tqdm(jobs, desc="SUIM masks", unit="mask", disable=not progress)
    for image_path, mask_path, out_path in bar:
        if mask_path is None:
            report.errors.append(f"{image_path}: no mask, expected {image_path.parent.parent / 'masks'}/"
                                 f"{image_path.stem}.bmp")
            continue
        try:
            convert_one(image_path, mask_path, out_path, report)
            report.converted += 1
        except (OSError, ValueError, SyntaxError) as e:
            report.errors.append(f"{mask_path}: cannot convert ({type(e).__name__}: {e})".replace("\n", " "))
    return report
