"""Shared dataset machinery: file reading with one-line errors, label checks, seeding, tensor output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from clustvit.data.transforms import IGNORE_INDEX, sample_rng

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ORIENTATION_TAG = 0x0112  # EXIF "Orientation"

# pipeline(image (H, W, 3) uint8, mask (H, W) uint8, rng) -> (image, mask)
Pipeline = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class DatasetError(ValueError):
    """Bad dataset files; the message is one line naming the file and what was expected."""

    def __init__(self, message: str) -> None:
        # A DataLoader worker's error comes back as DatasetError("Caught DatasetError in DataLoader worker
        # ...\nOriginal Traceback ...\n<module>.DatasetError: <one line>"): keep only the one line.
        if "\nOriginal Traceback" in message:
            message = message.rstrip().splitlines()[-1].split("DatasetError: ", 1)[-1]
        super().__init__(message)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB as viewers show it, or raise DatasetError naming it.

    An EXIF orientation (phone and camera JPEGs) is applied, as the official pipeline's decoder does
    (OpenCV's ``IMREAD_COLOR``): rows and columns come out upright, not in sensor order. Label images
    (`read_label`) are read unchanged, as there: a mask is drawn on the upright image.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # corrupt, truncated, huge
        raise DatasetError(f"{path}: cannot decode image, expected a readable RGB image ({e})") from None


def upright_size(im: Image.Image) -> tuple[int, int]:
    """``(w, h)`` of an opened image as :func:`read_image` returns it, from the header alone.

    EXIF orientations 5-8 turn the picture by 90 degrees, so its upright width is the stored height.
    """
    w, h = im.size
    return (h, w) if im.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8) else (w, h)


def read_label(path: Path) -> np.ndarray:
    """Decode a single-channel label image to ``(H, W)`` uint8, or raise DatasetError naming it."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetError(f"{path}: label image has mode {im.mode}, expected single-channel (L/P)")
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot decode label image ({e})") from None
    if arr.max(initial=0) > 255:
        raise DatasetError(f"{path}: label value {int(arr.max())} does not fit 8 bits, expected 0..255")
    return arr.astype(np.uint8)


def check_labels(mask: np.ndarray, num_classes: int, path: Path) -> None:
    """Every label must be a class id or the ignore label."""
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # faster than np.unique on uint8
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise DatasetError(f"{path}: label value {int(bad[0])} out of range, "
                           f"expected 0..{num_classes - 1} or {IGNORE_INDEX} (ignore)")


def list_images(folder: Path) -> list[Path]:
    """Sorted image files of ``folder``; the folder must exist and hold at least one."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"{folder}: empty image folder, expected {'/'.join(IMAGE_SUFFIXES)} files")
    return files


def pair_masks(images: Sequence[Path], mask_dir: Path, suffix: str = ".png") -> list[Path]:
    """The mask ``mask_dir/{stem}{suffix}`` of each image; every one must exist."""
    if not mask_dir.is_dir():
        raise DatasetError(f"{mask_dir}: mask folder not found")
    masks = [mask_dir / f"{p.stem}{suffix}" for p in images]
    for img, m in zip(images, masks):
        if not m.is_file():
            raise DatasetError(f"{img}: mask missing, expected {m}")
    return masks


class SegDataset(Dataset):
    """Image/mask pairs -> ``{"image": uint8 (3, H, W), "mask": int64 (H, W), "path", "orig_size"}``.

    Augmentation randomness comes from ``sample_rng(aug_seed, epoch, index)``. The training loop either
    calls ``set_epoch(e)`` before each pass (fine with non-persistent workers), or indexes with
    ``dataset[(index, epoch)]`` from its sampler, which works with any worker setup.

    Subclasses set ``classes``, ``palette`` and implement ``__len__`` and ``load``.
    """

    classes: tuple[str, ...] = ()
    palette: list[tuple[int, int, int]] = []
    ignore_index: int = IGNORE_INDEX

    def __init__(self, pipeline: Pipeline | None = None, aug_seed: int = 0) -> None:
        self.pipeline = pipeline
        self.aug_seed = aug_seed
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Return image ``(H, W, 3)`` uint8, mask ``(H, W)`` uint8 (checked), and the image path."""
        raise NotImplementedError

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, epoch = (item if isinstance(item, tuple) else (item, self.epoch))
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        index %= len(self)
        image, mask, path = self.load(index)
        orig_size = tuple(mask.shape)
        if self.pipeline is not None:
            image, mask = self.pipeline(image, mask, sample_rng(self.aug_seed, epoch, index))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),  # (3, H, W)
            "mask": torch.from_numpy(mask.astype(np.int64)),  # (H, W)
            "path": path,
            "orig_size": orig_size,
        }


class FilePairDataset(SegDataset):
    """A dataset over matched (image, label image) files, with the checks every file format needs."""

    reduce_zero_label = False

    def __init__(self, images: list[Path], masks: list[Path], pipeline: Pipeline | None = None,
                 aug_seed: int = 0) -> None:
        super().__init__(pipeline, aug_seed)
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def read_mask(self, path: Path) -> np.ndarray:
        """A label file -> ``(H, W)`` uint8 class ids (``IGNORE_INDEX`` = unlabelled), checked."""
        mask = read_label(path)
        # Checked on the raw file values, so the error names the value that is in the file.
        check_labels(mask, self.num_classes + self.reduce_zero_label, path)
        if self.reduce_zero_label:
            # 0 ("other") -> ignore, class k -> k - 1, ignore stays ignore (uint8 wraps 0 - 1 to 255).
            mask = np.where(mask == IGNORE_INDEX, IGNORE_INDEX, mask - 1).astype(np.uint8)
        return mask

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        img_path, mask_path = self.images[index], self.masks[index]
        image, mask = read_image(img_path), self.read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                               f"{img_path.name} {image.shape[1]}x{image.shape[0]}, expected equal sizes")
        return image, mask, str(img_path)
