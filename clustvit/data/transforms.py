"""Training and test transforms with the official (mmseg) semantics, as pure numpy functions.

Images are ``(H, W, 3)`` uint8 RGB arrays and masks ``(H, W)`` uint8 arrays (255 = ignore) until the
dataset turns them into tensors. Every random choice is drawn from a ``numpy.random.Generator`` that
the caller passes in, so a sample's augmentation depends only on that generator's seed
(see ``sample_rng``), never on global state or on which worker process runs it.

Sizes follow mmseg: ``scale`` is ``(w, h)`` and ``crop_size`` is ``(h, w)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IGNORE_INDEX = 255


def sample_rng(base_seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a pure function of (base seed, epoch, dataset index).

    Resuming at any (epoch, index) therefore reproduces the exact augmentation of an uninterrupted run,
    whatever the number of data-loader workers.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([base_seed, epoch, index])))


def rescale_size(h: int, w: int, scale: tuple[int, int], keep_ratio: bool) -> tuple[int, int]:
    """Output ``(h, w)`` of mmcv's Resize.

    With ``keep_ratio`` the image is rescaled so that it fits in the box: long edge <= max(scale) and
    short edge <= min(scale) (either may bind); otherwise it becomes exactly ``scale = (w, h)``.
    """
    if not keep_ratio:
        return int(scale[1]), int(scale[0])
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def resize(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to ``size = (h, w)``: bilinear for the image, nearest for the mask (labels never blend)."""
    h, w = size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if mask is not None and mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, mask


def random_resize(image: np.ndarray, mask: np.ndarray, scale: tuple[int, int],
                  ratio_range: tuple[float, float] | None, keep_ratio: bool,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """mmseg RandomResize: scale x ratio ~ U(ratio_range), then Resize (``ratio_range=None``: fixed scale)."""
    if ratio_range is not None:
        ratio = rng.random() * (ratio_range[1] - ratio_range[0]) + ratio_range[0]
        scale = (int(scale[0] * ratio), int(scale[1] * ratio))
    size = rescale_size(image.shape[0], image.shape[1], scale, keep_ratio)
    return resize(image, mask, size)


def _crop_box(h: int, w: int, crop_size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    # When the image is smaller than the crop the margin is 0 and the "crop" is the whole image.
    off_y = int(rng.integers(0, max(h - crop_size[0], 0) + 1))
    off_x = int(rng.integers(0, max(w - crop_size[1], 0) + 1))
    return off_y, off_y + crop_size[0], off_x, off_x + crop_size[1]


def random_crop(image: np.ndarray, mask: np.ndarray, crop_size: tuple[int, int], cat_max_ratio: float,
                rng: np.random.Generator, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """mmseg RandomCrop with ``cat_max_ratio``.

    Up to 10 crops are drawn until the crop holds at least two classes and none of them covers
    ``cat_max_ratio`` or more of its non-ignored pixels; after 10 failures one more box is drawn and
    used unchecked (as mmseg does).
    """
    h, w = mask.shape
    y1, y2, x1, x2 = _crop_box(h, w, crop_size, rng)
    if cat_max_ratio < 1.0:
        for _ in range(10):
            counts = np.bincount(mask[y1:y2, x1:x2].ravel(), minlength=256)
            counts[ignore_index] = 0
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y1, y2, x1, x2 = _crop_box(h, w, crop_size, rng)
    return image[y1:y2, x1:x2], mask[y1:y2, x1:x2]


def random_flip(image: np.ndarray, mask: np.ndarray, prob: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of image and mask together with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], mask[:, ::-1]
    return image, mask


def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range: tuple[float, float] = (0.5, 1.5),
                           saturation_range: tuple[float, float] = (0.5, 1.5),
                           hue_delta: int = 18) -> np.ndarray:
    """mmseg PhotoMetricDistortion on an ``(H, W, 3)`` uint8 RGB image.

    Brightness, then contrast either first or last (coin flip), saturation and hue in HSV between;
    each of the four is applied with probability 0.5. OpenCV's uint8 HSV has hue in [0, 180).
    """
    img = image
    if rng.integers(2):
        img = _convert(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = bool(rng.integers(2))

    def contrast(x: np.ndarray) -> np.ndarray:
        return _convert(x, alpha=rng.uniform(*contrast_range)) if rng.integers(2) else x

    if contrast_first:
        img = contrast(img)
    if rng.integers(2):
        hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(*saturation_range))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV)
        shift = int(rng.integers(-hue_delta, hue_delta + 1))
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first:
        img = contrast(img)
    return img


def pad_to(image: np.ndarray, mask: np.ndarray, size: tuple[int, int],
           ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to ``size = (h, w)``: image with 0, mask with the ignore label."""
    h, w = mask.shape
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return image, mask
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=ignore_index)
    return image, mask


@dataclass(frozen=True)
class TrainPipeline:
    """RandomResize -> RandomCrop(cat_max_ratio) -> RandomFlip -> PhotoMetricDistortion -> pad to crop.

    Output: image ``(crop_h, crop_w, 3)`` and mask ``(crop_h, crop_w)``.
    SUIM/RumexWeeds configs use ``scale=(512, 512), ratio_range=None, keep_ratio=False``.
    """

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] | None = (0.5, 2.0)
    keep_ratio: bool = True
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    resizes_mask: bool = True  # the mask follows the image (it is cropped and padded with it)

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, mask = random_resize(image, mask, self.scale, self.ratio_range, self.keep_ratio, rng)
        image, mask = random_crop(image, mask, self.crop_size, self.cat_max_ratio, rng)
        image, mask = random_flip(image, mask, self.flip_prob, rng)
        if self.photometric:
            image = photometric_distortion(image, rng)
        return pad_to(image, mask, self.crop_size)


@dataclass(frozen=True)
class TestPipeline:
    """Resize the image only; the mask keeps its original resolution (mmseg evaluates there)."""

    __test__ = False  # not a pytest test class, despite the name

    scale: tuple[int, int] = (2048, 512)
    keep_ratio: bool = True
    resizes_mask: bool = False

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        size = rescale_size(image.shape[0], image.shape[1], self.scale, self.keep_ratio)
        image, _ = resize(image, None, size)
        return image, mask
