"""A synthetic segmentation dataset generated on the fly: no files, deterministic per (seed, split, index).

Scenes look like the robotic datasets ClustViT targets: 2-4 large, smooth background regions (sky,
grass, water, ...) separated by wavy horizons, with subtle texture and noise, plus 1-5 small textured
objects (ellipses and star-shaped polygons). Every class has its own colour and texture, so a tiny ViT
learns it in minutes on a CPU, and most tokens are homogeneous background, which is what clustering
is meant to merge.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from clustvit.data.base import Pipeline, SegDataset

_NAMES = ("sky", "grass", "water", "rock", "weed", "robot")
_COLOURS = ((135, 185, 235), (70, 140, 50), (30, 80, 140), (130, 115, 100), (225, 190, 40), (215, 50, 190))
_TEXTURES = ("gradient", "noise", "ripple", "blotch", "stripes", "checker")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def class_table(num_classes: int) -> tuple[tuple[str, ...], list[tuple[int, int, int]], int]:
    """Names, base colours and the number of background classes (the rest are object classes)."""
    names = [_NAMES[c] if num_classes <= len(_NAMES) else f"class{c}" for c in range(num_classes)]
    colours = list(_COLOURS[:num_classes])
    for c in range(len(colours), num_classes):  # extra classes: evenly spaced hues
        r, g, b = colorsys.hsv_to_rgb((c * 0.618) % 1.0, 0.8, 0.85)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(names), colours, max(1, num_classes // 2)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // cell), max(2, w // cell)), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _texture(kind: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int) -> np.ndarray:
    """A ``(H, W)`` float32 brightness offset for one class (random phase, fixed character)."""
    s = min(h, w) / 256.0  # texture periods scale with the image
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "gradient":
        return np.broadcast_to((yy / h - 0.5) * -30.0, (h, w))
    if kind == "noise":
        return _smooth_noise(rng, h, w, max(2, int(4 * s))) * 8.0
    if kind == "ripple":
        return 12.0 * np.sin(yy * (2 * np.pi / (10 * s)) + 2.0 * np.sin(xx * (2 * np.pi / (60 * s)) + phase))
    if kind == "blotch":
        return _smooth_noise(rng, h, w, max(2, int(16 * s))) * 20.0
    if kind == "stripes":
        theta, k = rng.uniform(0, np.pi), 2 * np.pi / (8 * s)
        arg = xx * float(np.cos(theta) * k) + yy * float(np.sin(theta) * k) + phase  # (H, W) float32
        return np.where(np.sin(arg) > 0, np.float32(35.0), np.float32(-35.0))
    cell = max(1, int(6 * s))  # checker
    parity = (np.arange(h)[:, None] // cell + np.arange(w)[None, :] // cell) & 1  # (H, W)
    return np.where(parity == 1, np.float32(35.0), np.float32(-35.0))


def render_scene(rng: np.random.Generator, size: tuple[int, int],
                 num_classes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene.

    Returns:
        image ``(H, W, 3)`` uint8 RGB and mask ``(H, W)`` uint8 with labels ``0..num_classes-1``.
    """
    h, w = size
    _, colours, n_bg = class_table(num_classes)
    yy = np.arange(h, dtype=np.float32)[:, None]  # (H, 1)
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, W)

    # Background: bands between wavy horizons, top to bottom; neighbouring bands differ in class.
    n_bands = int(rng.integers(2, 5))
    band = np.zeros((h, w), dtype=np.uint8)
    for y0 in np.sort(rng.uniform(0.15, 0.85, n_bands - 1)) * h:
        amp, freq, ph = rng.uniform(0, 0.06 * h), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        band += yy > y0 + amp * np.sin(xx * (2 * np.pi * freq / w) + ph)  # (H, W)
    band_cls = [int(rng.integers(n_bg))]
    for _ in range(n_bands - 1):
        choices = [c for c in range(n_bg) if c != band_cls[-1]] or [band_cls[-1]]
        band_cls.append(int(rng.choice(choices)))
    mask = np.asarray(band_cls, dtype=np.uint8)[band]

    # Objects on top, drawn in order (later ones occlude earlier ones).
    if num_classes > n_bg:
        r_min, r_max = 0.07 * min(h, w), 0.22 * min(h, w)
        for _ in range(int(rng.integers(1, 6))):
            c = int(rng.integers(n_bg, num_classes))
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(r_min, r_max)
            if rng.random() < 0.5:
                axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.4, 1.0))))
                cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, c, -1)
            else:
                n = int(rng.integers(5, 10))
                ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                rad = r * rng.uniform(0.5, 1.0, n)
                pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
                cv2.fillPoly(mask, [pts], c)

    # Appearance: per-image jittered class colour + class texture + luminance noise, per channel
    # (fancy-indexing a (C, 3) table per channel is ~3x faster than one (H, W, 3) gather).
    lut = np.asarray(colours, dtype=np.float32) + rng.uniform(-12, 12, (num_classes, 3)).astype(np.float32)
    offset = rng.integers(-6, 7, (h, w), dtype=np.int8).astype(np.float32)  # (H, W)
    for c in np.flatnonzero(np.bincount(mask.ravel(), minlength=num_classes)):
        offset += np.where(mask == c, _texture(_TEXTURES[c % len(_TEXTURES)], rng, yy, xx, h, w), 0.0)
    image = cv2.merge([np.clip(lut[:, ch][mask] + offset, 0, 255).astype(np.uint8) for ch in range(3)])
    return image, mask  # (H, W, 3), (H, W)

class Synthetic(SegDataset):
    """Generated scenes; sample ``i`` of a split is a pure function of ``(seed, split, i)``.

    ``num_images`` sizes the train split and ``num_eval_images`` the val and test splits (which differ
    from each other and from train).
    """

    def __init__(self, split: str = "train", root: str | None = None, pipeline: Pipeline | None = None,
                 aug_seed: int = 0, num_images: int = 512, num_eval_images: int = 32,
                 image_size: int | tuple[int, int] = 256, num_classes: int = 6, seed: int = 0) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split {split!r} unknown, expected one of {tuple(_SPLIT_IDS)}")
        if num_classes < 2:
            raise ValueError(f"Synthetic num_classes={num_classes}, expected >= 2")
        super().__init__(pipeline, aug_seed)
        self.split, self.seed, self.root = split, seed, root  # root unused: nothing on disk
        self.length = num_images if split == "train" else num_eval_images
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.classes, self.palette, _ = class_table(num_classes)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        seq = np.random.SeedSequence([self.seed, _SPLIT_IDS[self.split], index])
        image, mask = render_scene(np.random.Generator(np.random.PCG64(seq)), self.size, self.num_classes)
        return image, mask, f"synthetic/{self.split}/{index:06d}"
