"""The on-disk datasets: ADE20K, SUIM and RumexWeeds (file layout -> matched image/mask lists).

Cheap checks (folders exist, not empty, every image has its mask, split files name existing files)
run at construction; decoding, sizes and label ranges are checked when a sample is read.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from clustvit.atomic import write_json_atomic
from clustvit.data.base import DatasetError, FilePairDataset, Pipeline, list_images, pair_masks
from clustvit.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    RUMEXWEEDS_CLASSES,
    RUMEXWEEDS_PALETTE,
    SUIM_CLASSES,
    SUIM_PALETTE,
)

SPLITS = ("train", "val", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown, expected one of {SPLITS}")


class ADE20K(FilePairDataset):
    """ADEChallengeData2016: ``images/{training,validation}/*.jpg`` + ``annotations/.../*.png``.

    150 classes; file label 0 ("other") becomes ignore and class k becomes k - 1 (reduce_zero_label).
    There is no public test annotation, so ``test`` reads the validation set.
    """

    classes = ADE20K_CLASSES
    palette = ADE20K_PALETTE
    reduce_zero_label = True

    def __init__(self, root: str | Path, split: str = "train", pipeline: Pipeline | None = None,
                 aug_seed: int = 0) -> None:
        _check_split(split)
        root = Path(root)
        sub = "training" if split == "train" else "validation"
        images = list_images(root / "images" / sub)
        super().__init__(images, pair_masks(images, root / "annotations" / sub), pipeline, aug_seed)


def suim_split(folder: Path, images: list[Path], split_seed: int, val_fraction: float) -> dict[str, list[str]]:
    """The seeded train/val split of ``train_val``, read from ``split_seed{seed}.json`` or made and saved.

    Made by a seeded permutation of the sorted file names, so the same seed gives the same split even
    when the file cannot be written (read-only data).
    """
    path = folder / f"split_seed{split_seed}.json"
    if path.is_file():
        try:
            split = json.loads(path.read_text())
            names = {"train": list(split["train"]), "val": list(split["val"])}
            stored_fraction = float(split.get("val_fraction", val_fraction))
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{path}: unreadable split file, expected JSON with 'train' and 'val' lists "
                               f"({e})") from None
        if abs(stored_fraction - val_fraction) > 1e-9:
            raise DatasetError(f"{path}: made with val_fraction={stored_fraction}, not {val_fraction}; "
                               "delete it or use another split_seed")
        return names
    if not 0.0 < val_fraction < 1.0 or len(images) < 2:
        raise DatasetError(f"{folder}: cannot split {len(images)} images with val_fraction={val_fraction}, "
                           "expected >= 2 images and 0 < val_fraction < 1")
    files = sorted(p.name for p in images)
    order = np.random.default_rng(split_seed).permutation(len(files))
    n_val = min(max(1, round(len(files) * val_fraction)), len(files) - 1)
    names = {"train": sorted(files[i] for i in order[n_val:]), "val": sorted(files[i] for i in order[:n_val])}
    try:
        write_json_atomic(path, {"seed": split_seed, "val_fraction": val_fraction, **names}, indent=1)
    except OSError as e:
        warnings.warn(f"{path}: could not save the SUIM split ({e}); using the same split from the seed",
                      stacklevel=2)
    return names


class SUIM(FilePairDataset):
    """SUIM: ``train_val/{images,masks_label}`` split by seed into train/val; ``test/`` or ``TEST/``.

    The 8 official classes (BW waterbody 0 ... SR sea-floor 7). Label PNGs come from
    ``tools/suim_mask_convert.py``.
    """

    classes = SUIM_CLASSES
    palette = SUIM_PALETTE

    def __init__(self, root: str | Path, split: str = "train", pipeline: Pipeline | None = None,
                 aug_seed: int = 0, split_seed: int = 0, val_fraction: float = 0.1) -> None:
        _check_split(split)
        root = Path(root)
        if split == "test":
            folder = next((root / d for d in ("test", "TEST") if (root / d).is_dir()), root / "test")
            images = list_images(folder / "images")
        else:
            folder = root / "train_val"
            all_images = list_images(folder / "images")
            names = suim_split(folder, all_images, split_seed, val_fraction)[split]
            images = [folder / "images" / n for n in names]
            for p in images:
                if not p.is_file():
                    raise DatasetError(f"{folder / f'split_seed{split_seed}.json'}: names {p.name}, "
                                       f"expected it in {p.parent}")
            if not images:
                raise DatasetError(f"{folder / f'split_seed{split_seed}.json'}: empty {split} list")
        if not (folder / "masks_label").is_dir() and (folder / "masks").is_dir():
            raise DatasetError(f"{folder / 'masks_label'}: not found, expected label PNGs; "
                               f"run `python tools/suim_mask_convert.py {root}` first")
        super().__init__(images, pair_masks(images, folder / "masks_label"), pipeline, aug_seed)


class RumexWeeds(FilePairDataset):
    """RumexWeeds as written by ``tools/rumexweeds_prepare.py``: ``processed/{split}/{images,masks}``.

    ``root`` may be the dataset folder (holding ``processed/``) or ``processed/`` itself.
    """

    classes = RUMEXWEEDS_CLASSES
    palette = RUMEXWEEDS_PALETTE

    def __init__(self, root: str | Path, split: str = "train", pipeline: Pipeline | None = None,
                 aug_seed: int = 0) -> None:
        _check_split(split)
        root = Path(root)
        base = root / "processed" if (root / "processed").is_dir() or not (root / split).is_dir() else root
        if not (base / split).is_dir() and (root / "dataset_splits").is_dir():
            raise DatasetError(f"{base / split}: not found; run `python tools/rumexweeds_prepare.py {root}` first")
        images = list_images(base / split / "images")
        super().__init__(images, pair_masks(images, base / split / "masks"), pipeline, aug_seed)
