"""Run a model on your own images: label PNGs (and coloured overlays) for every image, with a progress bar.

    python -m clustvit.inference.predict CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR [--overlay] [--amp] [--skip-existing]
    python -m clustvit.inference.predict MODEL.onnx IMAGE_OR_DIR... --out DIR [--backend openvino|onnxruntime] [--amp]

CHECKPOINT ``none`` keeps random weights (to try the command without one). An exported graph
(``tools/export_onnx.py``) runs on a CPU runtime instead of PyTorch (``clustvit.deploy.runtime``; ``--amp``:
OpenVINO's bfloat16), at the fixed size it was exported at. For every input image
``name.jpg`` it writes ``DIR/name.png``: the class index of every pixel (8-bit grey, at the input's
resolution, upright as viewers show it: an EXIF orientation is applied); with ``--overlay`` also
``DIR/name_overlay.png``: the palette colours blended over the image.

A file that cannot be read is reported in one line and skipped; the others are still written, and the
summary counts both. Outputs are written atomically, so ``--skip-existing`` resumes a folder that an
earlier run left half done (stopped, killed, a full disk) without redoing the finished images.
Exit status: 0 every image written; 1 some inputs failed; 2 bad arguments, config or checkpoint, or an
output that cannot be written (full disk: free space, then rerun with --skip-existing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clustvit.atomic import WriteError
from clustvit.deploy.runtime import BACKENDS, ExportedPredictor
from clustvit.inference.api import load
from clustvit.inference.predictor import Predictor
from clustvit.inference.runtime import tune_malloc
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
    from clustvit.data.base import read_image

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clustvit.inference.predict", description=__doc__.split("\n\n")[0],
        usage="%(prog)s CONFIG CHECKPOINT IMAGE_OR_DIR... --out DIR [options]\n"
              "       %(prog)s MODEL.onnx IMAGE_OR_DIR... --out DIR [options]")
    parser.add_argument("config", help="config file, zoo name or hub folder; or an exported MODEL.onnx")
    parser.add_argument("inputs", nargs="+", metavar="ARG",
                        help="checkpoint (ours or official, or 'none' for random weights; not for MODEL.onnx), "
                             "then image files and/or folders of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png (colours over the image)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave inputs whose outputs are already in --out (resume a half-done folder)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on CUDA)")
    parser.add_argument("--no-accel", action="store_true", help="the plain model, without clustvit.accel's kernels")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--backend", choices=BACKENDS, help="runtime for MODEL.onnx (default: openvino if installed)")
    args = parser.parse_args(argv)
    exported = args.config.endswith(".onnx")
    if not exported and len(args.inputs) < 2:
        parser.error("expected CONFIG CHECKPOINT IMAGE_OR_DIR... (a checkpoint or 'none', then images)")
    if exported and args.cfg_options:
        parser.error("--cfg-options: an exported graph has no config to override")
    checkpoint, inputs = (None, args.inputs) if exported else (args.inputs[0], args.inputs[1:])
    tune_malloc()  # reuse freed activations instead of page-faulting fresh memory (clustvit/runtime.py)
    try:
        files = collect_images(inputs)
        if exported:
            predictor = ExportedPredictor(args.config, args.backend, bf16=args.amp)
        else:
            predictor = load(args.config, checkpoint, args.device, args.amp, args.cfg_options, accel=not args.no_accel)
        done = predict_files(predictor, files, Path(args.out), args.overlay, args.skip_existing)
    except WriteError as e:
        print(f"error: {e}; free space or choose another --out, then rerun with --skip-existing", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:  # config, checkpoint and image errors are one line each
        print(f"error: {e}", file=sys.stderr)
        return 2
    runtime = f" ({predictor.backend}{', bf16' if predictor.bf16 else ''})" if exported else ""
    parts = [f"wrote {len(done.written)} label PNG(s){' and overlays' if args.overlay else ''} to {args.out}{runtime}"]
    if done.skipped:
        parts.append(f"{len(done.skipped)} skipped (already there)")
    if done.failed:
        parts.append(f"{len(done.failed)} failed (listed above)")
    print("; ".join(parts))
    return 1 if done.failed else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
