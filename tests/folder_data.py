"""Tiny labelled folders in every layout ``clustvit.data.folder`` reads, made on the fly (no binary data in git)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "hull", "rust")
COLOURS = [(0, 0, 0), (250, 50, 83), (36, 179, 83)]  # labelmap.txt colours, class order


def scene(rng: np.random.Generator, size: tuple[int, int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) uint8 image and its (H, W) class ids: background, a band of class 1, a box of class 2..."""
    H, W = size
    mask = np.zeros((H, W), np.uint8)
    top = int(rng.integers(H // 4, H // 2))
    mask[top:] = 1
    for c in range(2, num_classes):
        y, x = int(rng.integers(0, H - 12)), int(rng.integers(0, W - 12))
        mask[y : y + 12, x : x + 12] = c
    base = np.array([(60, 90, 200), (180, 120, 60), (90, 200, 90), (200, 200, 40)], np.float64)[mask % 4]
    image = np.clip(base + rng.normal(0, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    return image, mask


def make_folder(root: Path, layout: str, n: int = 6, size: tuple[int, int] = (48, 64), colour: bool = False,
                bit16: bool = False, classes: tuple[str, ...] = CLASSES, reduce_zero: bool = False,
                with_lists: bool = True, seed: int = 0) -> Path:
    """Write ``n`` image/mask pairs under ``root`` in ``layout`` ("flat", "split_dirs" or "voc").

    Args:
        colour: masks drawn in the labelmap colours (RGB PNGs) instead of index values.
        bit16: index masks as 16-bit PNGs.
        reduce_zero: index masks store class k as k + 1 (0 = unlabelled), ADE20K style.
        with_lists: write split lists (flat, voc); without them the split is a seeded fraction.
    """
    rng = np.random.default_rng(seed)
    stems = [f"img{i:03d}" for i in range(n)]
    split_of = {s: ("val" if i % 3 == 2 else "train") for i, s in enumerate(stems)}
    for stem in stems:
        image, mask = scene(rng, size, len(classes))
        if layout == "split_dirs":
            img_dir, mask_dir = root / split_of[stem] / "images", root / split_of[stem] / "masks"
        elif layout == "voc":
            img_dir, mask_dir = root / "JPEGImages", root / "SegmentationClass"
        else:
            img_dir, mask_dir = root / "images", root / "masks"
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(img_dir / f"{stem}.png" if layout == "flat" else img_dir / f"{stem}.jpg",
                                    quality=95)
        save_mask(mask_dir / f"{stem}.png", mask + reduce_zero, colour, bit16)
    if layout == "voc":
        (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
            f"{name}:{r},{g},{b}::\n" for name, (r, g, b) in zip(classes, COLOURS)))
        if with_lists:
            lists = root / "ImageSets" / "Segmentation"
            lists.mkdir(parents=True)
            for split in ("train", "val"):
                (lists / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems if split_of[s] == split))
    else:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
        if layout == "flat" and with_lists:
            (root / "splits").mkdir()
            for split in ("train", "val"):
                (root / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems if split_of[s] == split))
    return root


def save_mask(path: Path, mask: np.ndarray, colour: bool = False, bit16: bool = False) -> None:
    """Class ids (H, W) as an index PNG (8- or 16-bit) or as a colour PNG in ``COLOURS``."""
    if colour:
        Image.fromarray(np.array(COLOURS, np.uint8)[mask]).save(path)
    elif bit16:
        Image.fromarray(mask.astype(np.uint16)).save(path)
    else:
        Image.fromarray(mask.astype(np.uint8)).save(path)
