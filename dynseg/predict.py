"""Run a model on your own images: label PNGs (and coloured overlays) for every image, with a progress bar.

    python -m dynseg.predict CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR [--overlay] [--amp]

CHECKPOINT ``none`` keeps random weights (to try the command without one). For every input image
``name.jpg`` it writes ``DIR/name.png``: the class index of every pixel (8-bit grey, at the input's
resolution); with ``--overlay`` also ``DIR/name_overlay.png``: the palette colours blended over the image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .api import load
from .predictor import Predictor
from .runtime import tune_malloc
from .visualize import overlay, save_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{item}: no image files ({'/'.join(IMAGE_SUFFIXES)}) in this folder")
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image file or folder")
    return out


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB; one-line error naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot decode image ({e})") from None


def predict_files(predictor: Predictor, files: Sequence[Path], out_dir: Path, with_overlay: bool = False) -> list[Path]:
    """Predict every file and write its label PNG (and overlay). Returns the label PNG paths."""
    if predictor.model.num_classes > 256:
        raise ValueError(f"{predictor.model.num_classes} classes do not fit an 8-bit label PNG")
    written, stems = [], set()
    for path in tqdm(files, desc="predict", unit="img", file=sys.stderr):
        # Two inputs with one stem (a.jpg, a.png) would overwrite each other: keep the suffix then.
        stem = path.stem if path.stem not in stems else f"{path.stem}_{path.suffix.lstrip('.')}"
        stems.add(stem)
        rgb = read_rgb(path)
        mask = predictor.predict(rgb)  # (H, W) int64
        written.append(save_png(out_dir / f"{stem}.png", mask.astype(np.uint8)))
        if with_overlay:
            save_png(out_dir / f"{stem}_overlay.png", overlay(rgb, mask, predictor.palette))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynseg.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint (ours or official), or 'none' for random weights")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png (colours over the image)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    tune_malloc()  # reuse freed activations instead of page-faulting fresh memory (dynseg/runtime.py)
    try:
        files = collect_images(args.inputs)
        predictor = load(args.config, args.checkpoint, args.device, args.amp, args.cfg_options)
        written = predict_files(predictor, files, Path(args.out), args.overlay)
    except (ValueError, FileNotFoundError) as e:  # config, checkpoint and image errors are one line each
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} label PNG(s){' and overlays' if args.overlay else ''} to {args.out}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
