"""Pictures from label maps: palette colouring, overlays, token painting and titled panels (numpy in, numpy out).

Everything here works on ``(H, W, 3)`` uint8 RGB arrays, so callers (predict, test --show-dir, the
analysis tools) only decide *what* to show; ``save_png`` writes the result atomically.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clustvit.atomic import atomic_path

IGNORE_COLOUR = (0, 0, 0)  # pixels labelled 255 (ignore) or outside the palette
TITLE_HEIGHT = 18  # pixels of the title strip above each pane


def distinct_colours(n: int, saturation: float = 0.85, value: float = 0.95) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hue steps), deterministic."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.07 + i * 0.618034) % 1.0, saturation, value)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]], ignore: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Label map -> RGB through ``palette``.

    Args:
        mask: (H, W) integer labels; values outside the palette (e.g. 255 = ignore) get ``ignore``.
        palette: one (r, g, b) per class.

    Returns:
        (H, W, 3) uint8.
    """
    table = np.tile(np.asarray(ignore, dtype=np.uint8), (256 if len(palette) <= 256 else len(palette) + 1, 1))
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    mask = np.asarray(mask)
    if mask.min(initial=0) < 0 or mask.max(initial=0) >= len(table):
        mask = np.where((mask >= 0) & (mask < len(palette)), mask, len(table) - 1)
    return table[mask.astype(np.int64)]


def overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured mask over the image: ``(1 - alpha) * image + alpha * colour``.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) labels of the same size.

    Returns:
        (H, W, 3) uint8.
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"overlay: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, palette).astype(np.float32)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def paint_tokens(
    image: np.ndarray, ids: np.ndarray, colours: Sequence[Sequence[int]], patch: int, alpha: float = 0.6
) -> np.ndarray:
    """Paint every merged token's patch in its cluster colour; kept tokens (id 0) stay untouched.

    Args:
        image: (H, W, 3) uint8, H and W at least ``h * patch`` and ``w * patch``.
        ids: (h, w) cluster id per token: 0 = keep, j >= 1 = merged into cluster j.
        colours: colour of cluster j at index j - 1.
        alpha: opacity of the cluster colour (the image shows through, so the scene stays readable).

    Returns:
        (H, W, 3) uint8: ``(1 - alpha) * image + alpha * colour`` on merged patches, the image elsewhere.
    """
    h, w = ids.shape
    pix = np.repeat(np.repeat(np.asarray(ids), patch, 0), patch, 1)  # (h*p, w*p)
    full = np.zeros(image.shape[:2], dtype=np.int64)  # the zero-padded border (if any) counts as kept
    full[: min(h * patch, image.shape[0]), : min(w * patch, image.shape[1])] = pix[: image.shape[0], : image.shape[1]]
    table = np.zeros((len(colours) + 1, 3), dtype=np.float32)
    table[1:] = np.asarray(colours, dtype=np.float32).reshape(-1, 3)
    painted = (1 - alpha) * image.astype(np.float32) + alpha * table[full]
    return np.where((full > 0)[..., None], np.clip(painted + 0.5, 0, 255).astype(np.uint8), image)


def blank(height: int, width: int, grey: int = 96) -> np.ndarray:
    """A uniform grey pane (for a column that has nothing to show)."""
    return np.full((height, width, 3), grey, dtype=np.uint8)


def panel(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, title_height: int = TITLE_HEIGHT) -> np.ndarray:
    """Side-by-side panes with a title strip above each, no gaps: width = sum of the pane widths.

    Args:
        images: (H, W_i, 3) uint8 panes of one height (grey (H, W) arrays are accepted too).
        titles: one caption per pane; ``None`` draws no strip.

    Returns:
        (title_height + H, sum W_i, 3) uint8 (no strip: (H, sum W_i, 3)).
    """
    panes = [np.repeat(im[..., None], 3, 2) if im.ndim == 2 else im for im in images]
    if not panes or any(p.shape[0] != panes[0].shape[0] for p in panes):
        raise ValueError(f"panel: expected panes of one height, got {[p.shape for p in panes]}")
    row = np.concatenate([p.astype(np.uint8) for p in panes], axis=1)  # (H, sum W, 3)
    if titles is None:
        return row
    if len(titles) != len(panes):
        raise ValueError(f"panel: {len(panes)} panes but {len(titles)} titles")
    strip = Image.new("RGB", (row.shape[1], title_height), (255, 255, 255))
    draw, font, x = ImageDraw.Draw(strip), ImageFont.load_default(), 0
    for pane, title in zip(panes, titles):
        draw.text((x + 3, 2), title, fill=(0, 0, 0), font=font)
        x += pane.shape[1]
    return np.concatenate([np.asarray(strip), row], axis=0)


def grid(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Stack panels vertically, padding narrower ones on the right with white."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) RGB or (H, W) label uint8 array as PNG, atomically (temp file + os.replace)."""
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)
    with atomic_path(path, mode=0o666 & ~umask) as tmp:  # the usual permissions of a new file
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", compress_level=6)
    return path
