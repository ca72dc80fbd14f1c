"""Label your own images: find the image files, predict each, write label PNGs and overlays.

The logic behind ``clustvit predict`` (clustvit/cli/predict.py holds its arguments and exit codes;
``python -m clustvit.inference.predict ARGS`` is the same command). For every input image ``name.jpg``
:func:`predict_files` writes ``DIR/name.png``: the class index of every pixel (8-bit grey, at the
input's resolution, upright as viewers show it: an EXIF orientation is applied); with an overlay also
``DIR/name_overlay.png``: the palette colours blended over the image. A file that cannot be read is
reported in one line and skipped; outputs are written atomically, so ``skip_existing`` resumes a folder
that an earlier run left half done.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clustvit.cli import main as cli_main
from clustvit.data.base import read_image
from clustvit.deploy.runtime import ExportedPredictor
from clustvit.inference.predictor import Predictor
from clustvit.viz.draw import overlay, save_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Outcome:
    """What `predict_files` did: label PNGs written, inputs skipped (outputs there), inputs failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, one-line reason)


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
    """Decode an image file to (H, W, 3) uint8 RGB, EXIF orientation applied; one-line ValueError naming it.

    The same decoder as the datasets' (``clustvit.data.base.read_image``), so that a model sees a photo
    here exactly as it saw its training images.
    """
    return read_image(path)


def output_stems(files: Sequence[Path]) -> list[str]:
    """The output name of each input: its stem, or ``stem_suffix`` for a second input with that stem
    (a.jpg, a.png would overwrite each other). Depends only on the list, so a rerun finds the same names."""
    stems, seen = [], set()
    for path in files:
        stem = path.stem if path.stem not in seen else f"{path.stem}_{path.suffix.lstrip('.')}"
        seen.add(stem)
        stems.append(stem)
    return stems


def predict_files(predictor: Predictor | ExportedPredictor, files: Sequence[Path], out_dir: Path,
                  with_overlay: bool = False, skip_existing: bool = False) -> Outcome:
    """Predict every file and write its label PNG (and overlay), going on past unreadable inputs.

    Each failed input is printed as one ``error:`` line on stderr as it happens and listed in the result.

    Raises:
        ValueError: the model has more classes than an 8-bit PNG holds.
        clustvit.atomic.WriteError: an output cannot be written (every later one would fail the same way).
    """
    if len(predictor.classes) > 256:
        raise ValueError(f"{len(predictor.classes)} classes do not fit an 8-bit label PNG")
    outcome = Outcome()
    bar = tqdm(list(zip(files, output_stems(files))), desc="predict", unit="img", file=sys.stderr)
    for path, stem in bar:
        label, over = out_dir / f"{stem}.png", out_dir / f"{stem}_overlay.png"
        if skip_existing and label.is_file() and (over.is_file() or not with_overlay):
            outcome.skipped.append(path)
            continue
        try:
            rgb = read_rgb(path)
        except ValueError as e:
            outcome.failed.append((path, str(e)))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        mask = predictor.predict(rgb)  # (H, W) int64
        # The overlay first: the label PNG is what --skip-existing looks for, so it must come last.
        if with_overlay:
            save_png(over, overlay(rgb, mask, predictor.palette))
        outcome.written.append(save_png(label, mask.astype(np.uint8)))
    return outcome


if __name__ == "__main__":  # the older spelling of `clustvit predict`, which the README still shows
    sys.exit(cli_main(["predict", *sys.argv[1:]]))
